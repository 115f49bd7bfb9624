"""Sync Postgres and Redis code run on the event loop (service.loop_io): it runs in the loop's own thread,
the loop serves other work while it waits, and it never makes the loop wait for a pooled connection."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import pytest
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import Engine, text
from sqlmodel import Session
from starlette.responses import Response

from service import redis as service_redis
from service.db import make_engine
from service.graphql_base import Connection, Context
from service.jobs import dispatch
from service.jobs import service as jobs_service
from service.jobs.models import Job, JobStatus
from service.loop_io import run_on_loop, wait_for
from service.plans import DEFAULT_PLANS, Limits
from service.principal import Principal
from service.redis import get_queue, get_redis, loop_redis
from service.schema import schema
from tests.conftest import SPEECH_MUTATION, TenantHandle
from tests.servers import clear_caches

T = TypeVar("T")
TICK = 0.01


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine of one pooled connection on the test database."""
    engine = make_engine(database_url, pool_size=1)
    yield engine
    engine.dispose()


def while_ticking(work: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """work's result, and how many times a task of the same loop ran (every TICK) while it was awaited."""

    async def main() -> tuple[T, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(TICK)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        try:
            result = await work()
            return result, ticks
        finally:
            ticker.cancel()

    return asyncio.run(main())


def sleep_in_postgres(engine: Engine, seconds: float) -> int:
    """A transaction that waits `seconds` in Postgres; the thread it ran in."""
    with Session(engine) as session:
        session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
        session.commit()
    return threading.get_ident()


def test_a_postgres_wait_on_the_loop_runs_in_its_thread_and_lets_it_serve_others(engine: Engine) -> None:
    ran_in, ticks = while_ticking(lambda: run_on_loop(lambda: sleep_in_postgres(engine, 0.3)))
    assert ran_in == threading.get_ident()  # the loop's thread, not a worker thread
    assert ticks >= 10  # the loop ran others while Postgres slept (blocking it: none)


def test_out_of_the_loop_the_same_connection_waits_as_usual(engine: Engine) -> None:
    assert sleep_in_postgres(engine, 0.01) == threading.get_ident()
    ran_in, _ = while_ticking(lambda: anyio.to_thread.run_sync(sleep_in_postgres, engine, 0.01))
    assert ran_in != threading.get_ident()


def test_redis_commands_and_pipelines_on_the_loop_let_it_serve_others(env: dict[str, str]) -> None:
    key = f"loop-io-test:{time.monotonic_ns()}"
    redis = get_redis()

    def use_redis() -> tuple[Any, list[Any], int]:
        waited = redis.blpop([key], timeout=0.3)  # Redis holds the answer for 0.3 s
        with redis.pipeline(transaction=False) as pipeline:
            pipeline.set(key, "1", ex=60)
            pipeline.get(key)
            answers = pipeline.execute()
        return waited, answers, threading.get_ident()

    (waited, answers, ran_in), ticks = while_ticking(lambda: run_on_loop(use_redis))
    assert waited is None
    assert answers == [True, b"1"]
    assert ran_in == threading.get_ident()
    assert ticks >= 10
    assert redis.get(key) == b"1"  # the same server as the process's client
    redis.delete(key)


def test_redis_errors_on_the_loop_are_redis_py_errors(env: dict[str, str]) -> None:
    def fail() -> None:
        get_redis().execute_command("NO-SUCH-COMMAND")  # type: ignore[no-untyped-call]

    with pytest.raises(ResponseError):
        asyncio.run(run_on_loop(fail))


@pytest.fixture
def silent_redis(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's Redis is a server that takes connections and never answers (a hung Redis), and
    commands time out after 0.5 s."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.listen(64)
        monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{server.getsockname()[1]}/0")
        monkeypatch.setattr(service_redis, "COMMAND_TIMEOUT_SECONDS", 0.5)
        clear_caches()
        try:
            yield
        finally:
            monkeypatch.undo()
            clear_caches()


def failure_within(seconds: float, action: Callable[[], Any]) -> type[BaseException] | None:
    """The class of the error action() raised on a loop of its own; fails if it ran past `seconds`."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(run_on_loop(action))
        except BaseException as error:
            failures.append(error)

    attempt = threading.Thread(target=run, daemon=True)
    attempt.start()
    attempt.join(timeout=seconds)
    assert not attempt.is_alive(), f"{action.__name__} still waits after {seconds} s"
    return type(failures[0]) if failures else None


def test_a_silent_redis_fails_commands_on_the_loop_with_redis_pys_timeout(silent_redis: None) -> None:
    def get() -> Any:
        return get_redis().get("anything")

    def pipelined() -> list[Any]:
        with get_redis().pipeline(transaction=False) as pipeline:
            pipeline.get("anything")
            return pipeline.execute()

    def loop_client() -> Any:  # the API key check's way: the loop's asyncio client itself
        return wait_for(loop_redis().mget("anything", "else"))

    for command in (get, pipelined, loop_client):
        assert failure_within(3, command) is RedisTimeoutError, f"{command.__name__} on a silent Redis"


def test_waiting_for_a_pooled_connection_never_stops_the_loop(engine: Engine) -> None:
    """Three transactions on the loop share a pool of one: each waits for the connection in a thread.
    (Waiting on the loop, the second would block it, and with it the first, which holds the connection:
    the pool's 30 s timeout, then an error.)"""

    async def three() -> list[int]:
        return list(
            await asyncio.gather(*(run_on_loop(lambda: sleep_in_postgres(engine, 0.1)) for _ in range(3)))
        )

    started = time.monotonic()
    ran_in, ticks = while_ticking(three)
    assert ran_in == [threading.get_ident()] * 3
    assert time.monotonic() - started < 5
    assert ticks >= 10


def test_a_connection_held_by_a_thread_is_awaited_without_stopping_the_loop(engine: Engine) -> None:
    held = threading.Event()

    def hold() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            held.set()
            time.sleep(0.3)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    _, ticks = while_ticking(lambda: run_on_loop(lambda: sleep_in_postgres(engine, 0)))
    holder.join()
    assert ticks >= 10


def test_work_on_the_loop_is_not_cancelled_halfway(engine: Engine) -> None:
    finished: list[bool] = []

    def work() -> None:
        sleep_in_postgres(engine, 0.2)
        finished.append(True)

    async def cancelled_early() -> None:
        with anyio.move_on_after(0.05):
            await run_on_loop(work)

    asyncio.run(cancelled_early())
    assert finished == [True]


def test_the_pools_routine_lines_stay_below_the_logs_info_level(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The pool logs as SQLAlchemy's QueuePool does, under the `sqlalchemy` logger (WARNING by default):
    a process logging at INFO does not get a "Pool recreating" line each time a work horse starts."""
    with caplog.at_level(logging.INFO):
        engine.pool.recreate().dispose()
    assert [record.getMessage() for record in caplog.records] == []


def test_generate_speech_creates_its_job_on_the_event_loop(
    env: dict[str, str], tenant: TenantHandle, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mutation's resolver (Postgres, the rate limit and the hand-over to RQ) runs in the loop's
    thread; the job is committed, and RQ holds it on its queue (one of the test's own, which no worker
    of the session takes from)."""
    created_in: list[int] = []
    create_job = jobs_service.create_job

    def recording(*args: Any, **kwargs: Any) -> Job:
        created_in.append(threading.get_ident())
        return create_job(*args, **kwargs)

    monkeypatch.setattr(jobs_service, "create_job", recording)
    monkeypatch.setattr(dispatch, "queue_for", lambda priority: f"loop-io-test-{priority}")
    principal = Principal(
        tenant_id=tenant.id,
        key_id=tenant.key_id,
        scopes=frozenset({"jobs:write", "jobs:read"}),
        limits=Limits(**DEFAULT_PLANS["free"]),
    )
    context = Context(connection=Connection(principal=principal))
    context.response = Response()
    variables = {"input": {"text": "Said on the loop."}}
    result = asyncio.run(schema.execute(SPEECH_MUTATION, variable_values=variables, context_value=context))
    assert result.errors is None
    assert result.data is not None
    assert result.data["generateSpeech"]["userErrors"] == []
    job_id = result.data["generateSpeech"]["job"]["id"]
    assert created_in == [threading.get_ident()]
    job = db.get(Job, job_id)
    assert job is not None
    assert job.status == JobStatus.QUEUED
    queue = get_queue("loop-io-test-NORMAL")
    try:
        assert queue.get_job_ids() == [job_id]
    finally:
        queue.delete(delete_jobs=True)
