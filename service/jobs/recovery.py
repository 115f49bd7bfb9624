"""Recovering jobs whose worker vanished (SIGKILL, a lost machine): no job stays non-terminal forever.

A running job's heartbeat is refreshed every JOB_HEARTBEAT_SECONDS by the process running it. When
it is older than JOB_STUCK_AFTER_SECONDS the run is presumed lost: the job is retried (while the
kind allows more attempts) or failed with WORKER_LOST; a job being canceled becomes CANCELED.
Overruns of a live worker are RQ's to stop (its job timeout raises inside the run).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import Session

from service.jobs import repository, service
from service.jobs.models import JobStatus
from service.kinds.registry import get_kind
from service.models import utcnow
from service.settings import get_settings

log = logging.getLogger(__name__)

LOST = "WORKER_LOST"


def recover_lost_runs(session: Session, *, limit: int = 100) -> int:
    """Retry, fail or finish canceling each job whose heartbeat stopped; how many."""
    cutoff = utcnow() - timedelta(seconds=get_settings().job_stuck_after_seconds)
    lost = repository.stale_running(session, heartbeat_before=cutoff, limit=limit)
    for job in lost:
        log.warning("job %s lost its worker (last heartbeat %s)", job.id, job.heartbeat_at)
        if job.status == JobStatus.CANCELING:
            service.transition(session, job, JobStatus.CANCELED, message="canceled")
            continue
        message = "the worker running this job stopped responding"
        try:
            attempts = get_kind(job.kind).max_attempts
        except KeyError:
            attempts = 0
        if job.attempt < attempts:
            service.retry_later(
                session, job, code=LOST, message=message, delay=service.retry_delay(job.attempt)
            )
        else:
            service.fail(session, job, code=LOST, message=message, retryable=True)
    return len(lost)
