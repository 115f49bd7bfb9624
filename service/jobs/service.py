"""Job rules: creation (with idempotency and the tenant's limits), the one place that changes
status, progress, retries, cancel and delete, and the reads the API and exports need."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from observability.metrics import record_job_created, record_job_finished, record_rate_limited
from observability.tracing import inject, set_ids
from service.db import PendingRead, after_commit, defer_writes, flush, read_together
from service.errors import (
    ForbiddenError,
    IdempotencyConflictError,
    InvalidStateError,
    NotFoundError,
    QuotaExceededError,
    ValidationError,
)
from service.ids import has_prefix, new_id
from service.jobs import repository
from service.jobs.dispatch import dequeue_job, enqueue_afresh, enqueue_job
from service.jobs.kinds import get_kind, kind_names
from service.jobs.models import TERMINAL_STATUSES, Job, JobEvent, JobOutbox, JobStatus
from service.jobs.payloads import job_event_data
from service.jobs.priority import RANKS, JobPriority, highest_allowed
from service.jobs.repository import JobRepository
from service.jobs.states import STATUS_EVENTS, check_transition
from service.jobs.updates import announce, announce_new
from service.models import construct, utcnow
from service.plans import Limits
from service.principal import Principal
from service.settings import get_settings
from service.storage.base import StoredObject
from service.storage.factory import get_storage
from service.tenants.service import check_rate
from service.webhooks.events import DEADLINE_AT_RISK, JOB_EVENT_TYPES, JOB_REQUEUED
from service.webhooks.service import endpoints_read, forget_artifact, listening_read, publish

MAX_IDEMPOTENCY_KEY = 200
MIN_PROGRESS_FOR_ESTIMATE = 0.05
MIN_SECONDS_FOR_ESTIMATE = 1.0
MAX_PAGE = 100
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


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
    repository.add_event(session, job, event_type, data)
    _publish_event(session, job, event_type, data)


def _publish_event(session: Session, job: Job, event_type: str, data: dict[str, Any] | None) -> None:
    """The webhook event of a job's audit-trail line (job events only)."""
    if event_type in JOB_EVENT_TYPES:
        artifact_key = job.artifact_key if event_type == STATUS_EVENTS[JobStatus.SUCCEEDED] else None
        publish(
            session,
            job.tenant_id,
            event_type,
            lambda: job_event_data(event_type, job, data),
            job_id=job.id,
            artifact_key=artifact_key,
        )


