"""What one short job costs its worker in round trips to Postgres and Redis: the start's reads go in one
pipeline, the end's in another, and RQ's bookkeeping takes a few pipelines instead of a command at a
time. Each run here is a real job on the real servers, run in this process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis.connection
from redis import Redis
from sqlalchemy import event, text

from service.db import get_engine, session_scope
from service.jobs import runner
from service.jobs.dispatch import enqueue_job
from service.jobs.horse import HorseWorker
from service.jobs.kinds import prepare_kinds
from service.jobs.models import Job, JobOutbox, JobStatus
from service.jobs.priority import JOBS, expand_queues
from service.jobs.states import STATUS_EVENTS
from service.redis import get_queue, get_redis
from service.webhooks.models import WebhookEndpoint
from tests.conftest import TenantHandle, commit_job_without_enqueue
from tests.tenants.support import set_limits


def _speech(tenant: TenantHandle, number: int = 0) -> str:
    return commit_job_without_enqueue(tenant.id, "speech", {"text": f"Round trip number {number}."})


@pytest.fixture
def postgres_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Statements sent one at a time through SQLAlchemy, pipelines of reads, and commits, counted
    while the test runs."""
    calls = {"statements": 0, "pipelines": 0, "commits": 0}

    def statement(*_: Any) -> None:
        calls["statements"] += 1

    def commit(*_: Any) -> None:
        calls["commits"] += 1

    read_pipelined = runner.read_pipelined  # type: ignore[attr-defined]

    def pipelined(*args: Any) -> Any:
        calls["pipelines"] += 1
        return read_pipelined(*args)

    monkeypatch.setattr(runner, "read_pipelined", pipelined)
    engine = get_engine()
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    yield calls
    event.remove(engine, "before_cursor_execute", statement)
    event.remove(engine, "commit", commit)


def test_a_job_reads_what_its_start_and_its_end_need_in_one_round_trip_each(
    env: dict[str, str], tenant: TenantHandle, postgres_calls: dict[str, int]
) -> None:
    job_id = _speech(tenant)
    prepare_kinds()
    postgres_calls.update(statements=0, pipelines=0, commits=0)

    result = runner.run_job(job_id, {})  # the trace context as RQ hands it over

    assert result is not None
    assert result.status == JobStatus.SUCCEEDED
    # Two transactions, two round trips each: one pipeline reads (its BEGIN, the lock, the tenant's
    # row and count, the endpoints, the outbox row), and the job's row goes with its event in the
    # pipeline that ends with the COMMIT: no statement of its own.
    assert postgres_calls == {"statements": 0, "pipelines": 2, "commits": 2}
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.status == JobStatus.SUCCEEDED
        assert job.attempt == 1
        assert job.progress == 1.0
        assert job.message == "done"
        assert job.started_at is not None
        assert job.finished_at is not None
        assert job.started_at <= job.finished_at
        assert job.artifact_key is not None
        assert job.artifact_byte_size
        assert session.get(JobOutbox, job_id) is None


def test_a_jobs_webhook_events_ride_along_with_its_transactions_round_trips(
    env: dict[str, str], tenant: TenantHandle, postgres_calls: dict[str, int]
) -> None:
    with session_scope() as session:
        endpoint = WebhookEndpoint(tenant_id=tenant.id, url="https://hooks.example.com/in")
        session.add(endpoint)
    job_id = _speech(tenant, 3)
    prepare_kinds()
    postgres_calls.update(statements=0, pipelines=0, commits=0)

    result = runner.run_job(job_id, {})

    assert result is not None
    assert result.status == JobStatus.SUCCEEDED
    # As many round trips as with no endpoint: each event with its delivery, and the deliverers'
    # NOTIFY, go with the job's row in the pipeline that ends with the COMMIT of its transaction.
    assert postgres_calls == {"statements": 0, "pipelines": 2, "commits": 2}
    with session_scope() as session:
        statement = text(
            "SELECT e.type, d.endpoint_id FROM webhook_events e"
            " JOIN webhook_deliveries d ON d.event_id = e.id"
            " WHERE e.job_id = :job_id ORDER BY d.created_at, d.id"
        )
        sent = session.execute(statement, {"job_id": job_id}).all()
    types = [event_type for event_type, _ in sent]
    assert types[:2] == [STATUS_EVENTS[JobStatus.QUEUED], STATUS_EVENTS[JobStatus.RUNNING]]
    assert types[-1] == STATUS_EVENTS[JobStatus.SUCCEEDED]
    assert {endpoint_id for _, endpoint_id in sent} == {endpoint.id}


def test_a_tenant_at_max_running_has_its_job_wait_in_the_outbox_without_running_it(
    env: dict[str, str], tenant: TenantHandle
) -> None:
    running, waiting = _speech(tenant, 1), _speech(tenant, 2)
    prepare_kinds()
    assert runner.start(running) is not None
    set_limits(tenant.id, max_running=1)

    assert runner.start(waiting) is None

    with session_scope() as session:
        job = session.get(Job, waiting)
        outbox = session.get(JobOutbox, waiting)
        assert job is not None
        assert job.status == JobStatus.QUEUED
        assert job.attempt == 0
        assert outbox is not None
        assert outbox.enqueued_at is None


def test_the_work_horse_runs_a_job_in_a_few_redis_round_trips_and_leaves_no_rq_record_of_it(
    env: dict[str, str], tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 20
    job_ids = [_speech(tenant, number) for number in range(count)]
    prepare_kinds()
    for job_id in job_ids:
        assert enqueue_job(job_id, "speech")
    sent = 0
    send = redis.connection.Connection.send_packed_command

    def counted(self: redis.connection.Connection, command: Any, check_health: bool = True) -> None:
        nonlocal sent
        sent += 1
        send(self, command, check_health)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counted)
    connection = get_redis()
    worker = HorseWorker([get_queue(name) for name in expand_queues([JOBS])], connection=connection)

    worker.work(burst=True, with_scheduler=False, logging_level="WARNING")

    monkeypatch.undo()
    with session_scope() as session:
        statuses = {session.get(Job, job_id).status for job_id in job_ids}  # type: ignore[union-attr]
    assert statuses == {JobStatus.SUCCEEDED}
    # RQ's own bookkeeping took 23 per job (worker state, suspension, job heartbeat, registry reads);
    # here: the take, the job's record, one before it runs and one after (with the worker's IDLE),
    # and the job's own (its listener checks and announcements). 13.6 before the start's two were one.
    assert sent / count <= 12.5, f"{sent / count:.1f} Redis round trips per job"
    leftovers = [key.decode() for key in Redis.from_url(env["REDIS_URL"]).keys("rq:*")]  # type: ignore[union-attr]
    for job_id in job_ids:
        assert not [key for key in leftovers if job_id in key], leftovers
    assert not [key for key in leftovers if key.startswith("rq:execution")], leftovers
    for name in expand_queues([JOBS]):
        assert get_queue(name).started_job_registry.count == 0
