"""What a job's webhook events say about it: the job as the GraphQL API names its fields."""

from __future__ import annotations

from typing import Any

from service.jobs.models import Job
from service.jobs.remediation import remediation


def job_data(job: Job) -> dict[str, Any]:
    """The job as webhooks show it; a job.succeeded attempt adds a fresh downloadUrl to its artifact."""
    error = (
        {
            "code": job.error_code,
            "message": job.error_message,
            "retryable": bool(job.error_retryable),
            "remediation": remediation(job.error_code),
        }
        if job.error_code
        else None
    )
    artifact = (
        {
            "filename": job.artifact_filename,
            "contentType": job.artifact_content_type,
            "byteSize": job.artifact_byte_size,
            "sha256": job.artifact_sha256,
        }
        if job.artifact_key
        else None
    )
    return {
        "job": {
            "id": job.id,
            "kind": job.kind,
            "status": job.status,
            "progress": job.progress,
            "message": job.message,
            "attempt": job.attempt,
            "idempotencyKey": job.idempotency_key,
            "priority": job.priority,
            "deadline": job.deadline_at.isoformat() if job.deadline_at else None,
            "deadLetteredAt": job.dead_lettered_at.isoformat() if job.dead_lettered_at else None,
            "createdAt": job.created_at.isoformat(),
            "startedAt": job.started_at.isoformat() if job.started_at else None,
            "finishedAt": job.finished_at.isoformat() if job.finished_at else None,
            "error": error,
            "artifact": artifact,
        }
    }
