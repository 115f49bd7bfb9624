"""The tenant GraphQL schema: each domain's queries and mutations merged, hardened, errors masked."""

from __future__ import annotations

from collections.abc import Iterator

import strawberry
from graphql import GraphQLError
from graphql.validation import MaxIntrospectionDepthRule
from strawberry.extensions import AddValidationRules, MaskErrors, QueryDepthLimiter, SchemaExtension
from strawberry.tools import merge_types

from service.jobs.graphql import JobMutation, JobQuery
from service.tenants.graphql import TenantQuery

MAX_DEPTH = 10

Query = merge_types("Query", (TenantQuery, JobQuery))
Mutation = merge_types("Mutation", (JobMutation,))


class UnitOfWork(SchemaExtension):
    """The request commits once, after the whole operation, unless it raised an error."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        ok = result is not None and not getattr(result, "errors", None)
        self.execution_context.context.finish(commit=ok)


def _should_mask(error: GraphQLError) -> bool:
    """Mask unexpected errors; keep errors we raised on purpose (they carry a code) and syntax errors."""
    original = error.original_error
    if original is None:
        return False
    return not (isinstance(original, GraphQLError) and (original.extensions or {}).get("code"))


schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    extensions=[
        UnitOfWork,
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: AddValidationRules([MaxIntrospectionDepthRule]),
        lambda: MaskErrors(should_mask_error=_should_mask, error_message="Unexpected error."),
    ],
)
