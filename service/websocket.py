"""graphql-transport-ws whose API key is checked again while the socket lives.

A socket authenticates once, in connection_init (service.app). After that its key is checked before
each operation starts and, while subscriptions are open on it, every KEY_RECHECK_SECONDS. A key seen
active is trusted for that long, so this costs one database read per key per period in each process.
Once the key is revoked the socket is closed with 4403, which ends its subscriptions.
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


class KeyCheckingTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws that closes the socket with 4403 once its API key is revoked."""

    async def handle(self) -> None:
        watch = asyncio.create_task(self._close_once_revoked_while_subscribed())
        try:
            await super().handle()
        finally:
            watch.cancel()

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged and not await self._key_is_active():
            await self.websocket.close(REVOKED, "API key revoked")
            return
        await super().handle_subscribe(message)

    async def _close_once_revoked_while_subscribed(self) -> None:
        """An idle socket leaks nothing and its next operation is checked; subscriptions send on
        their own, so while any is open the key is checked on a timer."""
        period = get_settings().key_recheck_seconds
        while True:
            await asyncio.sleep(period)
            if self.context.connection.subscriptions and not await self._key_is_active():
                await self.websocket.close(REVOKED, "API key revoked")
                return

    async def _key_is_active(self) -> bool:
        principal = self.context.principal
        if principal is None:
            return True  # not acknowledged yet: the protocol refuses its operations (4401)
        return await ACTIVE_KEYS.is_active(principal.key_id, get_settings().key_recheck_seconds)
