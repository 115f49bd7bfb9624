"""The fork gate: the worker forks a horse only while none of its other threads works (the deliverer's
loop and executors, a metrics scrape, a span export), so a horse never inherits a C library's lock
held by a thread it does not have (observability/forks.py)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from observability import metrics
from observability.forks import GATE, ForkSafeExecutor, fork_safe_loop
from observability.tracing import PerProcessExporter
from service.jobs import supervisor as supervisor_module
from service.jobs.supervisor import Supervisor


def _fork_and_reap(timeout: float) -> bool:
    """Fork through the gate; the child exits at once. Whether the fork happened."""
    pid = GATE.fork(timeout)
    if pid == 0:
        os._exit(0)
    if pid is None:
        return False
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return True


@contextmanager
def _held_in_a_thread() -> Iterator[threading.Event]:
    """Another thread holds the gate until the yielded event is set."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with GATE.shared():
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(5)
    try:
        yield release
    finally:
        release.set()
        thread.join(5)


def test_a_fork_waits_while_a_thread_holds_the_gate_and_gives_up_after_its_timeout() -> None:
    with _held_in_a_thread():
        started = time.monotonic()
        assert not _fork_and_reap(0.2)
        assert 0.15 < time.monotonic() - started < 2
    assert _fork_and_reap(1)


def test_a_waiting_fork_goes_first_then_the_threads_go_on() -> None:
    forked: list[bool] = []
    entered = threading.Event()
    with _held_in_a_thread() as release:
        forker = threading.Thread(target=lambda: forked.append(_fork_and_reap(5)))
        forker.start()
        time.sleep(0.1)  # the fork now waits for the holder

        def enter() -> None:
            with GATE.shared():
                entered.set()

        newcomer = threading.Thread(target=enter)
        newcomer.start()
        assert not entered.wait(0.2)  # a new holder waits behind the waiting fork
        release.set()
        forker.join(5)
        newcomer.join(5)
    assert forked == [True]
    assert entered.is_set()


def test_the_gate_is_reentrant_and_a_child_starts_with_it_open() -> None:
    with GATE.shared(), GATE.shared():
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # in the child, this thread's holding and any other thread's are gone
            os.write(write, b"1" if _fork_and_reap(0.5) else b"0")
            os._exit(0)
        os.close(write)
        assert os.read(read, 1) == b"1"
        os.waitpid(pid, 0)
        os.close(read)
    assert _fork_and_reap(1)


def test_an_event_loop_beside_a_fork_holds_the_gate_while_it_runs_and_lets_go_while_it_waits() -> None:
    busy, idle = threading.Event(), threading.Event()
    done = threading.Event()

    async def work() -> None:
        loop = asyncio.get_running_loop()
        busy.set()
        time.sleep(0.5)  # a callback on the loop, busy (a TLS handshake, a certificate load)
        idle.set()
        await loop.run_in_executor(None, time.sleep, 0.5)  # the default executor, busy
        await asyncio.sleep(0.5)  # waiting in select(): the gate is free
        await asyncio.to_thread(done.wait, 5)

    def run() -> None:
        with fork_safe_loop() as runner:
            runner.run(work())

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert busy.wait(5)
        assert not _fork_and_reap(0.1)
        assert idle.wait(5)
        time.sleep(0.05)
        assert not _fork_and_reap(0.1)  # the executor's task holds it
        time.sleep(0.5)
        assert _fork_and_reap(0.3)
    finally:
        done.set()
        thread.join(5)


def test_a_fork_safe_executor_holds_the_gate_for_each_task() -> None:
    release = threading.Event()
    with ForkSafeExecutor(1) as pool:
        running = pool.submit(release.wait, 5)
        time.sleep(0.05)
        assert not _fork_and_reap(0.1)
        release.set()
        running.result(5)
        assert _fork_and_reap(1)


def test_a_metrics_scrape_and_a_span_export_hold_the_gate() -> None:
    scraping, exporting, release = threading.Event(), threading.Event(), threading.Event()

    class SlowCollector(Collector):
        def describe(self) -> list[Metric]:
            return []  # (else registering it would collect it)

        def collect(self) -> list[Metric]:
            scraping.set()
            release.wait(5)
            return []

    class SlowExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:  # noqa: ARG002
            exporting.set()
            release.wait(5)
            return SpanExportResult.SUCCESS

    slow = SlowCollector()
    REGISTRY.register(slow)
    server, _ = metrics.start_metrics_server(0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        _forks_wait_for(lambda: urllib.request.urlopen(url, timeout=10).read(), scraping, release)
    finally:
        server.shutdown()
        server.server_close()
        REGISTRY.unregister(slow)

    release.clear()
    _forks_wait_for(lambda: PerProcessExporter(SlowExporter).export([]), exporting, release)


def _forks_wait_for(work: Callable[[], object], working: threading.Event, release: threading.Event) -> None:
    """While `work` runs in another thread (it sets `working`, then waits for `release`), no fork
    happens; once it is done, one does."""
    thread = threading.Thread(target=work)
    thread.start()
    assert working.wait(5)
    assert not _fork_and_reap(0.1)
    release.set()
    thread.join(10)
    assert _fork_and_reap(1)


def test_the_supervisor_forks_no_horse_while_the_gate_is_held_and_tries_again_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor_module, "FORK_WAIT_SECONDS", 0.1)
    supervisor = Supervisor(
        ["jobs"], concurrency=1, burst=False, max_jobs_per_horse=None, kill_grace_seconds=1.0
    )
    fds_before = len(os.listdir("/proc/self/fd"))
    with _held_in_a_thread():
        supervisor._spawn()
    assert supervisor.horses == {}
    assert supervisor._next_spawn > time.monotonic()  # _replace_missing tries again after the backoff
    assert len(os.listdir("/proc/self/fd")) == fds_before  # the horse's pipe was closed
