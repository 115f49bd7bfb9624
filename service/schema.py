"""The tenant GraphQL schema: each domain's queries and mutations merged, hardened, errors masked."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, cast

import anyio.to_thread
import strawberry
from graphql import GraphQLError, GraphQLResolveInfo
from graphql.validation import MaxIntrospectionDepthRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.fields.resolver import StrawberryResolver
from strawberry.types.graphql import OperationType

from service import outages
from service.errors import RateLimitedError
from service.graphql_base import graphql_error, runs_on_event_loop
from service.graphql_cost import CostLimit
from service.graphql_documents import CachedDocuments, DocumentCache
from service.jobs.graphql import JobMutation, JobQuery, JobSubscription
from service.kinds.graphql import KindMutation
from service.loop_io import run_on_loop
from service.settings import get_settings
from service.tenants.graphql import TenantMutation
from service.tenants.service import check_query_rate
from service.viewer import TenantQuery
from service.webhooks.graphql import WebhookMutation, WebhookQuery, WebhookSubscription

log = logging.getLogger(__name__)

STRAWBERRY_DEFINITION = "strawberry-definition"
MAX_DEPTH = 10
MAX_ALIASES = 30  # aliases multiply work: `a1: job(id:..) a2: job(id:..) ...` in one request
MAX_TOKENS = 2000  # the parser stops at this many tokens, before building a huge document
MAX_COST = 5000  # objects an operation may return, and expensive fields by weight (service.graphql_cost)
DOCUMENT_CACHE_BYTES = 32 * 1024 * 1024  # parsed and validated documents kept per process

# Built once: rule classes made per request would never hit the validation cache.
VALIDATION_RULES = [
    *QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
    *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
    MaxIntrospectionDepthRule,
]
NO_INTROSPECTION_RULES = [*VALIDATION_RULES, NoSchemaIntrospectionCustomRule]


def _validation_rules() -> AddValidationRules:
    """The rules for this request: introspection (`__schema`, `__type`) only when GRAPHQL_INTROSPECTION."""
    return AddValidationRules(
        VALIDATION_RULES if get_settings().graphql_introspection else NO_INTROSPECTION_RULES
    )


Query = merge_types("Query", (TenantQuery, JobQuery, WebhookQuery))
Mutation = merge_types("Mutation", (KindMutation, JobMutation, WebhookMutation, TenantMutation))
Subscription = merge_types("Subscription", (JobSubscription, WebhookSubscription))
DOCUMENTS = DocumentCache(max_bytes=DOCUMENT_CACHE_BYTES)  # clients send the same few documents


class UnitOfWork(SchemaExtension):
    """Each operation is one unit of work: its own context and session, even beside others on one
    WebSocket. It commits once, when its execution ends and before its result is sent, unless it
    raised an error; whatever it opens after that (a subscription's stream) ends with the operation.

    Database work blocks, so it runs in worker threads: every resolver that takes `info` (the way to
    the session) and the commit. The event loop stays free for other requests. A resolver marked
    `on_event_loop` (the mutations that start jobs, the API's hot path) runs on the loop instead, in a
    greenlet whose waits for Postgres and Redis are the loop's (service.loop_io): no thread to hand
    Python's lock to and back at each of its round trips.
    """

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context.context.for_operation()
        self.execution_context.context = context  # what execution hands resolvers as info.context
        try:
            yield
        finally:
            await self._finish()

    async def on_execute(self) -> AsyncIterator[None]:
        yield
        await self._finish()  # over a WebSocket the result goes out before on_operation ends

    async def _finish(self) -> None:
        context = self.execution_context.context
        if not context.has_session:
            return  # nothing to commit: no thread needed
        result = self.execution_context.result
        ok = result is not None and not getattr(result, "errors", None)
        await anyio.to_thread.run_sync(functools.partial(context.finish, commit=ok))

    def resolve(
        self,
        _next: Callable[..., Any],
        root: Any,
        info: GraphQLResolveInfo[Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        resolver = _context_resolver(info)
        if resolver is None:
            return _next(root, info, *args, **kwargs)
        run = run_on_loop if runs_on_event_loop(resolver.wrapped_func) else anyio.to_thread.run_sync
        call = functools.partial(_next, root, info, *args, **kwargs)
        return _one_at_a_time(info.context.db_lock, run, call)


class QueryRateLimit(SchemaExtension):
    """A query takes a token from its tenant's query bucket before it runs (a mutation that starts a
    job takes one from the mutation bucket, in the service). Over the rate it is refused with
    RATE_LIMITED and retryAfter; over HTTP the answer is a 429 with Retry-After."""

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        principal = execution.context.principal
        if principal is not None and execution.operation_type is OperationType.QUERY:
            try:
                await anyio.to_thread.run_sync(check_query_rate, principal)
            except RateLimitedError as error:
                response = execution.context.response
                if response is not None:  # HTTP (a WebSocket has no response to mark)
                    response.status_code = 429
                    response.headers["Retry-After"] = str(error.retry_after)
                raise graphql_error(error) from error
        yield


class OutageErrors(SchemaExtension):
    """Errors caused by an outage of Postgres or Redis become UNAVAILABLE errors and the response a 503
    with Retry-After (service.outages). Listed after MaskErrors, so it sees them before masking."""

    async def on_operation(self) -> AsyncIterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if not errors or not any(outages.is_outage(error.original_error) for error in errors):
            return
        assert result is not None
        result.errors = [
            GraphQLError(outages.MESSAGE, path=error.path, extensions={"code": outages.CODE})
            if outages.is_outage(error.original_error)
            else error
            for error in errors
        ]
        response = getattr(self.execution_context.context, "response", None)
        if response is not None:  # HTTP (a WebSocket has no response to mark)
            response.status_code = 503
            response.headers["Retry-After"] = str(outages.RETRY_AFTER_SECONDS)


def _context_resolver(info: GraphQLResolveInfo[Any]) -> StrawberryResolver[Any] | None:
    """This field's resolver when it is sync and takes `info`, i.e. may block on the request's session."""
    field = info.parent_type.fields.get(info.field_name)  # None: __typename and other meta fields
    if field is None:
        return None
    definition = field.extensions.get(STRAWBERRY_DEFINITION)
    resolver = getattr(definition, "base_resolver", None)
    # async resolvers do their own blocking work off the loop
    if resolver is None or resolver.info_parameter is None or resolver.is_async:
        return None
    return cast(StrawberryResolver[Any], resolver)


async def _one_at_a_time(
    lock: asyncio.Lock, run: Callable[[Callable[[], Any]], Awaitable[Any]], resolver: Callable[[], Any]
) -> Any:
    """The resolver run by run (in a worker thread, or on the loop: service.loop_io), after the request's
    other such resolvers: sibling fields (`{ viewer {..} jobs {..} }`) run concurrently, and they share
    the request's session, which allows no concurrent use."""
    async with lock:
        result = await run(resolver)
    return await result if inspect.isawaitable(result) else result


def _should_mask(error: GraphQLError) -> bool:
    """Mask unexpected errors in resolvers; keep errors we raised on purpose (they carry a code) and
    errors about the request itself (syntax, validation, variable values: they have no path)."""
    original = error.original_error
    if original is None or error.path is None:
        return False
    return not (isinstance(original, GraphQLError) and (original.extensions or {}).get("code"))


class ClaimcheckSchema(strawberry.Schema):
    """Logs only unexpected errors: a caller's mistake (a coded or a syntax error) is not a server fault;
    an outage of Postgres or Redis gets one line, not a traceback per request. Subscriptions run only
    as streams (graphql-transport-ws)."""

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """One result: a subscription is refused (over HTTP, 400), not run once as if it were a query,
        which fails inside graphql-core on the resolver's stream."""
        allowed = set(allowed_operation_types or OperationType) - {OperationType.SUBSCRIPTION}
        return await super().execute(
            query, variable_values, context_value, root_value, operation_name, allowed, operation_extensions
        )

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        unexpected = [error for error in errors if _should_mask(error)]
        for error in unexpected:
            if error.original_error is not None and outages.is_outage(error.original_error):
                log.warning("request failed during an outage: %s", outages.describe(error.original_error))
        faults = [error for error in unexpected if not outages.is_outage(error.original_error)]
        super().process_errors(faults, execution_context)


schema = ClaimcheckSchema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    extensions=[
        UnitOfWork,
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),  # before the cache: its options key it
        lambda: CachedDocuments(DOCUMENTS),
        _validation_rules,
        lambda: CostLimit(MAX_COST),
        QueryRateLimit,  # after the cost limit: a refused query takes no token
        lambda: MaskErrors(should_mask_error=_should_mask, error_message="Unexpected error."),
        OutageErrors,  # after MaskErrors: it sees the errors before they are masked
    ],
)
