"""Subscriptions that share one GraphQL execution and its rendered JSON.

Subscribers asking the same thing with the same rights (the same document, operation name and
variables; the same tenant and scopes) get the same results. So they form a group: the group runs the
subscription once, renders each result to JSON once and hands that one string to every member, which
sends it as the payload of a `next` message under its own operation id. A change costs one execution
and one encoding per group, however many subscribe to it. A member joining a running group gets what
follows; if the field is a snapshot stream (service.graphql_base.SNAPSHOT_STREAM: jobUpdates), the
group's latest result first, which is the current state.

The group sends each result to its members itself: every member's send starts at once, in the
group's own step of the event loop (`start_now`), so a change costs no task, no queue and no future
per subscriber (each used to wait on a queue of its own: a thousand futures alive per change, and
the garbage collector's full passes over them stalled the process for 200-350 ms). A send that has
to wait (that socket's buffer is full) holds back only that member: its next results wait in its
backlog, in order, and a member MAX_BACKLOG results behind is closed (SLOW_CONSUMER).

Each member keeps its own operation task (strawberry's graphql-transport-ws handler), waiting for
the end of its membership, so `complete` from the client, a closed socket and a revoked key
(service.websocket) end only that member; the group's execution ends with its last member. A
document that fails before execution (syntax, validation, an unknown operation) runs alone for each
member, so each gets the protocol's own answer.

Subscription operations are capped here, whatever the field: per connection, and per tenant across
every API process (service.subscription_caps).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from graphql import FieldNode, GraphQLError, OperationType, get_operation_ast, parse
from strawberry.schema import Schema
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.utils.aio import aclosing

from observability.metrics import record_subscription_render
from service.errors import ClaimcheckError, QuotaExceededError
from service.graphql_base import SNAPSHOT_STREAM, Connection, Context, graphql_error
from service.settings import get_settings
from service.subscription_caps import subscription_caps

log = logging.getLogger(__name__)

MAX_BACKLOG = 256
"""Results waiting to go out to one member; a socket further behind is closed (SLOW_CONSUMER)."""
SLOW_CONSUMER = 1013  # RFC 6455 "try again later"
STRAWBERRY_DEFINITION = "strawberry-definition"
MAX_TOKENS = 2000  # as the schema's MaxTokensLimiter: a bigger document is left to it (it refuses it)

GroupKey = tuple[str, frozenset[str], str, str | None, str]
"""Tenant, scopes, document, operation name, variables (canonical JSON)."""
Stream = AsyncGenerator[ExecutionResult | PreExecutionError, None]


class RunAlone(Exception):
    """The group could not share this document: run it for the member on its own."""


class _End:
    """The group has ended: its stream completed (or failed)."""


class _Alone:
    """The document failed before execution: each member runs it alone."""


class _Behind:
    """The member fell MAX_BACKLOG results behind."""


Ending = _End | _Alone | _Behind
Item = str | Ending
END, ALONE, BEHIND = _End(), _Alone(), _Behind()


def render(result: ExecutionResult) -> str:
    """A `next` message's payload as JSON text, as strawberry's handler would send it."""
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [error.formatted for error in result.errors]
    if result.extensions:
        payload["extensions"] = result.extensions
    return json.dumps(payload, separators=(",", ":"))


class _Resume:
    """Awaiting it carries on a coroutine that has already run up to its first wait (`waiting`)."""

    def __init__(self, coroutine: Coroutine[Any, Any, None], waiting: Any) -> None:
        self._coroutine = coroutine
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        waiting = self._waiting
        while True:
            try:
                sent = yield waiting  # to the task: what the coroutine waits for
            except BaseException as error:  # thrown into the task (its cancellation)
                try:
                    waiting = self._coroutine.throw(error)
                except StopIteration:
                    return
                continue
            try:
                waiting = self._coroutine.send(sent)
            except StopIteration:
                return


async def _finish(coroutine: Coroutine[Any, Any, None], waiting: Any) -> None:
    await _Resume(coroutine, waiting)


def start_now(coroutine: Coroutine[Any, Any, None]) -> asyncio.Future[None] | None:
    """Run the coroutine at once, up to its first wait: None if it finished without waiting (a socket's
    send does, while its buffer has room), else a task that finishes it. (Python 3.12's eager tasks.)"""
    try:
        waiting = coroutine.send(None)
    except StopIteration:
        return None
    except Exception:
        log.exception("a subscription result could not be sent")
        return None
    return asyncio.ensure_future(_finish(coroutine, waiting))


class TextSocket(Protocol):
    """The WebSocket adapter's way to send text already encoded (service.graphql_decoding)."""

    async def send_text(self, text: str) -> None: ...


class Member:
    """One subscriber of a group: its socket and operation id, and its results waiting to go out.

    `ended` is done once the membership is: the group ended (END, or ALONE) after the member's last
    result went out, or the member fell behind (BEHIND)."""

    __slots__ = ("_backlog", "_head", "_sending", "_socket", "ended")

    def __init__(self, socket: TextSocket, operation_id: str) -> None:
        self._socket = socket
        self._head = '{"id":' + json.dumps(operation_id) + ',"type":"next","payload":'
        self._backlog: deque[Item] = deque()
        self._sending: asyncio.Future[None] | None = None
        self.ended: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()

    def deliver(self, item: Item) -> None:
        """Send a result now (or, while an earlier send waits, after the ones before it); an ending
        once every result before it has gone out."""
        if self.ended.done():
            return
        if len(self._backlog) >= MAX_BACKLOG:
            self._end(BEHIND)
            return
        self._backlog.append(item)
        if self._sending is None:
            self._pump()

    def _pump(self) -> None:
        while self._backlog:
            item = self._backlog.popleft()
            if not isinstance(item, str):
                self._end(item)
                return
            sending = start_now(self._socket.send_text(self._head + item + "}"))
            if sending is not None:  # the socket's buffer is full: the rest waits for this send
                self._sending = sending
                sending.add_done_callback(self._sent)
                return

    def _sent(self, sending: asyncio.Future[None]) -> None:
        self._sending = None
        if not sending.cancelled() and sending.exception() is not None:
            log.error("a subscription result could not be sent", exc_info=sending.exception())
        if not self.ended.done():
            self._pump()

    def _end(self, ending: Ending) -> None:
        self._backlog.clear()
        if not self.ended.done():
            self.ended.set_result(ending)


@dataclass(eq=False)
class Group:
    """One execution of a subscription and the members its results go to."""

    key: GroupKey
    snapshots: bool
    """Each result is the whole state: a member joining late starts from the latest."""
    members: set[Member] = field(default_factory=set)
    latest: str | None = None
    task: asyncio.Task[None] | None = None

    def send(self, item: Item) -> None:
        for member in tuple(self.members):
            member.deliver(item)


class SharedSubscriptions:
    """This process's subscription groups."""

    def __init__(self) -> None:
        self._groups: dict[GroupKey, Group] = {}

    def group_count(self) -> int:
        return len(self._groups)

    async def follow(
        self, key: GroupKey, start: Callable[[], Awaitable[Stream]], member: Member, *, snapshots: bool
    ) -> Ending:
        """Make member one of the group's (joining a snapshot stream's running group, it gets the
        latest result first) until its membership ends; how it ended."""
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group(key, snapshots)
            group.task = asyncio.create_task(self._run(group, start))
        if group.snapshots and group.latest is not None:
            member.deliver(group.latest)
        group.members.add(member)
        try:
            return await member.ended
        finally:
            group.members.discard(member)
            if not group.members and group.task is not None and not group.task.done():
                self._forget(group)
                group.task.cancel()

    async def _run(self, group: Group, start: Callable[[], Awaitable[Stream]]) -> None:
        try:
            stream = await start()
            async with aclosing(stream):
                async for result in stream:
                    if isinstance(result, PreExecutionError) or not isinstance(result, ExecutionResult):
                        self._end(group, ALONE)  # each member's own run answers as the protocol says
                        return
                    group.latest = render(result)
                    record_subscription_render(len(group.members))
                    group.send(group.latest)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a shared subscription failed")
        self._end(group, END)

    def _end(self, group: Group, item: Item) -> None:
        self._forget(group)
        group.send(item)

    def _forget(self, group: Group) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]


