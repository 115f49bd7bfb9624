"""Recovering jobs whose worker vanished (SIGKILL, a lost machine): no job stays non-terminal forever.

A worker's supervisor recovers a job at once when the horse running it dies (CRASHED) or overruns
its limit (TIMEOUT): recover_dead_run. When the whole worker is gone, the scheduler notices: a running
job's heartbeat is refreshed every JOB_HEARTBEAT_SECONDS by the process running it, and when it is
older than JOB_STUCK_AFTER_SECONDS the run is presumed lost: the job is retried (while the kind allows
more attempts) or failed with WORKER_LOST; a job being canceled becomes CANCELED. A run still going
past its kind's timeout (plus the same margin) is retried or failed with TIMEOUT; a late result from
it is ignored, since only a RUNNING job can succeed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import Session

from service.jobs import repository, service
from service.jobs.kinds import all_kinds, get_kind
from service.jobs.models import Job, JobStatus
from service.models import utcnow
from service.settings import get_settings

log = logging.getLogger(__name__)

LOST = "WORKER_LOST"
TIMEOUT = "TIMEOUT"
CRASHED = "CRASHED"


def recover_lost_runs(session: Session, *, limit: int = 100) -> int:
    """Retry, fail or finish canceling each job whose heartbeat stopped or that overran its kind's
    timeout; how many."""
    margin = timedelta(seconds=get_settings().job_stuck_after_seconds)
    lost = repository.stale_running(session, heartbeat_before=utcnow() - margin, limit=limit)
    for job in lost:
        log.warning("job %s lost its worker (last heartbeat %s)", job.id, job.heartbeat_at)
        if job.status == JobStatus.CANCELING:
            service.finish_stopped(session, job)
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
        log.warning("job %s ran past its %s s timeout", job.id, timeout)
        _retry_or_fail(session, job, TIMEOUT, f"the job ran past its {timeout} s limit")
        overran += 1
    return len(lost) + overran


def recover_dead_run(session: Session, job_id: str, *, code: str, message: str) -> Job | None:
    """The process running the job died or was killed: retry or fail it now (CANCELING: CANCELED);
    the job as it is afterwards, or None when it is gone."""
    job = repository.lock_job(session, job_id)
    if job is None:
        return None
    if job.status == JobStatus.CANCELING:
        service.finish_stopped(session, job)
    elif job.status == JobStatus.RUNNING:
        _retry_or_fail(session, job, code, message)
    return job


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