def create_job(
    session: Session,
    caller: Principal | str,
    kind_name: str,
    raw_input: dict[str, Any],
    idempotency_key: str | None,
    *,
    priority: JobPriority = JobPriority.NORMAL,
    deadline: datetime | None = None,
) -> Job:
    """A new QUEUED job of the caller's tenant, its first event and its outbox row; enqueued once the
    caller commits. A principal brings its tenant's limits; a tenant id has them read. Without an
    idempotency key the new rows are held for the caller's COMMIT (service.db.defer_writes): the
    checks' reads are one round trip to Postgres, the writes and the COMMIT another.

    With an idempotency key already used by this tenant: the same input returns the earlier job
    (nothing new is written or enqueued, and no rate-limit token is taken); a different input is an
    IDEMPOTENCY_CONFLICT. Keys live as long as their job: nothing removes a job (and so its key)
    before retention, which is over 24 h. The tenant's plan applies: RATE_LIMITED past its mutation
    rate, text over max_text_chars is a VALIDATION error, and a tenant already holding max_queued
    QUEUED jobs gets QUOTA_EXCEEDED (a soft cap: requests racing each other may pass it by their number).
    A priority above the plan's max_priority is FORBIDDEN; a deadline must lie between
    JOB_DEADLINE_MIN_SECONDS and JOB_DEADLINE_MAX_SECONDS from now (else VALIDATION).
    """
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise ValidationError(
            f"idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY} characters", field=["input", "idempotencyKey"]
        )
    tenant_id = caller.tenant_id if isinstance(caller, Principal) else caller
    jobs = JobRepository(session, tenant_id)
    earlier = jobs.by_idempotency_key(idempotency_key) if idempotency_key is not None else None
    if earlier is not None:
        return _same_request_or_conflict(
            earlier, input_fingerprint(kind_name, validate_input(kind_name, raw_input))
        )
    listening = listening_read(session, tenant_id)  # asked with the rate check: its first event needs it
    limits = check_rate(session, caller, [listening] if listening is not None else [])
    check_priority(priority, limits)
    deadline = check_deadline(deadline)
    text = raw_input.get("text")
    if isinstance(text, str) and len(text) > limits.max_text_chars:
        raise ValidationError(
            f"text: must be at most {limits.max_text_chars} characters on this plan", field=["input", "text"]
        )
    params = validate_input(kind_name, raw_input)
    fingerprint = input_fingerprint(kind_name, params)
    check_queued_quota(jobs, limits)
    job_id = new_id("job")
    set_ids(job_id=job_id, tenant_id=tenant_id)  # the request's span and what follows carry them
    job = construct(
        Job,
        id=job_id,
        tenant_id=tenant_id,
        kind=kind_name,
        input=params,
        input_hash=fingerprint,
        idempotency_key=idempotency_key,
        priority=priority,
        deadline_at=deadline,
        trace_context=inject(),
    )
    event_type, event_data = STATUS_EVENTS[JobStatus.QUEUED], {"kind": kind_name}

    def write() -> None:
        repository.insert_queued(session, job, event_type, event_data)
        _publish_event(session, job, event_type, event_data)

    if idempotency_key is None:
        defer_writes(session)  # nothing reads the new rows back: they go with the COMMIT
        write()
    else:
        try:
            with session.begin_nested():
                write()
        except IntegrityError:
            # A concurrent request with the same key committed first: answer as it did.
            earlier = jobs.by_idempotency_key(idempotency_key)
            if earlier is None:
                raise
            return _same_request_or_conflict(earlier, fingerprint)
    after_commit(session, lambda: _hand_over(job, priority))
    after_commit(session, lambda: record_job_created(kind_name))
    return job


def _hand_over(job: Job, priority: JobPriority) -> None:
    """Enqueue a new job and announce it to the tenant's watchers (after commit): one round trip to Redis."""
    enqueue_job(
        job.id,
        job.kind,
        job.trace_context,
        priority=priority,
        along=lambda pipeline: announce_new(pipeline, job.tenant_id, job.id),
    )


def check_priority(priority: JobPriority, limits: Limits) -> None:
    """FORBIDDEN when the tenant's plan does not allow this priority."""
    if RANKS[priority] > limits.max_priority:
        raise ForbiddenError(
            f"this plan allows priorities up to {highest_allowed(limits.max_priority).value}",
            field=["input", "priority"],
        )


def check_deadline(deadline: datetime | None) -> datetime | None:
    """The deadline as an aware UTC time (naive means UTC), or VALIDATION when out of bounds."""
    if deadline is None:
        return None
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    settings = get_settings()
    now = utcnow()
    earliest = now + timedelta(seconds=settings.job_deadline_min_seconds)
    latest = now + timedelta(seconds=settings.job_deadline_max_seconds)
    if not earliest <= deadline <= latest:
        raise ValidationError(
            f"deadline must be {settings.job_deadline_min_seconds:g} s to "
            f"{settings.job_deadline_max_seconds:g} s from now",
            field=["input", "deadline"],
        )
    return deadline.astimezone(UTC)


