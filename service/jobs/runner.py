"""Running one job in a worker: start it, call its kind's handler, store the artifact, finish it.

Execution is at-least-once: a job that is not QUEUED when a worker picks it up is left alone, and
the artifact's key is derived from the job id so a second run overwrites the first. While it runs,
a heartbeat keeps the job's row fresh so the scheduler can tell a live run from a lost one; a
cancel request is noticed at each progress report.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from types import TracebackType

from rq.timeouts import JobTimeoutException
from sqlmodel import Session

from observability.metrics import record_job_finished, record_queue_wait
from observability.tracing import continue_trace, flush, get_tracer, set_ids
from service.db import session_scope
from service.jobs import repository, service
from service.jobs.dispatch import drop_waiting
from service.jobs.kinds import ArtifactOutput, JobFailure, Kind, get_kind
from service.jobs.models import Job, JobStatus
from service.models import utcnow
from service.outages import is_outage, log_failure
from service.settings import get_settings
from service.storage.base import StoredObject, artifact_key, safe_filename
from service.storage.factory import get_storage
from service.tenants.service import limits_for

log = logging.getLogger(__name__)

PROGRESS_MIN_INTERVAL = 0.25


class JobCanceled(Exception):
    """The tenant canceled the job while it ran; the handler is unwound."""


class RunContext:
    """The JobContext a handler gets: progress goes to Postgres in short transactions of its own."""

    def __init__(self, job: Job) -> None:
        self.job_id = job.id
        self.tenant_id = job.tenant_id
        self.attempt = job.attempt
        self._last_write = 0.0
        self._last_fraction = 0.0
        self._last_message: str | None = None

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Write progress at most every PROGRESS_MIN_INTERVAL, unless the stage or a milestone changes.

        Raises JobCanceled when the tenant canceled the job (checked at each write).
        """
        now = time.monotonic()
        changed = message != self._last_message or fraction - self._last_fraction >= 0.25
        if not changed and now - self._last_write < PROGRESS_MIN_INTERVAL:
            return
        self._last_write, self._last_fraction, self._last_message = now, fraction, message
        with session_scope() as session:
            job = repository.lock_job(session, self.job_id)
            if job is None or job.status == JobStatus.CANCELING:
                raise JobCanceled
            if job.status == JobStatus.RUNNING:
                service.report_progress(session, job, fraction, message)


