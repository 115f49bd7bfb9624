"""API keys authenticated recently, kept in the process: most requests authenticate without Postgres.

A key's principal (tenant, scopes, limits) is read from Postgres at most once per KEY_RECHECK_SECONDS
in each process. In between, one Redis command per request (MGET) asks what could have changed since:
whether the key was revoked (a marker revocation writes once it commits) and whether any tenant's
limits changed (a version number set_limits bumps). Each process also notes the key's use for
api_keys.last_used_at, at most once per KEY_LAST_USED_RESOLUTION_SECONDS (in the same round trip).
When Redis cannot answer, the request authenticates against Postgres, as a first request does.
Unknown or malformed keys are never remembered.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from service.outages import is_outage
from service.principal import Principal
from service.redis import get_redis, loop_redis
from service.settings import get_settings

log = logging.getLogger(__name__)

LAST_USED_HASH = "apikeys:last_used"
"""Redis hash key id -> Unix time of a use, until the scheduler writes it to api_keys.last_used_at."""
MAX_REMEMBERED = 10_000
REVOKED_MARKER_FACTOR = 4
"""A revocation marker outlives every process's memory of the key by this factor of KEY_RECHECK_SECONDS."""


def revoked_marker(key_id: str) -> str:
    """The Redis key that says, for a while, that this API key was revoked."""
    return f"apikeys:revoked:{key_id}"


LIMITS_VERSION = "tenants:limits-version"
"""Bumped whenever any tenant's limits change: every process reads its keys' principals again."""


@dataclass(frozen=True)
class _Remembered:
    principal: Principal
    limits_version: bytes | str | None
    read_at: float


class PrincipalCache:
    """Principals by a digest of the bearer token, each trusted for KEY_RECHECK_SECONDS (see module)."""

    def __init__(self) -> None:
        self._remembered: dict[bytes, _Remembered] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str, load: Callable[[str], Principal | None]) -> Principal | None:
        """The principal for a bearer token: remembered, or load(token) from Postgres; None for a bad key."""
        digest = hashlib.sha256(token.encode()).digest()
        remembered = self._remembered.get(digest)
        if (
            remembered is not None
            and time.monotonic() - remembered.read_at < get_settings().key_recheck_seconds
        ):
            if _still_valid(remembered):
                return remembered.principal
            self._forget(digest)
        try:
            version = get_redis().get(LIMITS_VERSION)  # before the read: a change after it is seen next time
        except Exception as error:
            _warn("could not read the limits version", error)
            return _noted(load(token))  # not remembered: Redis cannot tell what changes meanwhile
        principal = _noted(load(token))
        if principal is not None:
            self._keep(digest, _Remembered(principal, version, time.monotonic()))
        return principal

    async def authenticate_async(
        self, token: str, load: Callable[[str], Principal | None]
    ) -> Principal | None:
        """authenticate() for an event loop: a remembered key is checked over this loop's own Redis
        client, without a thread; reading Postgres (or a Redis the loop cannot reach) takes a thread."""
        digest = hashlib.sha256(token.encode()).digest()
        remembered = self._remembered.get(digest)
        if (
            remembered is not None
            and time.monotonic() - remembered.read_at < get_settings().key_recheck_seconds
            and await _still_valid_async(remembered)
        ):
            return remembered.principal
        return await anyio.to_thread.run_sync(self.authenticate, token, load)

    def clear(self) -> None:
        """Forget every key (and when their uses were last sent)."""
        with self._lock:
            self._remembered.clear()
        _NOTED.clear()

    def _forget(self, digest: bytes) -> None:
        with self._lock:
            self._remembered.pop(digest, None)

    def _keep(self, digest: bytes, remembered: _Remembered) -> None:
        with self._lock:
            if len(self._remembered) >= MAX_REMEMBERED:
                self._remembered.clear()  # rare: so many keys in one period; each is read again
            self._remembered[digest] = remembered


PRINCIPALS = PrincipalCache()