def check_queued_quota(jobs: JobRepository, limits: Limits) -> None:
    """QUOTA_EXCEEDED when the tenant already holds its plan's max_queued QUEUED jobs. The tenant's
    webhook endpoints, which the job's first event needs, are read in the same round trip."""
    counted: list[int] = []
    reads: list[PendingRead] = [(jobs.queued_count_statement(), lambda rows: counted.append(int(rows[0][0])))]
    endpoints = endpoints_read(jobs.session, jobs.tenant_id)
    if endpoints is not None:
        reads.append(endpoints)
    read_together(jobs.session, reads)
    if counted[0] >= limits.max_queued:
        record_rate_limited("quota")
        raise QuotaExceededError(
            f"this tenant already has {limits.max_queued} queued jobs (its plan's maximum); "
            "try again when some have started",
            field=["input"],
        )


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
    event: str | None = None,
) -> None:
    """Move job to target (or raise InvalidStateError), stamping times and recording the event (the
    target's, unless `event` names another)."""
    check_transition(JobStatus(job.status), target)
    now = utcnow()
    job.status = target
    if message is not None:
        job.message = message
    if target is JobStatus.RUNNING:
        job.attempt += 1
        job.started_at = now
        job.heartbeat_at = now
    elif target in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED):
        job.finished_at = now
    if target is JobStatus.SUCCEEDED:
        job.progress = 1.0
    session.add(job)
    record_event(session, job, event or STATUS_EVENTS[target], data)
    flush(session)  # a run's transaction holds the row's change for its next round trip
    job_id = job.id
    after_commit(session, lambda: announce(job_id), once=("announce", job_id))


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
    _flag_at_risk(session, job)
    job.heartbeat_at = utcnow()  # written with the next flush: a final transition's, or the commit's
    job_id = job.id
    after_commit(session, lambda: announce(job_id), once=("announce", job_id))


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
    """→ FAILED for good with an error a caller can read: the job joins the dead letter."""
    job.error_code = code
    job.error_message = message[:1000]
    job.error_retryable = retryable
    job.dead_lettered_at = utcnow()
    transition(session, job, JobStatus.FAILED, message="failed", data={"code": code, "retryable": retryable})


def retry_later(session: Session, job: Job, *, code: str, message: str, delay: float) -> None:
    """RUNNING → QUEUED again: the sweep enqueues it once `delay` seconds have passed."""
    data = {"attempt": job.attempt, "code": code, "message": message[:200], "retryInSeconds": round(delay, 1)}
    transition(session, job, JobStatus.QUEUED, message=f"retrying after {code}", data=data)
    session.add(JobOutbox(job_id=job.id, created_at=utcnow() + timedelta(seconds=delay)))
    session.flush()


def defer(session: Session, job: Job, *, delay: float) -> None:
    """Leave a QUEUED job queued and let the sweep hand it to RQ again after `delay` seconds.

    Not a retry: no attempt is counted and no event recorded (its tenant is at max_running)."""
    repository.set_outbox_due(session, job.id, utcnow() + timedelta(seconds=delay))
    record_rate_limited("concurrency")


def park_tenant_queue(session: Session, tenant_id: str, *, delay: float) -> list[str]:
    """Defer every QUEUED job of the tenant (it is at max_running): the ids, to take out of RQ so the
    workers find other tenants' jobs next instead of skipping this tenant's one by one."""
    return repository.defer_queued_of_tenant(session, tenant_id, utcnow() + timedelta(seconds=delay))


def _flag_at_risk(session: Session, job: Job) -> None:
    """Send job.deadline_at_risk, once, when the running job's estimated completion passes its deadline."""
    if job.deadline_at is None or job.at_risk_at is not None:
        return
    now = utcnow()
    estimate = estimated_completion(job, now)
    if estimate is None or estimate <= job.deadline_at:
        return
    job.at_risk_at = now
    data = {"estimatedCompletionAt": estimate.isoformat(), "deadline": job.deadline_at.isoformat()}
    record_event(session, job, DEADLINE_AT_RISK.name, data)


