"""Running one job in a worker: start it, call its kind's handler, store the artifact, finish it.

Execution is at-least-once: a job that is not QUEUED when a worker picks it up is left alone, and
the artifact's key is derived from the job id so a second run overwrites the first.
"""

from __future__ import annotations

import logging
import time

from rq.timeouts import JobTimeoutException

from service.db import session_scope
from service.jobs import repository, service
from service.jobs.models import Job, JobStatus
from service.kinds.base import ArtifactOutput, JobFailure
from service.kinds.registry import get_kind
from service.storage.base import StoredObject, artifact_key
from service.storage.factory import get_storage

log = logging.getLogger(__name__)

PROGRESS_MIN_INTERVAL = 0.25


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
        """Write progress at most every PROGRESS_MIN_INTERVAL, unless the stage or a milestone changes."""
        now = time.monotonic()
        changed = message != self._last_message or fraction - self._last_fraction >= 0.25
        if not changed and now - self._last_write < PROGRESS_MIN_INTERVAL:
            return
        self._last_write, self._last_fraction, self._last_message = now, fraction, message
        with session_scope() as session:
            job = repository.lock_job(session, self.job_id)
            if job is not None and job.status == JobStatus.RUNNING:
                service.report_progress(session, job, fraction, message)


def start(job_id: str) -> Job | None:
    """QUEUED → RUNNING and out of the outbox, or None when the job is not QUEUED (a duplicate run)."""
    with session_scope() as session:
        job = repository.lock_job(session, job_id)
        if job is None or job.status != JobStatus.QUEUED:
            log.info("job %s is not queued (%s); skipping", job_id, job.status if job else "deleted")
            return None
        service.transition(session, job, JobStatus.RUNNING, message="starting")
        repository.remove_from_outbox(session, job_id)
        return job


def run_job(job_id: str) -> None:
    """The whole run of one job; every outcome ends in a terminal status."""
    job = start(job_id)
    if job is None:
        return
    try:
        kind = get_kind(job.kind)
    except KeyError:
        # E.g. an older worker during a deploy that added the kind: another attempt may know it.
        _finish_failed(job_id, "UNKNOWN_KIND", f"this worker does not know the kind {job.kind!r}", True)
        return
    try:
        params = kind.input_model.model_validate(job.input)
        output = kind.handler(RunContext(job), params)
        stored = _store(job, output) if output is not None else None
    except JobFailure as failure:
        _finish_failed(job_id, failure.code, failure.message, failure.retryable)
    except JobTimeoutException:
        _finish_failed(job_id, "TIMEOUT", f"the job ran past its {kind.timeout_seconds} s limit", True)
    except Exception:
        log.exception("job %s failed unexpectedly", job_id)
        _finish_failed(job_id, "INTERNAL", "the job failed unexpectedly", True)
    else:
        with session_scope() as session:
            locked = repository.lock_job(session, job_id)
            if locked is None:
                return
            filename = output.filename if output else ""
            content_type = output.content_type if output else ""
            service.succeed(session, locked, stored, filename=filename, content_type=content_type)


def _store(job: Job, output: ArtifactOutput) -> StoredObject:
    key = artifact_key(job.tenant_id, job.id, output.filename)
    return get_storage().put_stream(
        key, output.chunks, content_type=output.content_type, filename=output.filename
    )


def _finish_failed(job_id: str, code: str, message: str, retryable: bool) -> None:
    with session_scope() as session:
        job = repository.lock_job(session, job_id)
        if job is not None:
            service.fail(session, job, code=code, message=message, retryable=retryable)
