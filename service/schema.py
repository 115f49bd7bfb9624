"""The tenant GraphQL schema: each domain's queries and mutations merged, hardened, errors masked."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread
import strawberry
from graphql import GraphQLError, GraphQLResolveInfo
from graphql.validation import MaxIntrospectionDepthRule
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from callbacks.graphql import WebhookMutation, WebhookQuery
from service.jobs.graphql import JobMutation, JobQuery, JobSubscription
from service.tenants.graphql import TenantQuery

STRAWBERRY_DEFINITION = "strawberry-definition"
MAX_DEPTH = 10
CACHED_DOCUMENTS = 1000  # clients send the same few documents: parse and validate each once

# Built once: rule classes made per request would never hit the validation cache.
VALIDATION_RULES = [*QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules, MaxIntrospectionDepthRule]

Query = merge_types("Query", (TenantQuery, JobQuery, WebhookQuery))
Mutation = merge_types("Mutation", (JobMutation, WebhookMutation))


class UnitOfWork(SchemaExtension):
    """The request commits once, after the whole operation, unless it raised an error.

    Database work blocks, so it runs in worker threads: every resolver that takes `info` (the way to
    the session) and the final commit. The event loop stays free for other requests.
    """

    async def on_operation(self) -> AsyncIterator[None]:
        yield
        result = self.execution_context.result
        ok = result is not None and not getattr(result, "errors", None)
        await anyio.to_thread.run_sync(functools.partial(self.execution_context.context.finish, commit=ok))

    def resolve(
        self,
        _next: Callable[..., Any],
        root: Any,
        info: GraphQLResolveInfo[Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if not _uses_context(info):
            return _next(root, info, *args, **kwargs)
        return _in_thread(functools.partial(_next, root, info, *args, **kwargs))


def _uses_context(info: GraphQLResolveInfo[Any]) -> bool:
    """Whether this field's resolver takes `info`, i.e. may use the request's session."""
    definition = info.parent_type.fields[info.field_name].extensions.get(STRAWBERRY_DEFINITION)
    resolver = getattr(definition, "base_resolver", None)
    # async resolvers do their own blocking work off the loop
    return resolver is not None and resolver.info_parameter is not None and not resolver.is_async


async def _in_thread(resolver: Callable[[], Any]) -> Any:
    result = await anyio.to_thread.run_sync(resolver)
    return await result if inspect.isawaitable(result) else result


def _should_mask(error: GraphQLError) -> bool:
    """Mask unexpected errors; keep errors we raised on purpose (they carry a code) and syntax errors."""
    original = error.original_error
    if original is None:
        return False
    return not (isinstance(original, GraphQLError) and (original.extensions or {}).get("code"))


class ClaimcheckSchema(strawberry.Schema):
    """Logs only unexpected errors: a caller's mistake (a coded or a syntax error) is not a server fault."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        super().process_errors([error for error in errors if _should_mask(error)], execution_context)


schema = ClaimcheckSchema(
    query=Query,
    mutation=Mutation,
    subscription=JobSubscription,
    extensions=[
        UnitOfWork,
        lambda: ParserCache(maxsize=CACHED_DOCUMENTS),
        lambda: ValidationCache(maxsize=CACHED_DOCUMENTS),
        lambda: AddValidationRules(VALIDATION_RULES),
        lambda: MaskErrors(should_mask_error=_should_mask, error_message="Unexpected error."),
    ],
)
