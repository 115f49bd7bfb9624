"""Handing committed jobs to RQ: after commit, and again from the sweep until a worker takes them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from opentelemetry.trace import SpanKind
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.scripts import UNIQUE_ENQUEUE_SCRIPT, _build_hset_args
from sqlmodel import Session

from observability.metrics import OUTBOX_SAMPLE, OutboxReading, record_outbox_reenqueued
from observability.tracing import continue_trace, inject
from service.jobs import repository
from service.jobs.kinds import get_kind
from service.jobs.priority import ORDERED_QUEUES, queue_for
from service.models import utcnow
from service.outages import describe, is_outage
from service.redis import get_queue, get_redis
from service.settings import get_settings

log = logging.getLogger(__name__)

RUN_JOB = "service.jobs.tasks.run_job"
TRACE_META = "trace"
Carrier = Mapping[str, str] | None


def enqueue_job(
    job_id: str,
    kind_name: str,
    carrier: Carrier = None,
    *,
    link_only: bool = False,
    priority: str = "NORMAL",
    along: Callable[[Pipeline], object] | None = None,
) -> bool:
    """Put the job on its priority's RQ queue under its own id; False when RQ already holds it.

    One round trip to Redis: RQ's unique enqueue, and along's commands (the caller's own, sent
    whatever RQ answers), go in one pipeline. An `enqueue` span continues the trace in carrier (the
    request's, stored with the job), or links to it (a sweep's re-enqueue); RQ job meta carries the
    context on to the worker.
    """
    with continue_trace("job.enqueue", carrier, kind=SpanKind.PRODUCER, link_only=link_only, job_id=job_id):
        queue = get_queue(queue_for(priority))
        job = queue.create_job(
            RUN_JOB,
            args=(job_id,),
            job_id=job_id,
            timeout=get_kind(kind_name).timeout_seconds,  # RQ's SIGALRM in the horse
            result_ttl=0,
            failure_ttl=24 * 3600,
            description=f"{kind_name} {job_id}",
            meta={TRACE_META: inject()},
        )
        with queue.connection.pipeline(transaction=False) as pipeline:
            enqueued = _unique_enqueue(queue, job, pipeline)
            if along is not None:
                along(pipeline)
            answers = pipeline.execute()
        return bool(answers[enqueued])


def _unique_enqueue(queue: Queue, job: RQJob, pipeline: Pipeline) -> int:
    """RQ's `queue.enqueue_job(job, unique=True)` for a job without dependencies, queued on pipeline
    instead of sent at once: the queue's entry in RQ's set of queues, then RQ's own script, which saves
    and pushes the job unless RQ holds one by its id. (RQ runs that script on its own connection before
    the caller's pipeline: a round trip more.) By EVAL: a script run by SHA in a pipeline costs a round
    trip to check it is loaded. Returns where the script's answer will be among the pipeline's (1:
    saved and pushed; 0: RQ holds the id)."""
    queue._prepare_for_queue(job)  # origin, enqueued_at, status: what RQ sets before saving
    pipeline.sadd(queue.redis_queues_keys, queue.key)
    ttl = job.ttl if job.ttl is not None else -1
    fields = _build_hset_args(job)  # type: ignore[no-untyped-call]
    pipeline.eval(UNIQUE_ENQUEUE_SCRIPT, 2, job.key, queue.key, job.id, "R", ttl, *fields)
    return len(pipeline) - 1


def enqueue_afresh(job_id: str, kind_name: str, carrier: Carrier, *, priority: str) -> bool:
    """Enqueue a job that RQ may remember from an earlier run (canceled, failed): that record goes first,
    or RQ's uniqueness would refuse the job until the sweep noticed. Only for a job no worker runs."""
    with contextlib.suppress(NoSuchJobError):
        RQJob.fetch(job_id, connection=get_redis()).delete()
    return enqueue_job(job_id, kind_name, carrier, priority=priority)


def drop_waiting(job_ids: list[str]) -> int:
    """Delete these jobs from RQ where they still wait in the queue (their outbox rows bring them back);
    how many. Two round trips whatever the number."""
    redis = get_redis()
    jobs = [job for job in RQJob.fetch_many(job_ids, connection=redis) if job is not None]
    waiting = [job for job in jobs if job.get_status(refresh=False) == RQStatus.QUEUED]
    with redis.pipeline() as pipe:
        for job in waiting:
            job.delete(pipeline=pipe)
        pipe.execute()
    return len(waiting)


def dequeue_job(job_id: str) -> None:
    """Take a job off the RQ queue if it is still waiting there (a canceled job)."""
    try:
        RQJob.fetch(job_id, connection=get_redis()).cancel()
    except NoSuchJobError:
        pass
    except Exception as error:
        # The worker that takes it anyway sees a CANCELED job and skips it.
        log.warning("could not remove job %s from RQ: %s", job_id, error, exc_info=not is_outage(error))


def _ensure_in_rq(
    job_id: str, kind_name: str, carrier: Carrier, priority: str, waiting: Callable[[], set[str]]
) -> bool:
    """Enqueue a job no worker has started, replacing an RQ entry that will not start it.

    waiting() gives the ids on the RQ job queues (read once per sweep, only if needed).
    """
    if job_id in waiting():
        return False  # waiting its turn (the common case in a backlog: no further Redis calls)
    if enqueue_job(job_id, kind_name, carrier, link_only=True, priority=priority):
        return True
    try:
        rq_job = RQJob.fetch(job_id, connection=get_redis())
    except NoSuchJobError:
        return enqueue_job(job_id, kind_name, carrier, link_only=True, priority=priority)
    status = rq_job.get_status(refresh=False)
    if status == RQStatus.STARTED and not _too_long_ago(rq_job.started_at):
        return False  # a worker took it just now and is starting it
    # Where a worker on this one queue moves a job it takes (on several, RQ pops without it).
    taking = get_queue(rq_job.origin or queue_for(priority)).intermediate_queue
    if status == RQStatus.QUEUED and job_id in taking.get_job_ids():
        taking.set_first_seen(job_id)
        if not _too_long_ago(taking.get_first_seen(job_id)):
            return False  # a worker is taking it off the queue right now
    # RQ ran it, or a worker took it and died before starting it (RQ still says started, or queued
    # while no queue holds it), yet Postgres says no run began (or a retry is due): run it again.
    # A run that does begin first makes the other one a no-op (only a QUEUED job starts).
    taking.remove(job_id)
    rq_job.delete()
    return enqueue_job(job_id, kind_name, carrier, link_only=True, priority=priority)


def _too_long_ago(taken: datetime | None) -> bool:
    """Whether a worker took the job longer ago than a live one needs to start it (fork, then the
    QUEUED → RUNNING commit): the job's stuck-run threshold."""
    if taken is None:
        return True
    if taken.tzinfo is None:
        taken = taken.replace(tzinfo=UTC)
    return (datetime.now(UTC) - taken).total_seconds() > get_settings().job_stuck_after_seconds


def sweep_outbox(session: Session, *, grace_seconds: float, limit: int = 500) -> int:
    """Make sure every job committed but not yet taken by a worker is in RQ; returns how many were not.

    A job stays in the outbox until a worker starts it, so this also restores jobs that a lost or
    flushed Redis forgot. Each row is checked at most once per grace period.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=grace_seconds)
    due = repository.claim_outbox_due(session, cutoff=cutoff, limit=limit)
    enqueued = 0
    on_queue: set[str] | None = None

    def waiting() -> set[str]:
        nonlocal on_queue
        if on_queue is None:
            on_queue = {job_id for name in ORDERED_QUEUES for job_id in get_queue(name).get_job_ids()}
        return on_queue

    checked = []
    for job_id, kind, carrier, priority in due:
        try:
            enqueued += _ensure_in_rq(job_id, kind, carrier, priority, waiting)
        except Exception as error:
            if is_outage(error):  # Redis is away: the rest would fail alike; all wait for the next round
                log.warning("outbox sweep stopped, Redis unavailable: %s", describe(error))
                break
            # One bad row (an unknown kind, say) must not keep the others waiting.
            log.exception("outbox sweep could not enqueue job %s; will retry", job_id)
        checked.append(job_id)
    repository.mark_outbox_checked(session, checked, now)
    if enqueued:
        log.warning("outbox sweep enqueued %d job(s) that RQ did not hold", enqueued)
        record_outbox_reenqueued(enqueued)
    return enqueued


def read_outbox(session: Session, *, sample: int = OUTBOX_SAMPLE) -> OutboxReading:
    """The jobs ready to run that no worker has started (the oldest ``sample`` of them): how long the
    oldest has waited, and those RQ does not hold (a lost enqueue the sweep has not repaired yet)."""
    now = utcnow()
    ready = repository.ready_outbox(session, now=now, limit=sample)
    if not ready:
        return OutboxReading(oldest_queued_seconds=0.0, lag_seconds=0.0, missing_from_queue=0)
    held = _held_by_rq([job_id for job_id, _ in ready])
    missing = [ready_since for job_id, ready_since in ready if job_id not in held]
    return OutboxReading(
        oldest_queued_seconds=max(0.0, (now - ready[0][1]).total_seconds()),
        lag_seconds=max(0.0, (now - missing[0]).total_seconds()) if missing else 0.0,
        missing_from_queue=len(missing),
    )


_HELD = {RQStatus.QUEUED.value, RQStatus.STARTED.value}


def _held_by_rq(job_ids: list[str]) -> set[str]:
    """Those of these jobs that RQ holds, waiting or taken by a worker (one round trip); none while
    Redis cannot be asked, since then no worker can take them either."""
    try:
        with get_redis().pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(RQJob.key_for(job_id), "status")
            statuses = pipe.execute()
    except RedisError:
        return set()
    return {
        job_id
        for job_id, status in zip(job_ids, statuses, strict=True)
        if status is not None and status.decode() in _HELD
    }