def at_risk(job: Job, now: datetime) -> bool:
    """Whether the job, unfinished, is expected to finish past its deadline (or the deadline passed)."""
    if job.deadline_at is None or JobStatus(job.status) in TERMINAL_STATUSES:
        return False
    if now >= job.deadline_at:
        return True
    estimate = estimated_completion(job, now)
    return estimate is not None and estimate > job.deadline_at


def miss_deadline(session: Session, job: Job, *, taken: bool = False) -> None:
    """The (locked) job's deadline passed: a QUEUED job fails at once and never starts (and leaves RQ,
    unless a worker has `taken` it); a RUNNING one is stopped the way a cancel is (CANCELING; FAILED
    with DEADLINE_EXCEEDED once its run stops)."""
    message = "the job did not finish by its deadline"
    status = JobStatus(job.status)
    if status is JobStatus.QUEUED:
        fail(session, job, code=DEADLINE_EXCEEDED, message=message, retryable=False)
        repository.remove_from_outbox(session, job.id)
        job_id, kind = job.id, job.kind
        if not taken:
            after_commit(session, lambda: dequeue_job(job_id))
        after_commit(session, lambda: record_job_finished(kind, JobStatus.FAILED))
    elif status is JobStatus.RUNNING:
        job.error_code = DEADLINE_EXCEEDED
        job.error_message = message
        job.error_retryable = False
        transition(session, job, JobStatus.CANCELING, message="deadline passed; stopping")


def stopped_for_deadline(job: Job) -> bool:
    """Whether a CANCELING job is being stopped because its deadline passed (not by its tenant)."""
    return job.status == JobStatus.CANCELING and job.error_code == DEADLINE_EXCEEDED


def finish_stopped(session: Session, job: Job) -> None:
    """A CANCELING job's run has stopped: CANCELED, or FAILED with DEADLINE_EXCEEDED at a deadline."""
    if stopped_for_deadline(job):
        fail(session, job, code=DEADLINE_EXCEEDED, message=job.error_message or "", retryable=False)
    else:
        transition(session, job, JobStatus.CANCELED, message="canceled")


def requeue(session: Session, job: Job, *, by: str) -> None:
    """A dead-lettered job → QUEUED again: same id, audit trail kept, its next run the next attempt.

    Its error, progress and deadline are cleared (the deadline passed, or would fail it again); a
    job.requeued event tells its tenant."""
    if job.status != JobStatus.FAILED or job.dead_lettered_at is None:
        raise InvalidStateError(f"a {job.status} job is not in the dead letter", field=["id"])
    previous = job.error_code
    job.error_code = job.error_message = None
    job.error_retryable = None
    job.dead_lettered_at = job.finished_at = job.deadline_at = job.at_risk_at = None
    job.progress = 0.0
    data = {"attempt": job.attempt + 1, "previousError": previous, "by": by}
    transition(session, job, JobStatus.QUEUED, message="requeued", data=data, event=JOB_REQUEUED.name)
    session.add(JobOutbox(job_id=job.id))
    session.flush()
    job_id, kind, carrier, priority = job.id, job.kind, job.trace_context, job.priority
    after_commit(session, lambda: enqueue_afresh(job_id, kind, carrier, priority=priority))


def retry_delay(attempt: int) -> float:
    """Exponential backoff after the given attempt: base, twice base, four times... up to the maximum."""
    settings = get_settings()
    delay = settings.job_retry_base_seconds * 2 ** max(attempt - 1, 0)
    return float(min(delay, settings.job_retry_max_seconds))


def cancel(session: Session, job: Job) -> None:
    """QUEUED → CANCELED at once; RUNNING → CANCELING (the worker stops it); CANCELING stays."""
    status = JobStatus(job.status)
    if status is JobStatus.CANCELING:
        return
    if status is JobStatus.QUEUED:
        transition(session, job, JobStatus.CANCELED, message="canceled")
        repository.remove_from_outbox(session, job.id)
        job_id, kind = job.id, job.kind
        after_commit(session, lambda: dequeue_job(job_id))
        # No worker ever sees this job: its end is counted here (without a duration: it never ran).
        after_commit(session, lambda: record_job_finished(kind, JobStatus.CANCELED))
        return
    if status is not JobStatus.RUNNING:
        raise InvalidStateError(f"a {status.value} job cannot be canceled", field=["id"])
    transition(session, job, JobStatus.CANCELING, message="canceling")


