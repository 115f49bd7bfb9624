"""Blocking-style database and Redis code run on the event loop's own thread, in a greenlet.

An API resolver runs in a worker thread because its Postgres and Redis calls block. Each of those
calls lets go of Python's lock and must take it back from the busy event loop: for generateSpeech some
90 context switches per request (a fifth of its CPU on one API process, bench/README.md).
`run_on_loop` runs the same sync code in a greenlet on the loop's thread instead (SQLAlchemy's asyncio
bridge: `greenlet_spawn`, `await_only`). While it waits, the loop serves others: a connection made by
`LoopWaitingConnection` waits for its socket through the loop (psycopg's own `wait_async`), a
`LoopFriendlyPool` never makes the loop wait for a free connection, and the process's Redis client
(`service.redis.LoopFriendlyRedis`) sends its commands through the loop's asyncio client. Out of such
a greenlet all three behave as they always did, so the code stays one.

Only code whose every wait goes through those two may run this way: any other blocking call (a file,
a socket, a lock held by a thread) would stop the whole loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import anyio
import psycopg
from psycopg import waiting
from psycopg.abc import PQGen
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from sqlalchemy.util import queue as sqla_queue
from sqlalchemy.util.concurrency import await_only, greenlet_spawn, in_greenlet

T = TypeVar("T")
RV = TypeVar("RV")

_WAIT_INTERVAL = 0.1
"""psycopg's own interval between checks for an interrupt while it waits (Connection.wait)."""


def on_loop() -> bool:
    """Whether this code runs in run_on_loop's greenlet (where a wait must go through the loop)."""
    return in_greenlet()


def wait_for(awaitable: Awaitable[T]) -> T:
    """From run_on_loop's greenlet, the awaitable's result; the loop serves others meanwhile."""
    return await_only(awaitable)


class LoopWaitingConnection(psycopg.Connection[Any]):
    """A psycopg connection that, used from run_on_loop's greenlet, waits through the event loop."""

    def wait(self, gen: PQGen[RV], interval: float = _WAIT_INTERVAL, timeout: float | None = None) -> RV:
        if not on_loop():
            return super().wait(gen, interval, timeout)
        try:  # Most of psycopg's steps in a pipeline (queueing a statement, entering) never wait.
            first = next(gen)
        except StopIteration as done:
            return cast(RV, done.value)
        resumed = _resumed(first, gen)
        return wait_for(waiting.wait_async(resumed, self.pgconn.socket, interval=interval, timeout=timeout))

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> LoopWaitingConnection:
        """A new connection; from the loop's greenlet it is opened in a thread (psycopg's connect waits
        by itself, and a slow or unreachable server must not stop the loop)."""
        if not on_loop():
            return super().connect(conninfo, **kwargs)
        return wait_for(asyncio.to_thread(cls.connect, conninfo, **kwargs))


def _resumed(first: Any, gen: PQGen[RV]) -> PQGen[RV]:
    """gen, whose first step was taken already and asked to wait for `first`."""
    ready = yield first
    while True:
        try:
            state = gen.send(ready)
        except StopIteration as done:
            return cast(RV, done.value)
        ready = yield state


class LoopFriendlyPool(QueuePool):
    """A QueuePool whose checkout from run_on_loop's greenlet never stops the loop: an idle connection is
    taken at once; when there is none, the wait for one (or the opening of a new one) is a thread's.
    (Blocking the loop there would wait for connections that only the loop's own work gives back.)"""

    _sqla_logger_namespace = "sqlalchemy.pool.impl.QueuePool"
    """Its log lines stay a QueuePool's: under SQLAlchemy's logger, which is quiet below WARNING."""

    def _do_get(self) -> ConnectionPoolEntry:
        if not on_loop():
            return super()._do_get()
        try:
            return self._pool.get(False)
        except sqla_queue.Empty:
            return wait_for(asyncio.to_thread(super()._do_get))


async def run_on_loop(action: Callable[[], T]) -> T:
    """action() in a greenlet on the running loop, to its end: as a thread's work would, it is not
    cancelled halfway through a transaction when its caller is."""
    with anyio.CancelScope(shield=True):
        result: T = await greenlet_spawn(action)
    return result
