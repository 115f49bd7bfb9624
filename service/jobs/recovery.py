"""Recovering jobs whose worker vanished (SIGKILL, a lost machine): no job stays non-terminal forever.

A running job's heartbeat is refreshed every JOB_HEARTBEAT_SECONDS by the process running it. When
it is older than JOB_STUCK_AFTER_SECONDS the run is presumed lost: the job is retried (while the
kind allows more attempts) or failed with WORKER_LOST; a job being canceled becomes CANCELED. A
live run past its kind's timeout (plus the same margin) is stopped in RQ and retried or failed
with TIMEOUT; a late result from it is ignored, since only a RUNNING job can succeed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from rq.command import send_stop_job_command
from sqlmodel import Session

from service.jobs import repository, service
from service.jobs.kinds import all_kinds, get_kind
from service.jobs.models import Job, JobStatus
from service.models import utcnow
from service.redis import get_redis
from service.settings import get_settings

log = logging.getLogger(__name__)

LOST = "WORKER_LOST"
TIMEOUT = "TIMEOUT"


def recover_lost_runs(session: Session, *, limit: int = 100) -> int:
    """Retry, fail or finish canceling each job whose heartbeat stopped or that overran its kind's
    timeout; how many."""
    margin = timedelta(seconds=get_settings().job_stuck_after_seconds)
    lost = repository.stale_running(session, heartbeat_before=utcnow() - margin, limit=limit)
    for job in lost:
        log.warning("job %s lost its worker (last heartbeat %s)", job.id, job.heartbeat_at)
        if job.status == JobStatus.CANCELING:
            service.transition(session, job, JobStatus.CANCELED, message="canceled")
        else:
            _retry_or_fail(session, job, LOST, "the worker running this job stopped responding")
    overran = 0
    shortest = min((kind.timeout_seconds for kind in all_kinds()), default=0)
    started_before = utcnow() - margin - timedelta(seconds=shortest)
    for job in repository.running_since(session, started_before=started_before, limit=limit):
        timeout = _kind_timeout(job.kind)
        assert job.started_at is not None
        if timeout is None or utcnow() - job.started_at < timedelta(seconds=timeout) + margin:
            continue
        log.warning("job %s ran past its %s s timeout; stopping it", job.id, timeout)
        _stop_in_rq(job.id)
        _retry_or_fail(session, job, TIMEOUT, f"the job ran past its {timeout} s limit")
        overran += 1
    return len(lost) + overran


def _kind_timeout(name: str) -> int | None:
    try:
        return get_kind(name).timeout_seconds
    except KeyError:
        return None


def _retry_or_fail(session: Session, job: Job, code: str, message: str) -> None:
    try:
        attempts = get_kind(job.kind).max_attempts
    except KeyError:
        attempts = 0
    if job.attempt < attempts:
        service.retry_later(session, job, code=code, message=message, delay=service.retry_delay(job.attempt))
    else:
        service.fail(session, job, code=code, message=message, retryable=True)


def _stop_in_rq(job_id: str) -> None:
    """Ask the RQ worker running it to kill its work horse (its late result is ignored anyway)."""
    try:
        send_stop_job_command(get_redis(), job_id)
    except Exception as error:
        log.info("could not stop job %s in RQ: %s", job_id, error)
