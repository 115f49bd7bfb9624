"""graphql-transport-ws whose API key is checked again while the socket lives.

A socket authenticates once, in connection_init (service.app). After that its key is checked before
each operation starts, and one task per process (RevocationWatch) checks the keys of every open
socket every KEY_RECHECK_SECONDS, idle or not. A key seen active is trusted for that long, so this
costs one database read per key per period in each process, and nothing per socket but a place in a
set (a timer per socket, each waking to ask, cost a third of the process's loop at a thousand
sockets, and its futures fed the garbage collector's full passes). Once the key is revoked its
sockets are closed with 4403, which ends their subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import anyio.to_thread
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage

from service import outages
from service.db import session_scope
from service.graphql_base import Context
from service.settings import get_settings
from service.tenants.service import key_is_active

log = logging.getLogger(__name__)

REVOKED = 4403
MAX_REMEMBERED_KEYS = 10_000


class ActiveKeys:
    """Which API keys are still unrevoked, reading the database at most once per key per `ttl` seconds:
    sockets asking about a key while its read is under way wait for that read (a thousand sockets of
    one key wake together; each starting a read of its own took a third of an API process's loop)."""

    def __init__(self, check: Callable[[str], bool]) -> None:
        self._check = check
        self._active_until: dict[str, float] = {}
        self._reading: dict[str, asyncio.Future[bool]] = {}

    async def is_active(self, key_id: str, ttl: float) -> bool:
        if self._active_until.get(key_id, 0.0) > time.monotonic():
            return True
        reading = self._reading.get(key_id)
        if reading is None:
            reading = self._reading[key_id] = asyncio.ensure_future(self._read(key_id, ttl))
            reading.add_done_callback(lambda _: self._reading.pop(key_id, None))
        return await asyncio.shield(reading)

    async def _read(self, key_id: str, ttl: float) -> bool:
        try:
            active = await anyio.to_thread.run_sync(self._check, key_id)
        except outages.OUTAGES as error:
            # The operation meets the outage itself; the next check decides about the key.
            log.warning("could not re-check API key %s: %s", key_id, outages.describe(error))
            return True
        if not active:
            self._active_until.pop(key_id, None)
            return False
        now = time.monotonic()
        if len(self._active_until) >= MAX_REMEMBERED_KEYS:
            self._active_until = {key: until for key, until in self._active_until.items() if until > now}
        self._active_until[key_id] = now + ttl
        return True


def _key_in_database_is_active(key_id: str) -> bool:
    with session_scope() as session:
        return key_is_active(session, key_id)


ACTIVE_KEYS = ActiveKeys(_key_in_database_is_active)


class RevocationWatch:
    """This process's open sockets, whose keys one task checks every KEY_RECHECK_SECONDS: the sockets of
    a revoked key are closed with 4403."""

    def __init__(self, keys: ActiveKeys) -> None:
        self._keys = keys
        self._sockets: set[KeyCheckingTransportWS] = set()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sockets)

    def add(self, socket: KeyCheckingTransportWS) -> None:
        self._sockets.add(socket)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch())

    def discard(self, socket: KeyCheckingTransportWS) -> None:
        self._sockets.discard(socket)

    async def _watch(self) -> None:
        while self._sockets:
            period = get_settings().key_recheck_seconds
            await asyncio.sleep(period)
            try:
                await self.check(period)
            except Exception:
                log.exception("could not check the API keys of open sockets")

    async def check(self, ttl: float) -> int:
        """Close the sockets whose key is revoked (reading each key at most once per ttl); how many."""
        by_key: dict[str, list[KeyCheckingTransportWS]] = {}
        for socket in self._sockets:
            principal = socket.context.principal
            if principal is not None:  # not acknowledged yet: the protocol refuses its operations (4401)
                by_key.setdefault(principal.key_id, []).append(socket)
        keys = list(by_key)
        active = await asyncio.gather(*(self._keys.is_active(key_id, ttl) for key_id in keys))
        closed = 0
        for key_id, is_active in zip(keys, active, strict=True):
            if not is_active:
                for socket in by_key[key_id]:
                    self._sockets.discard(socket)
                    await socket.close_revoked()
                    closed += 1
        return closed


_watches: dict[asyncio.AbstractEventLoop, RevocationWatch] = {}


def revocation_watch() -> RevocationWatch:
    """The watch of the running event loop (one per API process)."""
    loop = asyncio.get_running_loop()
    if loop not in _watches:
        _watches[loop] = RevocationWatch(ACTIVE_KEYS)
    return _watches[loop]


class KeyCheckingTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws that closes the socket with 4403 once its API key is revoked."""

    async def handle(self) -> None:
        watch = revocation_watch()
        watch.add(self)
        try:
            await super().handle()
        finally:
            watch.discard(self)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged and not await self._key_is_active():
            await self.close_revoked()
            return
        await super().handle_subscribe(message)

    async def close_revoked(self) -> None:
        try:
            await self.websocket.close(REVOKED, "API key revoked")
        except Exception as error:  # already closed by the client or the protocol
            log.debug("closing a revoked key's socket: %s", error)

    async def _key_is_active(self) -> bool:
        principal = self.context.principal
        if principal is None:
            return True  # not acknowledged yet: the protocol refuses its operations (4401)
        return await ACTIVE_KEYS.is_active(principal.key_id, get_settings().key_recheck_seconds)