class Heartbeat:
    """Refreshes the job's heartbeat_at every JOB_HEARTBEAT_SECONDS while the handler runs."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.interval = get_settings().job_heartbeat_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with session_scope() as session:
                    repository.touch(session, self.job_id, utcnow())
            except Exception:
                log_failure(log, "heartbeat of job %s failed", self.job_id)


def start(job_id: str) -> Job | None:
    """QUEUED → RUNNING and out of the outbox, or None when the job is not QUEUED (a duplicate run)
    or its tenant already runs its plan's max_running jobs: then the job stays QUEUED, goes back to
    the outbox for JOB_DEFER_SECONDS, and this worker moves on to the next job (another tenant's)."""
    with session_scope() as session:
        job = repository.lock_job(session, job_id)
        if job is None or job.status != JobStatus.QUEUED:
            log.info("job %s is not queued (%s); skipping", job_id, job.status if job else "deleted")
            return None
        if _defer_if_tenant_busy(session, job):
            return None
        service.transition(session, job, JobStatus.RUNNING, message="starting")
        repository.remove_from_outbox(session, job_id)
        return job


def _defer_if_tenant_busy(session: Session, job: Job) -> bool:
    """Whether the (locked, QUEUED) job's tenant runs its max_running jobs already; if so the job is
    deferred. Starts of one tenant are serialised, so two workers cannot both take the last slot."""
    repository.lock_tenant_starts(session, job.tenant_id)
    max_running = limits_for(session, job.tenant_id).max_running
    if repository.running_count(session, job.tenant_id) < max_running:
        return False
    delay = get_settings().job_defer_seconds
    log.info("tenant %s runs its %d jobs; job %s waits %.1f s", job.tenant_id, max_running, job.id, delay)
    service.defer(session, job, delay=delay)
    return True


def defer_if_tenant_busy(job_id: str) -> bool:
    """The worker's check before it forks for a job: True when the job was deferred (its tenant is at
    max_running), so the worker drops it from RQ and takes the next one without a fork. Then all the
    tenant's other QUEUED jobs are deferred too and taken out of RQ at once: the next job a worker
    finds is another tenant's, however many this one queued (fairness). The sweep brings them back
    after JOB_DEFER_SECONDS. start() checks again in the work horse; this is the cheap early exit."""
    with session_scope() as session:
        job = repository.lock_job(session, job_id)
        if job is None or job.status != JobStatus.QUEUED or not _defer_if_tenant_busy(session, job):
            return False
        parked = service.park_tenant_queue(session, job.tenant_id, delay=get_settings().job_defer_seconds)
    dropped = drop_waiting([other for other in parked if other != job_id])
    log.info(
        "tenant %s at max_running: %d queued job(s) wait, %d taken out of RQ",
        job.tenant_id,
        len(parked),
        dropped,
    )
    return True


def run_job(job_id: str, carrier: Mapping[str, str] | None = None) -> None:
    """The whole run of one job, in a span continuing the trace that enqueued it (`carrier`, else the
    one stored with the job); every outcome ends in a terminal status or a scheduled retry."""
    if carrier is None:
        with session_scope() as session:
            carrier = repository.trace_context(session, job_id)
    try:
        with continue_trace("job.run", carrier, job_id=job_id):
            _run(job_id)
    finally:
        flush()  # an RQ work horse leaves through os._exit: export its spans first


def _run(job_id: str) -> None:
    job = start(job_id)
    if job is None:
        return
    set_ids(tenant_id=job.tenant_id)
    try:
        kind = get_kind(job.kind)
    except KeyError:
        # E.g. an older worker during a deploy that added the kind: another attempt may know it.
        _finish_failed(job_id, "UNKNOWN_KIND", f"this worker does not know the kind {job.kind!r}", True, None)
        return
    stored: StoredObject | None = None
    output: ArtifactOutput | None = None
    try:
        with Heartbeat(job_id):
            output = _produce(kind, job)
            stored = _store(job, output) if output is not None else None
    except JobCanceled:
        _finish_canceled(job, output)
    except JobFailure as failure:
        _finish_failed(job_id, failure.code, failure.message, failure.retryable, kind)
    except JobTimeoutException:
        message = f"the job ran past its {kind.timeout_seconds} s limit"
        _finish_failed(job_id, "TIMEOUT", message, True, kind)
    except Exception as error:
        log_failure(log, "job %s failed unexpectedly", job_id)
        if is_outage(error):
            _finish_failed(job_id, "UNAVAILABLE", "a backing service was briefly unavailable", True, kind)
        else:
            _finish_failed(job_id, "INTERNAL", "the job failed unexpectedly", True, kind)
    else:
        with session_scope() as session:
            locked = repository.lock_job(session, job_id)
            if locked is None or locked.status not in (JobStatus.RUNNING, JobStatus.CANCELING):
                return
            filename = output.filename if output else ""
            content_type = output.content_type if output else ""
            service.succeed(session, locked, stored, filename=filename, content_type=content_type)


def _produce(kind: Kind, job: Job) -> ArtifactOutput | None:
    """Run the kind's handler; its filename is untrusted, so from here on it is a safe basename."""
    output = kind.handler(RunContext(job), kind.input_model.model_validate(job.input))
    return replace(output, filename=safe_filename(output.filename)) if output is not None else None


def _store(job: Job, output: ArtifactOutput) -> StoredObject:
    key = artifact_key(job.tenant_id, job.id, output.filename)
    with get_tracer().start_as_current_span("storage.upload", attributes={"storage.key": key}) as span:
        stored = get_storage().put_stream(
            key, output.chunks, content_type=output.content_type, filename=output.filename
        )
        span.set_attribute("storage.bytes", stored.byte_size)
        return stored


def _finish_canceled(job: Job, output: ArtifactOutput | None) -> None:
    if output is not None:
        get_storage().delete(artifact_key(job.tenant_id, job.id, output.filename))  # a partial upload
    with session_scope() as session:
        locked = repository.lock_job(session, job.id)
        if locked is not None and locked.status == JobStatus.CANCELING:
            service.transition(session, locked, JobStatus.CANCELED, message="canceled")


def _finish_failed(job_id: str, code: str, message: str, retryable: bool, kind: Kind | None) -> None:
    """Retry a transient failure with backoff while attempts remain; otherwise FAILED."""
    with session_scope() as session:
        job = repository.lock_job(session, job_id)
        if job is None:
            return
        if job.status == JobStatus.CANCELING:
            service.transition(session, job, JobStatus.CANCELED, message="canceled")
        elif job.status != JobStatus.RUNNING:
            return
        elif retryable and kind is not None and job.attempt < kind.max_attempts:
            service.retry_later(
                session, job, code=code, message=message, delay=service.retry_delay(job.attempt)
            )
        else:
            service.fail(session, job, code=code, message=message, retryable=retryable)


def record_run_metrics(job_id: str) -> None:
    """Record the job's queue wait and, once finished, its duration (in the worker's long-lived parent:
    what a forked work horse records dies with it)."""
    try:
        with session_scope() as session:
            row = repository.get_by_id(session, job_id)
            if row is None or row.started_at is None:
                return
            record_queue_wait(row.kind, (row.started_at - row.created_at).total_seconds())
            if row.finished_at is not None:
                record_job_finished(row.kind, row.status, (row.finished_at - row.started_at).total_seconds())
    except Exception as error:
        log.warning("could not record metrics of job %s: %s", job_id, error, exc_info=not is_outage(error))