def delete(session: Session, job: Job) -> None:
    """Remove a finished job with its events. The file goes first: a crash in between leaves a row
    without its file (it reads EXPIRED), never a file no row points to."""
    if JobStatus(job.status) not in TERMINAL_STATUSES:
        raise InvalidStateError(f"a {job.status} job cannot be deleted; cancel it first", field=["id"])
    if job.artifact_key:
        get_storage().delete(job.artifact_key)
        forget_artifact(session, job.id)
    session.delete(job)
    session.flush()


def expire(session: Session, job: Job, message: str) -> None:
    """The job's file is gone (or goes now): SUCCEEDED → EXPIRED."""
    if job.artifact_key:
        get_storage().delete(job.artifact_key)
        forget_artifact(session, job.id)
    transition(session, job, JobStatus.EXPIRED, message=message)


def expire_missing_artifact(session: Session, key: str) -> None:
    """A download found no file: the SUCCEEDED job whose file it was becomes EXPIRED."""
    job = repository.succeeded_with_artifact(session, key)
    if job is not None:
        expire(session, job, "the file is gone")


def download_url(job: Job, expires_in: int) -> str:
    """A plain HTTP GET URL for the job's file, valid for expires_in seconds (clamped to the maximum)."""
    if expires_in < 1:
        raise ValidationError("expiresIn must be at least 1 second", field=["expiresIn"])
    if job.artifact_key is None:
        raise InvalidStateError("the job has no file", field=["id"])
    return get_storage().signed_url(
        job.artifact_key,
        filename=job.artifact_filename or "",
        content_type=job.artifact_content_type or "",
        expires_in=min(expires_in, get_settings().download_url_max_expiry),
    )


def estimated_completion(job: Job, now: datetime) -> datetime | None:
    """Start + elapsed / progress for a running job, once progress and time make the rate meaningful."""
    if job.status != JobStatus.RUNNING or job.started_at is None:
        return None
    elapsed = (now - job.started_at).total_seconds()
    if job.progress < MIN_PROGRESS_FOR_ESTIMATE or elapsed < MIN_SECONDS_FOR_ESTIMATE:
        return None
    return job.started_at + timedelta(seconds=elapsed / job.progress)


# --- reads and the tenant's own actions -----------------------------------------------------------


def find_job(session: Session, tenant_id: str, job_id: str) -> Job | None:
    """The tenant's job, or None (another tenant's id is as absent as any)."""
    return JobRepository(session, tenant_id).get(job_id) if has_prefix(job_id, "job") else None


def owned_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The tenant's job, locked, or NOT_FOUND."""
    row = (
        JobRepository(session, tenant_id).get(job_id, for_update=True) if has_prefix(job_id, "job") else None
    )
    if row is None:
        raise NotFoundError("no such job", field=["id"])
    return row


def cancel_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """Cancel the tenant's job (see cancel)."""
    job = owned_job(session, tenant_id, job_id)
    cancel(session, job)
    return job


def retry_job(session: Session, caller: Principal | str, job_id: str) -> Job:
    """Requeue the caller's dead-lettered job (see requeue), within its plan's rate and max_queued."""
    tenant_id = caller.tenant_id if isinstance(caller, Principal) else caller
    job = owned_job(session, tenant_id, job_id)
    limits = check_rate(session, caller)
    check_queued_quota(JobRepository(session, tenant_id), limits)
    requeue(session, job, by="tenant")
    return job


def delete_job(session: Session, tenant_id: str, job_id: str) -> None:
    """Delete the tenant's finished job (see delete)."""
    delete(session, owned_job(session, tenant_id, job_id))


