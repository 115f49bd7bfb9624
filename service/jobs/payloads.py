"""What a job's webhook events say about it: the job as the GraphQL API names its fields."""

from __future__ import annotations

from typing import Any

from service.jobs.models import Job
from service.jobs.remediation import remediation
from service.webhooks.events import CATALOG, JobArtifact, JobError, JobSnapshot


def job_snapshot(job: Job) -> JobSnapshot:
    """The job as webhooks show it; a job.succeeded attempt adds a fresh downloadUrl to its artifact."""
    error = (
        JobError(
            code=job.error_code,
            message=job.error_message or "",
            retryable=bool(job.error_retryable),
            remediation=remediation(job.error_code),
        )
        if job.error_code
        else None
    )
    artifact = (
        JobArtifact(
            filename=job.artifact_filename or "",
            content_type=job.artifact_content_type,
            byte_size=job.artifact_byte_size,
            sha256=job.artifact_sha256,
        )
        if job.artifact_key
        else None
    )
    return JobSnapshot(
        id=job.id,
        kind=job.kind,
        status=job.status,
        progress=job.progress,
        message=job.message,
        attempt=job.attempt,
        idempotency_key=job.idempotency_key,
        priority=job.priority,
        deadline=job.deadline_at.isoformat() if job.deadline_at else None,
        dead_lettered_at=job.dead_lettered_at.isoformat() if job.dead_lettered_at else None,
        created_at=job.created_at.isoformat(),
        started_at=job.started_at.isoformat() if job.started_at else None,
        finished_at=job.finished_at.isoformat() if job.finished_at else None,
        error=error,
        artifact=artifact,
    )


def job_event_data(event_type: str, job: Job, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The `data` of a job event, built by its catalog model: the job, and what the event adds."""
    return CATALOG[event_type].build(job=job_snapshot(job), **(extra or {}))
