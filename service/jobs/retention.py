"""Retention: finished jobs and their files are deleted after a while, in batches, file before row.

A succeeded job whose file is deleted before its row (RETENTION_ARTIFACT_DAYS shorter than
RETENTION_SUCCEEDED_DAYS, or the file vanished) becomes EXPIRED, as Shopify's bulk operations do.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import Session, col, select

from service.jobs import service
from service.jobs.models import Job, JobStatus
from service.models import utcnow
from service.settings import get_settings
from service.storage.factory import get_storage

log = logging.getLogger(__name__)


def expire_artifacts(session: Session) -> int:
    """Delete the files of succeeded jobs past RETENTION_ARTIFACT_DAYS; those jobs become EXPIRED."""
    settings = get_settings()
    cutoff = utcnow() - timedelta(days=settings.retention_artifact_days)
    jobs = session.exec(
        select(Job)
        .where(Job.status == JobStatus.SUCCEEDED, col(Job.finished_at) < cutoff)
        .order_by(col(Job.finished_at))
        .limit(settings.retention_batch)
        .with_for_update(skip_locked=True)
    ).all()
    for job in jobs:
        expire(session, job)
    return len(jobs)


def expire(session: Session, job: Job) -> None:
    """The job's file is gone (or goes now): SUCCEEDED → EXPIRED."""
    if job.artifact_key:
        get_storage().delete(job.artifact_key)
    service.transition(session, job, JobStatus.EXPIRED, message="the file has expired")


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
        jobs = session.exec(
            select(Job)
            .where(Job.status == status, col(Job.finished_at) < now - timedelta(days=days))
            .order_by(col(Job.finished_at))
            .limit(settings.retention_batch)
            .with_for_update(skip_locked=True)
        ).all()
        for job in jobs:
            service.delete(session, job)
        deleted += len(jobs)
    if deleted:
        log.info("retention deleted %d finished job(s)", deleted)
    return deleted
