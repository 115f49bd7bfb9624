"""The deadline sweep: a job not finished by its deadline ends FAILED with DEADLINE_EXCEEDED.

A QUEUED job past its deadline fails at once and never starts (a worker that takes it first fails it
too, service.jobs.runner.start); a RUNNING one is stopped the way a cancel is. The worker running it
notices first (its heartbeat watches the deadline); this sweep covers runs whose worker is gone or
slow to look.
"""

from __future__ import annotations

import logging

from sqlmodel import Session

from service.jobs import repository, service
from service.models import utcnow

log = logging.getLogger(__name__)


def enforce_deadlines(session: Session, *, limit: int = 200) -> int:
    """Fail or stop every unfinished job whose deadline passed (up to limit); how many."""
    overdue = repository.past_deadline(session, now=utcnow(), limit=limit)
    for job in overdue:
        log.info("job %s missed its deadline %s (%s)", job.id, job.deadline_at, job.status)
        service.miss_deadline(session, job)
    return len(overdue)