def list_jobs(
    session: Session,
    tenant_id: str,
    *,
    first: int,
    after_id: str | None,
    statuses: Sequence[JobStatus],
    kind: str | None,
    dead_lettered: bool | None = None,
    newer_than_id: str | None = None,
) -> tuple[list[Job], bool]:
    """The tenant's jobs, newest first, after a job id (and, if given, made after newer_than_id): a
    page of at most `first`, and whether more follow. dead_lettered True: only the dead letter; False:
    none of it."""
    if not 0 <= first <= MAX_PAGE:
        raise ValidationError(f"first must be between 0 and {MAX_PAGE}", field=["first"])
    rows = JobRepository(session, tenant_id).page(
        first=first,
        after_id=after_id,
        statuses=statuses,
        kind=kind,
        dead_lettered=dead_lettered,
        newer_than_id=newer_than_id,
    )
    return rows[:first], len(rows) > first


def job_events(session: Session, tenant_id: str, job_ids: list[str]) -> list[list[JobEvent]]:
    """Each job's audit trail, oldest first, in the order of job_ids: one query for them all."""
    trails: dict[str, list[JobEvent]] = {job_id: [] for job_id in job_ids}
    for event in JobRepository(session, tenant_id).events(job_ids):
        trails[event.job_id].append(event)
    return [trails[job_id] for job_id in job_ids]


def dead_letter(
    session: Session, *, tenant_id: str | None, since: datetime | None, code: str | None, limit: int
) -> list[Job]:
    """Dead-lettered jobs of every tenant (or one), newest first: the operator's view."""
    return repository.dead_lettered(session, tenant_id=tenant_id, since=since, code=code, limit=limit)


def operator_requeue(session: Session, job_id: str) -> Job:
    """Requeue any tenant's dead-lettered job by id (an operator: no plan limits apply)."""
    job = repository.lock_job(session, job_id) if has_prefix(job_id, "job") else None
    if job is None:
        raise NotFoundError(f"no job {job_id}", field=["id"])
    requeue(session, job, by="operator")
    return job


def known_kinds() -> list[str]:
    """Every job kind this process knows (built-in and KIND_MODULES), by name."""
    return kind_names()


def count_by_status(session: Session, tenant_id: str) -> dict[str, int]:
    return JobRepository(session, tenant_id).count_by_status()


def jobs_per_hour(session: Session, tenant_id: str, hours: int) -> list[tuple[datetime, int]]:
    """Jobs created in each of the last `hours` whole hours and the current one, oldest first (zeros too)."""
    now = utcnow()
    current = now.replace(minute=0, second=0, microsecond=0)
    start = current - timedelta(hours=hours)
    counts = JobRepository(session, tenant_id).created_per_hour(start)
    by_hour = {at.astimezone(now.tzinfo): count for at, count in counts.items()}
    return [(hour, by_hour.get(hour, 0)) for hour in (start + timedelta(hours=n) for n in range(hours + 1))]


def storage_used(session: Session, tenant_id: str) -> int:
    """Bytes of the tenant's result files still kept."""
    return JobRepository(session, tenant_id).stored_bytes()


def count_jobs(session: Session, tenant_id: str, since: datetime | None) -> int:
    return JobRepository(session, tenant_id).count_since(since)


def job_history(session: Session, tenant_id: str, since: datetime | None) -> Iterator[dict[str, Any]]:
    """The tenant's jobs since a time as export rows, oldest first, streamed."""
    for job in JobRepository(session, tenant_id).history(since):
        yield {
            "record": "job",
            "id": job.id,
            "created_at": job.created_at.isoformat(),
            "kind": job.kind,
            "status": job.status,
            "attempt": job.attempt,
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "error_code": job.error_code,
            "artifact_filename": job.artifact_filename,
            "artifact_byte_size": job.artifact_byte_size,
        }