_shared: dict[asyncio.AbstractEventLoop, SharedSubscriptions] = {}


def shared_subscriptions() -> SharedSubscriptions:
    """The groups of the running event loop (one per API process)."""
    loop = asyncio.get_running_loop()
    if loop not in _shared:
        _shared[loop] = SharedSubscriptions()
    return _shared[loop]


@functools.lru_cache(maxsize=256)
def subscription_field(query: str, operation_name: str | None) -> str | None:
    """The root field of the document's chosen operation if it is a subscription (None when it is not,
    or does not parse: strawberry's own handling answers those)."""
    try:
        operation = get_operation_ast(parse(query, no_location=True, max_tokens=MAX_TOKENS), operation_name)
    except GraphQLError:
        return None
    if operation is None or operation.operation is not OperationType.SUBSCRIPTION:
        return None
    fields = [node for node in operation.selection_set.selections if isinstance(node, FieldNode)]
    return fields[0].name.value if len(fields) == 1 else None


class SharedSubscriptionsTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws whose subscription operations are capped and join subscription groups."""

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        principal = self.context.principal
        name = subscription_field(operation.query, operation.operation_name)
        if principal is None or name is None:
            await super().run_operation(operation)
            return
        connection = self.context.connection
        try:
            if connection.subscriptions >= get_settings().max_subscriptions_per_connection:
                raise QuotaExceededError("too many subscriptions on this connection")
            connection.subscriptions += 1
            try:
                async with subscription_caps().place(principal.tenant_id):
                    await self._follow_group(operation, self._is_snapshot_stream(name))
            finally:
                connection.subscriptions -= 1
        except ClaimcheckError as error:
            await operation.send_operation_message(
                {
                    "id": operation.id,
                    "type": "next",
                    "payload": {"data": None, "errors": [graphql_error(error).formatted]},
                }
            )
            await operation.send_operation_message({"id": operation.id, "type": "complete"})
        except RunAlone:
            await super().run_operation(operation)
        except OverflowError:
            await self.websocket.close(SLOW_CONSUMER, "too slow to receive the subscription's results")

    def _is_snapshot_stream(self, name: str) -> bool:
        subscription = cast(Schema, self.schema)._schema.subscription_type
        found = subscription.fields.get(name) if subscription is not None else None
        definition = found.extensions.get(STRAWBERRY_DEFINITION) if found is not None else None
        return bool(getattr(definition, "metadata", {}).get(SNAPSHOT_STREAM))

    async def _follow_group(self, operation: Operation[Context, None], snapshots: bool) -> None:
        principal = self.context.principal
        assert principal is not None
        key: GroupKey = (
            principal.tenant_id,
            principal.scopes,
            operation.query,
            operation.operation_name,
            json.dumps(operation.variables, sort_keys=True),
        )
        group_context = Context(connection=Connection(principal=principal))

        async def start() -> Stream:
            stream = await self.schema.stream(
                operation.query,
                variable_values=operation.variables,
                context_value=group_context,
                operation_name=operation.operation_name,
            )
            return cast(Stream, stream)

        member = Member(cast(TextSocket, self.websocket), operation.id)
        ended = await shared_subscriptions().follow(key, start, member, snapshots=snapshots)
        if ended is ALONE:
            raise RunAlone
        if ended is BEHIND:
            raise OverflowError("too far behind the subscription's results")
        await operation.send_operation_message({"id": operation.id, "type": "complete"})
