"""Forking a process that runs threads, without handing the child a lock nobody will release.

The worker process forks its work horses while other threads of it run: the webhook deliverer's
event loop and executors, the metrics scrape, the span exporter. A thread inside a C library with
the GIL released (OpenSSL loading certificates or shaking hands, libpq connecting) may hold that
library's lock at the instant of fork(); the child gets the lock held by a thread it does not have,
and hangs the first time it needs it (seen: a horse stuck in `hashlib.sha256()` for good, inside
OpenSSL's method store lock, taken in the parent by the deliverer loading its CA certificates).

The gate is a readers-writer lock with the writer first: those threads hold it shared while they
work (an event loop lets go of it only while it waits in select(), an executor's thread for each
task); `fork()` waits until no thread holds it, new holders meanwhile wait, forks, and lets them go.
A fork that cannot get the gate within its timeout does not happen (the caller tries again later),
so one stuck thread cannot stall the forking thread.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class ForkGate:
    """Threads' work shared, fork() alone (see the module's docstring)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._holders = 0
        self._forking = False
        self._depth = threading.local()

    def enter(self) -> None:
        """Hold the gate shared (re-entrant per thread); waits while a fork is waiting or under way."""
        depth = getattr(self._depth, "value", 0)
        self._depth.value = depth + 1
        if depth:
            return
        with self._condition:
            self._condition.wait_for(lambda: not self._forking)
            self._holders += 1

    def leave(self) -> None:
        depth = self._depth.value - 1
        self._depth.value = depth
        if depth:
            return
        with self._condition:
            self._holders -= 1
            if not self._holders:
                self._condition.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def fork(self, timeout: float) -> int | None:
        """os.fork() once no other thread holds the gate: the child's pid (0 in the child), or None
        when some thread still held it after `timeout` seconds (nothing forked)."""
        with self._condition:
            self._forking = True
            if not self._condition.wait_for(lambda: not self._holders, timeout):
                self._forking = False
                self._condition.notify_all()
                return None
        try:
            pid = os.fork()
        except BaseException:
            self._open()
            raise
        if pid:
            self._open()  # (the child's gate was made anew by the at-fork hook below)
        return pid

    def _open(self) -> None:
        with self._condition:
            self._forking = False
            self._condition.notify_all()


GATE = ForkGate()
"""The process's gate: every fork of a process that may run threads goes through it."""
os.register_at_fork(after_in_child=GATE._reset)  # a child has one thread: no holder, nobody forking


def gated(function: Callable[P, T]) -> Callable[P, T]:
    """`function`, run holding the gate."""

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with GATE.shared():
            return function(*args, **kwargs)

    return run


class ForkSafeExecutor(ThreadPoolExecutor):
    """A thread pool whose tasks each run holding the gate."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(gated(fn), *args, **kwargs)


class _ForkSafeSelector(selectors.DefaultSelector):
    """An event loop's selector that lets go of the gate while it waits (the loop's thread holds it
    the rest of the time)."""

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        GATE.leave()
        try:
            return super().select(timeout)
        finally:
            GATE.enter()


def _fork_safe_event_loop() -> asyncio.AbstractEventLoop:
    return asyncio.SelectorEventLoop(_ForkSafeSelector())


@contextmanager
def fork_safe_loop() -> Iterator[asyncio.Runner]:
    """An asyncio runner for a thread beside a forking one: its loop holds the gate except while it
    waits for I/O, and its default executor's tasks hold it too."""
    with GATE.shared(), asyncio.Runner(loop_factory=_fork_safe_event_loop) as runner:
        runner.get_loop().set_default_executor(ForkSafeExecutor(thread_name_prefix="asyncio"))
        yield runner