def mark_revoked(key_id: str) -> None:
    """Tell every process that the key is revoked (call once the revocation has committed)."""
    try:
        ttl = max(1, int(get_settings().key_recheck_seconds * REVOKED_MARKER_FACTOR))
        get_redis().set(revoked_marker(key_id), 1, ex=ttl)
    except Exception as error:  # processes still drop the key within KEY_RECHECK_SECONDS
        _warn(f"could not announce the revocation of API key {key_id}", error)


def mark_limits_changed() -> None:
    """Tell every process that some tenant's limits changed (call once the change has committed)."""
    try:
        get_redis().incr(LIMITS_VERSION)
    except Exception as error:  # processes still read the new limits within KEY_RECHECK_SECONDS
        _warn("could not announce a change of limits", error)


def _still_valid(remembered: _Remembered) -> bool:
    """Whether the key is unrevoked and the limits unchanged (noting the key's use); False when Redis
    cannot say, so that Postgres decides. One command (MGET); with the use to note, one pipeline."""
    principal = remembered.principal
    try:
        if not _NOTED.due(principal.key_id):
            revoked, version = get_redis().mget(revoked_marker(principal.key_id), LIMITS_VERSION)
        else:
            with get_redis().pipeline(transaction=False) as pipe:
                pipe.mget(revoked_marker(principal.key_id), LIMITS_VERSION)
                _note_use(pipe, principal.key_id)
                (revoked, version), _ = pipe.execute()
    except Exception as error:
        _warn(f"could not check API key {principal.key_id} in Redis", error)
        return False
    return revoked is None and version == remembered.limits_version


async def _still_valid_async(remembered: _Remembered) -> bool:
    """_still_valid() over the running loop's Redis client."""
    client = loop_redis()
    principal = remembered.principal
    try:
        if not _NOTED.due(principal.key_id):
            revoked, version = await client.mget(revoked_marker(principal.key_id), LIMITS_VERSION)
        else:
            async with client.pipeline(transaction=False) as pipe:
                pipe.mget(revoked_marker(principal.key_id), LIMITS_VERSION)
                _note_use(pipe, principal.key_id)
                (revoked, version), _ = await pipe.execute()
    except Exception as error:
        _warn(f"could not check API key {principal.key_id} in Redis", error)
        return False
    return revoked is None and version == remembered.limits_version


class _UseNotes:
    """When this process last sent each key's use to Redis: at most once per
    KEY_LAST_USED_RESOLUTION_SECONDS (Redis keeps one write per period across processes anyway)."""

    def __init__(self) -> None:
        self._sent: dict[str, float] = {}

    def due(self, key_id: str) -> bool:
        """Whether this key's use is to be sent now; if so, it counts as sent."""
        now = time.monotonic()
        sent = self._sent.get(key_id)
        if sent is not None and now - sent < get_settings().key_last_used_resolution_seconds:
            return False
        if len(self._sent) >= MAX_REMEMBERED:
            self._sent.clear()
        self._sent[key_id] = now
        return True

    def clear(self) -> None:
        self._sent.clear()


_NOTED = _UseNotes()


def _noted(principal: Principal | None) -> Principal | None:
    """The principal, its key's use noted for api_keys.last_used_at (never failing the request)."""
    if principal is not None and _NOTED.due(principal.key_id):
        try:
            with get_redis().pipeline(transaction=False) as pipe:
                _note_use(pipe, principal.key_id)
                pipe.execute()
        except Exception as error:
            _warn(f"could not record the use of API key {principal.key_id}", error)
    return principal


def _note_use(pipe: Any, key_id: str) -> None:
    """At most one write of the key's last use per KEY_LAST_USED_RESOLUTION_SECONDS: the first request
    of each period sets the "seen" marker and the time (a Lua script: one round trip either way)."""
    pipe.eval(
        _NOTE_USE,
        2,
        f"apikeys:seen:{key_id}",
        LAST_USED_HASH,
        key_id,
        get_settings().key_last_used_resolution_seconds,
        int(time.time()),
    )


_NOTE_USE = """
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[2]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
return 1
"""


def _warn(what: str, error: Exception) -> None:
    log.warning("%s: %s", what, error, exc_info=not is_outage(error))
