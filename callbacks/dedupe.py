"""Act exactly once per `webhook-id`, although senders deliver at least once.

`claim(webhook_id)` is a context manager over a small store (in memory, or Redis shared by several
receiver processes):

    try:
        with dedupe.claim(headers["webhook-id"]) as first:
            if first:
                handle(payload)       # runs once per webhook-id
    except InProgressError:
        return 409                    # another worker holds it: let the sender retry later
    return 200                        # handled now, or already handled before

The claim is a lease (`lease` seconds) while the handler runs. If the handler raises, the claim is
released so the sender's retry handles the event again; if it returns, the id is remembered as done
for `ttl` seconds (default 7 days, longer than the sender's retry schedule) and later copies yield
False. A receiver that crashes mid-handler holds its lease until it expires.
"""

from __future__ import annotations

import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from redis import Redis

DONE = "done"
DEFAULT_TTL = 7 * 24 * 3600.0
DEFAULT_LEASE = 60.0


class InProgressError(Exception):
    """Another handler holds the claim on this webhook-id right now; answer non-2xx so it is retried."""

    def __init__(self, webhook_id: str) -> None:
        super().__init__(f"webhook {webhook_id} is being handled elsewhere")
        self.webhook_id = webhook_id


class Dedupe(ABC):
    """Claims webhook-ids; subclasses store the claims."""

    def __init__(self, *, ttl: float = DEFAULT_TTL, lease: float = DEFAULT_LEASE) -> None:
        self.ttl = ttl
        self.lease = lease

    @contextmanager
    def claim(self, webhook_id: str) -> Iterator[bool]:
        """Yield True if the caller should handle `webhook_id`, False if it was handled already.

        Raises `InProgressError` while another caller holds the claim.
        """
        token = secrets.token_hex(16)
        held = self._acquire(webhook_id, token)
        if held == DONE:
            yield False
            return
        if held is not None:
            raise InProgressError(webhook_id)
        try:
            yield True
        except BaseException:
            self._release(webhook_id, token)
            raise
        self._complete(webhook_id)

    @abstractmethod
    def _acquire(self, webhook_id: str, token: str) -> str | None:
        """Atomically store `token` for `lease` seconds if nothing is stored; else return what is."""

    @abstractmethod
    def _complete(self, webhook_id: str) -> None:
        """Store DONE for `ttl` seconds."""

    @abstractmethod
    def _release(self, webhook_id: str, token: str) -> None:
        """Forget the claim if it is still `token`."""


class _Entry(NamedTuple):
    value: str
    expires: float


class MemoryDedupe(Dedupe):
    """Claims in this process's memory: at most `max_entries`, the least recently stored dropped first."""

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        lease: float = DEFAULT_LEASE,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(ttl=ttl, lease=lease)
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _acquire(self, webhook_id: str, token: str) -> str | None:
        with self._lock:
            now = self._clock()
            entry = self._entries.get(webhook_id)
            if entry is not None and entry.expires > now:
                return entry.value
            self._put(webhook_id, token, now + self.lease)
            return None

    def _complete(self, webhook_id: str) -> None:
        with self._lock:
            self._put(webhook_id, DONE, self._clock() + self.ttl)

    def _release(self, webhook_id: str, token: str) -> None:
        with self._lock:
            entry = self._entries.get(webhook_id)
            if entry is not None and entry.value == token:
                del self._entries[webhook_id]

    def _put(self, webhook_id: str, value: str, expires: float) -> None:
        """Store as newest, first dropping expired entries at the oldest end and any over the bound."""
        self._entries.pop(webhook_id, None)
        now = self._clock()
        while self._entries and (
            len(self._entries) >= self.max_entries or next(iter(self._entries.values())).expires <= now
        ):
            self._entries.popitem(last=False)
        self._entries[webhook_id] = _Entry(value, expires)


class RedisDedupe(Dedupe):
    """Claims in Redis under `prefix + webhook_id`, shared by every receiver process using it."""

    _ACQUIRE = """
    local held = redis.call('GET', KEYS[1])
    if held then return held end
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return false
    """
    _RELEASE = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
    return 0
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "webhook-dedupe:",
        ttl: float = DEFAULT_TTL,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        super().__init__(ttl=ttl, lease=lease)
        self.redis = redis
        self.prefix = prefix
        self._acquire_script = redis.register_script(self._ACQUIRE)
        self._release_script = redis.register_script(self._RELEASE)

    def _acquire(self, webhook_id: str, token: str) -> str | None:
        held = self._acquire_script(keys=[self.prefix + webhook_id], args=[token, _ms(self.lease)])
        return held.decode() if isinstance(held, bytes) else held

    def _complete(self, webhook_id: str) -> None:
        self.redis.set(self.prefix + webhook_id, DONE, px=_ms(self.ttl))

    def _release(self, webhook_id: str, token: str) -> None:
        self._release_script(keys=[self.prefix + webhook_id], args=[token])


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
