"""Job rules: creation (with idempotency), the one place that changes status, progress."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pydantic
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from callbacks.events import publish_job_event
from service.db import after_commit
from service.errors import IdempotencyConflictError, ValidationError
from service.jobs.dispatch import enqueue_job
from service.jobs.models import Job, JobEvent, JobOutbox, JobStatus
from service.jobs.repository import JobRepository
from service.jobs.states import EVENT_TYPES, check_transition
from service.kinds.registry import get_kind
from service.models import utcnow
from service.settings import get_settings
from service.storage.base import StoredObject

MAX_IDEMPOTENCY_KEY = 200


def validate_input(kind_name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The kind's validated input as JSON, or a VALIDATION error naming the field."""
    kind = get_kind(kind_name)
    try:
        parsed = kind.input_model.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = [str(part) for part in first["loc"]]
        message = first["msg"].removeprefix("Value error, ")
        raise ValidationError(f"{'.'.join(field)}: {message}", field=["input", *field]) from exc
    dumped: dict[str, Any] = parsed.model_dump(mode="json")
    return dumped


def input_fingerprint(kind_name: str, params: dict[str, Any]) -> str:
    """SHA-256 of the kind and its canonical input: equal inputs, equal fingerprints."""
    canonical = json.dumps({"kind": kind_name, "input": params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def record_event(session: Session, job: Job, event_type: str, data: dict[str, Any] | None = None) -> None:
    """Append a line to the job's audit trail and publish its webhook event, in the caller's transaction."""
    session.add(JobEvent(job_id=job.id, tenant_id=job.tenant_id, type=event_type, data=data))
    publish_job_event(session, job, event_type, data)


def create_job(
    session: Session, tenant_id: str, kind_name: str, raw_input: dict[str, Any], idempotency_key: str | None
) -> Job:
    """A new QUEUED job, its first event and its outbox row; enqueued once the caller commits.

    With an idempotency key already used by this tenant: the same input returns the earlier job
    (nothing new is written or enqueued); a different input is an IDEMPOTENCY_CONFLICT.
    """
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise ValidationError(
            f"idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY} characters", field=["input", "idempotencyKey"]
        )
    params = validate_input(kind_name, raw_input)
    fingerprint = input_fingerprint(kind_name, params)
    jobs = JobRepository(session, tenant_id)
    if idempotency_key is not None:
        earlier = jobs.by_idempotency_key(idempotency_key)
        if earlier is not None:
            return _same_request_or_conflict(earlier, fingerprint)
    job = Job(
        tenant_id=tenant_id,
        kind=kind_name,
        input=params,
        input_hash=fingerprint,
        idempotency_key=idempotency_key,
    )
    jobs.stage(job)
    record_event(session, job, EVENT_TYPES[JobStatus.QUEUED], {"kind": kind_name})
    session.add(JobOutbox(job_id=job.id))
    if idempotency_key is None:
        session.flush()
    else:
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:
            # A concurrent request with the same key committed first: answer as it did.
            earlier = jobs.by_idempotency_key(idempotency_key)
            if earlier is None:
                raise
            return _same_request_or_conflict(earlier, fingerprint)
    after_commit(session, lambda: enqueue_job(job.id, kind_name))
    return job


def _same_request_or_conflict(earlier: Job, fingerprint: str) -> Job:
    if earlier.input_hash != fingerprint:
        raise IdempotencyConflictError(
            "this idempotencyKey was used with a different input", field=["input", "idempotencyKey"]
        )
    return earlier


def transition(
    session: Session,
    job: Job,
    target: JobStatus,
    *,
    message: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Move job to target (or raise InvalidStateError), stamping times and recording the event."""
    check_transition(JobStatus(job.status), target)
    now = utcnow()
    job.status = target
    if message is not None:
        job.message = message
    if target is JobStatus.RUNNING:
        job.attempt += 1
        job.started_at = now
    elif target in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED):
        job.finished_at = now
    if target is JobStatus.SUCCEEDED:
        job.progress = 1.0
    session.add(job)
    record_event(session, job, EVENT_TYPES[target], data)
    session.flush()


def report_progress(session: Session, job: Job, fraction: float, message: str | None) -> None:
    """Set progress (never backwards) and record a job.progress event at each milestone crossed."""
    fraction = min(max(fraction, 0.0), 1.0)
    crossed = [m for m in get_settings().progress_milestones if job.progress < m <= fraction]
    job.progress = max(job.progress, fraction)
    if message is not None:
        job.message = message
    session.add(job)
    for milestone in crossed:
        record_event(session, job, "job.progress", {"progress": milestone})
    session.flush()


def succeed(
    session: Session, job: Job, stored: StoredObject | None, *, filename: str, content_type: str
) -> None:
    """RUNNING → SUCCEEDED with the artifact's metadata."""
    if stored is not None:
        job.artifact_key = stored.key
        job.artifact_filename = filename
        job.artifact_content_type = content_type
        job.artifact_byte_size = stored.byte_size
        job.artifact_sha256 = stored.sha256
    artifact = (
        {"filename": filename, "byteSize": stored.byte_size, "sha256": stored.sha256} if stored else None
    )
    transition(session, job, JobStatus.SUCCEEDED, message="done", data={"artifact": artifact})


def fail(session: Session, job: Job, *, code: str, message: str, retryable: bool) -> None:
    """RUNNING → FAILED with an error a caller can read."""
    job.error_code = code
    job.error_message = message[:1000]
    job.error_retryable = retryable
    transition(session, job, JobStatus.FAILED, message="failed", data={"code": code, "retryable": retryable})
