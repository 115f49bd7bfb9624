"""The transactional outbox: a job committed to Postgres runs even if its enqueue is lost or Redis is wiped.

The scheduler's sweep (`service.scheduler.run_once`) is called in this process; the worker and the API
are the real session processes, and what the tests assert is what a tenant sees through GraphQL.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from redis import Redis
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus

from service.db import session_scope
from service.jobs.dispatch import RUN_JOB, enqueue_job, sweep_outbox
from service.redis import get_queue, get_redis
from service.scheduler import run_once
from tests.conftest import JOB_QUERY, SPEECH_MUTATION, GraphQLClient, TenantHandle, commit_job_without_enqueue
from tests.servers import ServiceProcess

GRACE_SECONDS = 0.5  # OUTBOX_GRACE_SECONDS in tests/servers.py:service_env
PAST_GRACE = GRACE_SECONDS + 0.5
STUCK_AFTER_SECONDS = 3  # JOB_STUCK_AFTER_SECONDS in tests/servers.py:service_env


def _rq_holds(job_id: str) -> bool:
    return RQJob.exists(job_id, connection=get_redis())


def _event_counts(job: dict[str, object]) -> Counter[str]:
    events = job["events"]
    assert isinstance(events, list)
    return Counter(event["type"] for event in events)


def _assert_ran_once(job: dict[str, object]) -> None:
    assert job["status"] == "SUCCEEDED", job
    assert job["attempt"] == 1
    counts = _event_counts(job)
    assert counts["job.queued"] == counts["job.started"] == counts["job.succeeded"] == 1, counts


def test_a_job_whose_enqueue_was_lost_is_enqueued_by_the_sweep_and_runs(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    job_id = commit_job_without_enqueue(tenant.id, "speech", {"text": "Lost between commit and enqueue."})
    assert not _rq_holds(job_id)

    time.sleep(PAST_GRACE)  # the worker is running, yet nothing can reach the job
    stranded = gql(JOB_QUERY, {"id": job_id})["job"]
    assert stranded["status"] == "QUEUED"
    assert stranded["attempt"] == 0
    assert stranded["startedAt"] is None
    assert not _rq_holds(job_id)

    assert run_once() >= 1
    job = gql.wait_for_job(job_id)
    _assert_ran_once(job)
    assert job["artifact"]["contentType"] == "audio/wav", worker.log()[-3000:]

    run_once()  # a started job has left the outbox: later sweeps never hand it to RQ again
    assert not _rq_holds(job_id)


def test_a_job_a_worker_took_off_the_queue_and_died_with_runs_again(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    job_id = commit_job_without_enqueue(tenant.id, "speech", {"text": "Taken, then dropped."})
    # What a worker killed between taking the job and starting it leaves: RQ's record says queued,
    # but no queue holds the job any more.
    get_queue().create_job(RUN_JOB, args=(job_id,), job_id=job_id, status=RQStatus.QUEUED).save()
    assert _rq_holds(job_id)
    assert job_id not in get_queue().get_job_ids()

    time.sleep(PAST_GRACE)
    assert run_once() >= 1
    _assert_ran_once(gql.wait_for_job(job_id))


def test_a_job_a_worker_is_starting_is_left_alone_until_it_is_clearly_stuck(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    job_id = commit_job_without_enqueue(tenant.id, "speech", {"text": "Taken, slow to start."})
    taken = get_queue().create_job(RUN_JOB, args=(job_id,), job_id=job_id, status=RQStatus.STARTED)
    taken.started_at = datetime.now(UTC)  # a worker took it just now (RQ's record of a live start)
    taken.save()

    def stale() -> None:  # no live worker takes this long to start a job: that one died
        taken.started_at = datetime.now(UTC) - timedelta(seconds=STUCK_AFTER_SECONDS + 1)
        taken.save()

    _left_alone_until_stale(gql, job_id, stale)


def test_a_job_a_worker_is_taking_off_the_queue_is_left_alone_until_it_is_clearly_stuck(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    job_id = commit_job_without_enqueue(tenant.id, "speech", {"text": "Being taken, then dropped."})
    get_queue().create_job(RUN_JOB, args=(job_id,), job_id=job_id, status=RQStatus.QUEUED).save()
    taking = get_queue().intermediate_queue  # RQ moves a job here as a worker takes it
    get_redis().lpush(taking.key, job_id)

    def stale() -> None:  # RQ first saw it there long ago: the worker taking it died
        stuck_since = datetime.now(UTC) - timedelta(seconds=STUCK_AFTER_SECONDS + 1)
        get_redis().set(taking.get_first_seen_key(job_id), stuck_since.timestamp())

    _left_alone_until_stale(gql, job_id, stale)
    assert job_id not in taking.get_job_ids()


def _left_alone_until_stale(gql: GraphQLClient, job_id: str, stale: Callable[[], None]) -> None:
    """The sweep leaves a job a worker is starting alone (running it again would run it twice) until
    stale() makes that start look abandoned; then it runs the job, once."""
    time.sleep(PAST_GRACE)
    assert run_once() == 0
    assert _rq_holds(job_id)
    assert gql(JOB_QUERY, {"id": job_id})["job"]["status"] == "QUEUED"
    stale()
    time.sleep(PAST_GRACE)
    assert run_once() >= 1
    _assert_ran_once(gql.wait_for_job(job_id))


def test_the_sweep_leaves_a_job_younger_than_the_grace_period_alone(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    job_id = commit_job_without_enqueue(tenant.id, "speech", {"text": "Still within the grace period."})

    with session_scope() as session:
        sweep_outbox(session, grace_seconds=60)
    assert not _rq_holds(job_id)
    time.sleep(0.5)
    assert gql(JOB_QUERY, {"id": job_id})["job"]["status"] == "QUEUED"

    with session_scope() as session:  # once it is older than the grace period, the sweep takes it
        assert sweep_outbox(session, grace_seconds=0) >= 1
    _assert_ran_once(gql.wait_for_job(job_id))


def test_a_double_enqueue_runs_the_job_once(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    job_id = commit_job_without_enqueue(tenant.id, "speech", {"text": "Enqueued twice, run once."})

    # While RQ holds the job, a second enqueue (after-commit hook and sweep racing) is refused by RQ.
    assert [enqueue_job(job_id, "speech"), enqueue_job(job_id, "speech")] == [True, False]
    with session_scope() as session:
        sweep_outbox(session, grace_seconds=0)
    first = gql.wait_for_job(job_id)
    _assert_ran_once(first)

    # Once RQ has forgotten it (results are not kept), a late enqueue does reach a worker again...
    assert not _rq_holds(job_id)
    assert enqueue_job(job_id, "speech") is True
    deadline = time.monotonic() + 30
    while _rq_holds(job_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _rq_holds(job_id), "the worker never took the second enqueue"

    # ...and the worker leaves the finished job exactly as it was.
    again = gql(JOB_QUERY, {"id": job_id})["job"]
    _assert_ran_once(again)
    assert again["artifact"]["sha256"] == first["artifact"]["sha256"]
    assert again["finishedAt"] == first["finishedAt"]


def test_a_job_survives_redis_losing_everything_before_a_worker_took_it(
    gql: GraphQLClient, worker: ServiceProcess, redis_url: str
) -> None:
    worker.stop()  # no worker, so the job waits in Redis when Redis loses it
    try:
        payload = gql(SPEECH_MUTATION, {"input": {"text": "Redis forgot me."}})["generateSpeech"]
        assert payload["userErrors"] == []
        job_id = payload["job"]["id"]
        assert _rq_holds(job_id)
        assert job_id in get_queue().get_job_ids()

        Redis.from_url(redis_url).flushall()
        assert not _rq_holds(job_id)
        assert get_queue().count == 0

        time.sleep(PAST_GRACE)
        assert run_once() >= 1
        assert _rq_holds(job_id)
        assert job_id in get_queue().get_job_ids()
    finally:
        worker.start()

    _assert_ran_once(gql.wait_for_job(job_id))


def test_a_running_worker_keeps_working_after_redis_loses_everything(
    gql: GraphQLClient, worker: ServiceProcess, redis_url: str
) -> None:
    warm = gql(SPEECH_MUTATION, {"input": {"text": "Before the flush."}})["generateSpeech"]["job"]["id"]
    _assert_ran_once(gql.wait_for_job(warm))  # the worker is up and idle, waiting on the queue

    Redis.from_url(redis_url).flushall()

    payload = gql(SPEECH_MUTATION, {"input": {"text": "After the flush."}})["generateSpeech"]
    assert payload["userErrors"] == []
    job = gql.wait_for_job(payload["job"]["id"])
    assert job["status"] == "SUCCEEDED", worker.log()[-3000:]


def test_one_unrunnable_outbox_row_does_not_block_the_sweep(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    from service.jobs import kinds as registry
    from service.jobs.kinds import Kind
    from service.kinds.speech import SpeechInput

    registry.register(
        Kind(name="test-gone", input_model=SpeechInput, handler=lambda c, p: None, content_type="x/y")
    )
    try:
        bad = commit_job_without_enqueue(tenant.id, "test-gone", {"text": "older and unrunnable"})
    finally:
        del registry._KINDS["test-gone"]
    good = commit_job_without_enqueue(tenant.id, "speech", {"text": "Younger and fine."})
    time.sleep(PAST_GRACE)

    with session_scope() as session:
        assert sweep_outbox(session, grace_seconds=GRACE_SECONDS) >= 1
    assert _rq_holds(good)
    assert not _rq_holds(bad)
    _assert_ran_once(gql.wait_for_job(good))
