"""What every domain's GraphQL module shares: the request context, userErrors, scope checks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import anyio.to_thread
import strawberry
from graphql import FieldNode, GraphQLError
from sqlmodel import Session
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext
from strawberry.scalars import JSON
from strawberry.types import Info

from service.db import enter_tenant, get_engine
from service.errors import ClaimcheckError, RateLimitedError
from service.principal import Principal

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
F = TypeVar("F", bound=Callable[..., Any])

Batch = Callable[[Session, str, list[K]], Sequence[V]]
"""(session, tenant id, keys) -> one value per key, in the keys' order: what a dataloader loads."""


SNAPSHOT_STREAM = "claimcheck.snapshot_stream"
"""Subscription field metadata: each result is the whole current state, so a subscriber joining a
running group of identical subscriptions starts from the group's latest result
(service.shared_subscriptions). A field without it streams events: a late subscriber gets only those
that follow."""


@dataclass
class Connection:
    """What the operations of one connection share: the caller, and the subscriptions open on it.

    An HTTP request carries one operation; a graphql-transport-ws socket carries many, at once."""

    principal: Principal | None = None
    subscriptions: int = 0


@dataclass
class Context(BaseContext):
    """One operation's: its connection, a lazily opened session it commits once, and its loaders.

    The router makes one per connection; service.schema.UnitOfWork gives each operation its own
    (for_operation), so operations pipelined on one socket never share a session or a transaction.
    """

    connection: Connection = field(default_factory=Connection)
    connection_params: dict[str, Any] | None = None
    """The WebSocket connection_init payload (graphql-transport-ws)."""
    _session: Session | None = field(default=None, repr=False)
    db_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    """Resolvers using the session take turns (service.schema.UnitOfWork)."""
    _loaders: dict[Batch[Any, Any], DataLoader[Any, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        super().__init__()

    @property
    def principal(self) -> Principal | None:
        return self.connection.principal

    def for_operation(self) -> Context:
        """A context for one operation on this connection: same caller and transport, own session."""
        context = Context(connection=self.connection, connection_params=self.connection_params)
        context.request, context.response = self.request, self.response
        context.background_tasks = self.background_tasks
        return context

    @property
    def session(self) -> Session:
        """Once the caller is known, the session's transaction sees only its tenant's rows (RLS)."""
        if self._session is None:
            self._session = Session(get_engine(), expire_on_commit=False)
            if self.principal is not None:
                enter_tenant(self._session, self.principal.tenant_id)
        return self._session

    def loader(self, batch: Batch[K, V]) -> DataLoader[K, V]:
        """This operation's loader for batch: the keys its resolvers ask for while the event loop is
        busy with them are loaded by one call, in a thread, on the operation's session."""
        found = self._loaders.get(batch)
        if found is None:

            async def load(keys: list[K]) -> list[V]:
                principal = self.principal
                assert principal is not None, "loaders serve authenticated operations"
                async with self.db_lock:
                    return await anyio.to_thread.run_sync(
                        lambda: list(batch(self.session, principal.tenant_id, keys))
                    )

            # no cache: a mutation later in the operation may change what an earlier field read
            found = self._loaders[batch] = DataLoader(load_fn=load, cache=False)
        return found

    @property
    def has_session(self) -> bool:
        """Whether the operation opened its session (and finish has something to do)."""
        return self._session is not None

    def finish(self, *, commit: bool) -> None:
        """Commit (or roll back) and close the operation's session, if one was opened."""
        if self._session is None:
            return
        try:
            if commit:
                self._session.commit()
            else:
                self._session.rollback()
        finally:
            self._session.close()
            self._session = None


GraphQLInfo = Info[Context, None]


def require(info: GraphQLInfo, scope: str | None) -> Principal:
    """The caller, provided its key has scope (else a FORBIDDEN error); None: any valid key."""
    principal = info.context.principal
    if principal is None:
        raise GraphQLError("authentication required", extensions={"code": "UNAUTHENTICATED"})
    if scope is not None and scope not in principal.scopes:
        raise GraphQLError(f"this API key lacks the {scope} scope", extensions={"code": "FORBIDDEN"})
    return principal


@strawberry.type
class UserError:
    """An error the caller can act on; ``code`` is stable."""

    code: str
    field: list[str] | None
    message: str

    extensions: JSON | None = strawberry.field(
        default=None, description='Details by code, e.g. {"retryAfter": 12} for RATE_LIMITED.'
    )

    @classmethod
    def from_error(cls, error: ClaimcheckError) -> UserError:
        return cls(
            code=error.code,
            field=error.field,
            message=error.message,
            extensions=cast(JSON, error_extensions(error)) or None,
        )


@strawberry.type
class DeletePayload:
    id: strawberry.ID | None
    user_errors: list[UserError]


_ON_EVENT_LOOP = "__claimcheck_on_event_loop__"


def on_event_loop(resolver: F) -> F:
    """Run this sync resolver on the event loop, in a greenlet (service.loop_io), not in a worker thread:
    some 90 fewer context switches per request. Only for a resolver whose every wait is Postgres through
    the request's session or Redis through service.redis.get_redis(): any other blocking call (a file, a
    socket, a thread's lock) would stop every request of the process while it waits."""
    setattr(resolver, _ON_EVENT_LOOP, True)
    return resolver


def runs_on_event_loop(resolver: object) -> bool:
    """Whether the resolver was marked on_event_loop."""
    return getattr(resolver, _ON_EVENT_LOOP, False) is True


def run_mutation(info: GraphQLInfo, action: Callable[[], T], on_error: Callable[[list[UserError]], T]) -> T:
    """Run a mutation's action; a ClaimcheckError rolls back its writes and becomes userErrors.

    As an operation's only field (the usual case) the mutation commits here, in its resolver's
    thread, and its payload's fields read a new session. Beside other fields, its writes are a
    savepoint, and the operation commits once at its end (service.schema.UnitOfWork)."""
    context = info.context
    if _only_root_field(info):
        try:
            result = action()
        except ClaimcheckError as error:
            context.finish(commit=False)
            _advise_retry(info, error)
            return on_error([UserError.from_error(error)])
        context.finish(commit=True)
        return result
    savepoint = context.session.begin_nested()
    try:
        result = action()
    except ClaimcheckError as error:
        savepoint.rollback()
        _advise_retry(info, error)
        return on_error([UserError.from_error(error)])
    savepoint.commit()
    return result


def _only_root_field(info: GraphQLInfo) -> bool:
    selections = info.operation.selection_set.selections
    return len(selections) == 1 and isinstance(selections[0], FieldNode) and info.path.prev is None


def error_extensions(error: ClaimcheckError) -> dict[str, Any]:
    """What an error adds beyond code, field and message (RATE_LIMITED: retryAfter)."""
    return dict(error.extensions) if isinstance(error, RateLimitedError) else {}


def _advise_retry(info: GraphQLInfo, error: ClaimcheckError) -> None:
    """A Retry-After header on the HTTP response of a rate-limited request."""
    response = info.context.response
    if isinstance(error, RateLimitedError) and response is not None:
        response.headers["Retry-After"] = str(error.retry_after)


def or_graphql_error(action: Callable[[], T]) -> T:
    """The action's result; a ClaimcheckError becomes a GraphQL error with its code (queries, fields)."""
    try:
        return action()
    except ClaimcheckError as error:
        raise graphql_error(error) from error


def graphql_error(error: ClaimcheckError) -> GraphQLError:
    """A ClaimcheckError raised from a field (not a mutation) as a GraphQL error with its code."""
    extensions: dict[str, Any] = {"code": error.code, **error_extensions(error)}
    if error.field:
        extensions["field"] = error.field
    return GraphQLError(error.message, extensions=extensions)
