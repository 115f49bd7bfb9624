"""Handing a committed job to RQ: one round trip to Redis with what the caller sends along, and RQ's
own uniqueness (a job RQ holds is not enqueued twice, nor its record overwritten)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis.connection
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus

from service.jobs import dispatch
from service.jobs.dispatch import RUN_JOB, TRACE_META, enqueue_job
from service.jobs.kinds import get_kind
from service.jobs.priority import JobPriority
from service.redis import get_queue, get_redis
from tests.conftest import TenantHandle, commit_job_without_enqueue


def _test_queue(priority: str) -> str:
    return f"dispatch-test-{priority.lower()}"


@pytest.fixture
def handed_over(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Jobs committed for the test's hand-overs, put on queues of their own that no worker of the
    session's takes from (one may be running), and taken out of RQ afterwards."""
    monkeypatch.setattr(dispatch, "queue_for", _test_queue)
    job_ids: list[str] = []
    yield job_ids
    for job_id in job_ids:
        with contextlib.suppress(NoSuchJobError):
            RQJob.fetch(job_id, connection=get_redis()).delete()
    for priority in JobPriority:
        get_queue(_test_queue(priority)).delete(delete_jobs=False)


def _speech(tenant: TenantHandle, job_ids: list[str], text: str) -> str:
    job_ids.append(commit_job_without_enqueue(tenant.id, "speech", {"text": text}))
    return job_ids[-1]


def _count_sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times a Redis client of this process sends (one per command or pipeline)."""
    sent = [0]
    send = redis.connection.Connection.send_packed_command

    def counted(self: redis.connection.Connection, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        send(self, command, check_health)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counted)
    return sent


def test_an_enqueue_and_what_goes_along_take_one_round_trip(
    tenant: TenantHandle, handed_over: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    warm, job_id = (_speech(tenant, handed_over, f"Hand over {n}.") for n in range(2))
    assert enqueue_job(warm, "speech")  # RQ asks the server's version once per connection
    sent = _count_sends(monkeypatch)

    queued = enqueue_job(
        job_id, "speech", priority=JobPriority.HIGH, along=lambda pipeline: pipeline.set(f"along:{job_id}", 1)
    )

    assert (queued, sent[0]) == (True, 1)
    assert get_redis().get(f"along:{job_id}") == b"1"
    queue = get_queue(_test_queue(JobPriority.HIGH))
    assert job_id in queue.get_job_ids()
    assert queue.key.encode() in get_redis().smembers(queue.redis_queues_keys)
    rq_job = RQJob.fetch(job_id, connection=get_redis())
    assert (rq_job.func_name, rq_job.args, rq_job.origin) == (RUN_JOB, (job_id,), queue.name)
    assert rq_job.get_status(refresh=False) == RQStatus.QUEUED
    assert rq_job.timeout == get_kind("speech").timeout_seconds
    assert (rq_job.result_ttl, rq_job.failure_ttl) == (0, 24 * 3600)
    assert TRACE_META in rq_job.meta


def test_a_job_rq_holds_is_neither_pushed_again_nor_overwritten_and_the_rest_still_goes(
    tenant: TenantHandle, handed_over: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _speech(tenant, handed_over, "Held already.")
    assert enqueue_job(job_id, "speech")
    get_redis().hset(RQJob.key_for(job_id), "status", RQStatus.STARTED.value)  # a worker took it
    sent = _count_sends(monkeypatch)

    queued = enqueue_job(job_id, "speech", along=lambda pipeline: pipeline.set(f"along:{job_id}", 2))

    assert (queued, sent[0]) == (False, 1)
    assert get_redis().get(f"along:{job_id}") == b"2"
    assert get_queue(_test_queue(JobPriority.NORMAL)).get_job_ids().count(job_id) == 1
    assert RQJob.fetch(job_id, connection=get_redis()).get_status(refresh=True) == RQStatus.STARTED
