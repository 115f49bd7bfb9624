"""Retention: finished jobs and their files are deleted after a while, in batches, file before row.

A succeeded job whose file is deleted before its row (RETENTION_ARTIFACT_DAYS shorter than
RETENTION_SUCCEEDED_DAYS, or the file vanished) becomes EXPIRED, as Shopify's bulk operations do.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import Session

from service.jobs import repository, service
from service.jobs.models import JobStatus
from service.models import utcnow
from service.settings import get_settings

log = logging.getLogger(__name__)


def expire_artifacts(session: Session) -> int:
    """Delete the files of succeeded jobs past RETENTION_ARTIFACT_DAYS; those jobs become EXPIRED."""
    settings = get_settings()
    cutoff = utcnow() - timedelta(days=settings.retention_artifact_days)
    jobs = repository.finished_before(session, JobStatus.SUCCEEDED, cutoff, settings.retention_batch)
    for job in jobs:
        service.expire(session, job, "the file has expired")
    return len(jobs)


def delete_old_jobs(session: Session) -> int:
    """Delete finished jobs past their status's retention, each file before its row."""
    settings = get_settings()
    now = utcnow()
    keep_days = {
        JobStatus.SUCCEEDED: settings.retention_succeeded_days,
        JobStatus.EXPIRED: settings.retention_succeeded_days,
        JobStatus.CANCELED: settings.retention_canceled_days,
        JobStatus.FAILED: settings.retention_failed_days,
    }
    deleted = 0
    for status, days in keep_days.items():
        cutoff = now - timedelta(days=days)
        jobs = repository.finished_before(session, status, cutoff, settings.retention_batch)
        for job in jobs:
            service.delete(session, job)
        deleted += len(jobs)
    if deleted:
        log.info("retention deleted %d finished job(s)", deleted)
    return deleted
