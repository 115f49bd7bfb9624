"""Running one job: start it, call its kind's handler, store the artifact, finish it.

Execution is at-least-once: a job that is not QUEUED when a worker picks it up is left alone, and
the artifact's key is derived from the job id so a second run overwrites the first. A short job
costs two transactions: the start, and the finish, which also writes the progress the handler
reported on the way. Progress reaches Postgres at most every PROGRESS_MIN_INTERVAL (immediately when
that long has passed since the last write, else a little later), which is also when a cancel request
is noticed. While the handler runs, a heartbeat keeps the job's row fresh so the scheduler can tell a
live run from a lost one.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import ParamSpec

from rq.timeouts import JobTimeoutException
from sqlmodel import Session

from observability.tracing import continue_trace, get_tracer, set_ids
from service.db import defer_writes, read_pipelined, session_scope
from service.jobs import repository, service
from service.jobs.dispatch import drop_waiting
from service.jobs.kinds import ArtifactOutput, JobFailure, Kind, get_kind
from service.jobs.models import Job, JobStatus
from service.models import utcnow
from service.outages import describe, is_outage, log_failure
from service.plans import Limits
from service.settings import get_settings
from service.storage.base import StoredObject, artifact_key, safe_filename
from service.storage.factory import get_storage
from service.tenants.service import limits_locked, lock_for_start_statement
from service.webhooks.service import endpoints_statement, remember_endpoints

log = logging.getLogger(__name__)
P = ParamSpec("P")

PROGRESS_MIN_INTERVAL = 0.25


class JobCanceled(Exception):
    """The tenant canceled the job while it ran (or it is no longer this run's); the handler is unwound."""


@dataclass(frozen=True)
class RunResult:
    """How a run ended, for the worker's metrics: None when the job did not run here."""

    kind: str
    status: str
    queue_wait_seconds: float
    run_seconds: float | None


class RunContext:
    """The JobContext a handler gets. Progress is kept here and written at most every
    PROGRESS_MIN_INTERVAL, in a short transaction of its own, or with the job's final transition."""

    def __init__(self, job: Job) -> None:
        self.job_id = job.id
        self.tenant_id = job.tenant_id
        self.attempt = job.attempt
        self.deadline = job.deadline_at
        self._lock = threading.Lock()
        self._last_write = time.monotonic()  # the start just wrote the row
        self._pending: tuple[float, str | None] | None = None
        self._canceled = False

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0..1) and a stage; raises JobCanceled once the tenant canceled the job."""
        with self._lock:
            if self._canceled:
                raise JobCanceled
            previous = self._pending[0] if self._pending else 0.0
            self._pending = (max(previous, fraction), message)
        if time.monotonic() - self._last_write >= PROGRESS_MIN_INTERVAL:
            self.flush()
        if self._canceled:
            raise JobCanceled

    def flush(self) -> None:
        """Write pending progress now (the heartbeat calls it for progress reported too recently to write).

        While Postgres is out of reach the progress is kept for the next write (or the final one): a
        handler that failed on it would be retried, running the job again for a progress bar."""
        with self._lock:
            pending, self._pending = self._pending, None
            self._last_write = time.monotonic()
            if pending is None or self._canceled:
                return
            try:
                with run_transaction() as session:
                    job = _lock_with_endpoints(session, self.job_id)
                    if job is None or job.status != JobStatus.RUNNING:
                        self._canceled = True  # CANCELING, or the scheduler took the run away
                        return
                    service.report_progress(session, job, pending[0], pending[1])
            except Exception as error:
                if not is_outage(error):
                    raise
                self._pending = pending  # nothing newer: progress() waits for this lock
                log.warning("progress of job %s kept for the next write: %s", self.job_id, describe(error))

    def unwritten(self) -> tuple[float, str | None] | None:
        """The progress not written yet, for the final transition (which then writes it; the handler
        and the heartbeat have stopped, so a final write tried again finds it still there)."""
        with self._lock:
            return self._pending

    def check_deadline(self) -> None:
        """Past the job's deadline: stop it as a cancel does (the handler's next progress call unwinds)."""
        if self.deadline is None or self._canceled or utcnow() < self.deadline:
            return
        with session_scope() as session:
            job = repository.lock_job(session, self.job_id)
            if job is not None and job.status == JobStatus.RUNNING:
                service.miss_deadline(session, job)
        self._canceled = True

    @property
    def due(self) -> bool:
        """Whether pending progress has waited long enough to be written."""
        return self._pending is not None and time.monotonic() - self._last_write >= PROGRESS_MIN_INTERVAL


@contextmanager
def heartbeat(context: RunContext) -> Iterator[None]:
    """While a handler runs: refreshes the job's heartbeat_at every JOB_HEARTBEAT_SECONDS, ends the run
    once its deadline passes, and writes progress the handler reported too soon after the previous
    write, once it is due. One thread per process beats for every run it holds (a work horse runs one
    job after another): starting and joining a thread per job cost a short job two waits on the
    scheduler."""
    beater = _beater()
    beater.attach(context)
    try:
        yield
    finally:
        beater.detach(context)


@dataclass
class _Beaten:
    """A run the heartbeat thread holds, and when it last wrote the run's heartbeat_at."""

    context: RunContext
    last_beat: float


class _Beater(threading.Thread):
    """The process's heartbeat thread: every PROGRESS_MIN_INTERVAL it beats for each attached run."""

    def __init__(self) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.interval = get_settings().job_heartbeat_seconds
        self._beating = threading.Lock()  # held while beats run: detach waits for them
        self._runs: dict[RunContext, _Beaten] = {}

    def attach(self, context: RunContext) -> None:
        self._runs[context] = _Beaten(context, time.monotonic())  # the start just wrote heartbeat_at

    def detach(self, context: RunContext) -> None:
        """Beat no more for this run; returns once beats in progress have ended. The run is let go
        first, so a timeout's signal arriving while this waits cannot leave it attached."""
        self._runs.pop(context, None)
        with self._beating:
            pass

    def run(self) -> None:
        while True:
            time.sleep(PROGRESS_MIN_INTERVAL)
            with self._beating:
                for run in list(self._runs.values()):
                    self._beat(run)

    def _beat(self, run: _Beaten) -> None:
        context = run.context
        try:
            context.check_deadline()
            if context.due:
                context.flush()
            if time.monotonic() - run.last_beat >= self.interval:
                run.last_beat = time.monotonic()
                with session_scope() as session:
                    repository.touch(session, context.job_id, utcnow())
        except Exception:
            log_failure(log, "heartbeat of job %s failed", context.job_id)


_current_beater: _Beater | None = None
_beater_lock = threading.Lock()


def _beater() -> _Beater:
    """This process's heartbeat thread, started on first use."""
    global _current_beater
    with _beater_lock:
        if _current_beater is None or not _current_beater.is_alive():
            _current_beater = _Beater()
            _current_beater.start()
        return _current_beater


def _forget_beater() -> None:
    """In a forked child (a work horse): no thread came along, and the lock may have been held."""
    global _current_beater, _beater_lock
    _current_beater = None
    _beater_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_beater)


@contextmanager
def run_transaction() -> Iterator[Session]:
    """A transaction of the run: its writes nobody reads back (the webhook events of its transitions,
    the deliverers' wake-up) and the job row's changes go to Postgres with its next round trip, at the
    latest its commit: a transition is its reads (with BEGIN) and its writes (with COMMIT)."""
    with session_scope() as session:
        defer_writes(session)
        yield session


def start(job_id: str) -> Job | None:
    """QUEUED → RUNNING and out of the outbox, in one transaction; None when the job is not QUEUED (a
    duplicate run), its deadline passed (it fails, never started), or its tenant already runs its plan's
    max_running jobs. Then the job and all the tenant's other QUEUED jobs wait in the outbox for
    JOB_DEFER_SECONDS and leave RQ, so the next job a worker finds is another tenant's, however many
    this one queued (fairness; each job returns to its own priority's queue, so it holds inside each).

    Everything the start reads goes to Postgres in one round trip (_lock_for_start)."""
    parked: list[str] = []
    with run_transaction() as session:
        job, limits, running = _lock_for_start(session, job_id)
        if job is None or job.status != JobStatus.QUEUED:
            log.info("job %s is not queued (%s); skipping", job_id, job.status if job else "deleted")
            return None
        if job.deadline_at is not None and utcnow() >= job.deadline_at:
            log.info("job %s missed its deadline before it started; failing it", job_id)
            service.miss_deadline(session, job, taken=True)
            return None
        if running >= limits.max_running:
            # Starts of one tenant are serialised (its row is locked), so two workers cannot both
            # take the last slot.
            log.info("tenant %s runs its %d jobs; job %s waits", job.tenant_id, limits.max_running, job.id)
            service.defer(session, job, delay=get_settings().job_defer_seconds)
            parked = service.park_tenant_queue(session, job.tenant_id, delay=get_settings().job_defer_seconds)
        else:
            service.transition(session, job, JobStatus.RUNNING, message="starting")
    if not parked:
        return job
    dropped = drop_waiting([other for other in parked if other != job_id])
    log.info(
        "tenant %s at max_running: %d job(s) wait, %d taken out of RQ", job.tenant_id, len(parked), dropped
    )
    return None


def _lock_for_start(session: Session, job_id: str) -> tuple[Job | None, Limits, int]:
    """In one round trip (with the transaction's BEGIN): the job, locked; its tenant's row, locked
    until the transaction ends, so starts of one tenant take turns; the tenant's jobs holding a
    worker, counted once that lock is held; its endpoints, for the transition's webhook events; and
    the job taken out of the outbox if it is QUEUED."""
    tenant, parameters = repository.TENANT_OF_JOB, {"job_id": job_id}
    job_rows, plan_rows, count_rows, endpoint_rows, _ = read_pipelined(
        session,
        [
            repository.lock_statement(job_id),
            lock_for_start_statement(tenant, parameters),
            repository.running_count_statement(job_id),
            endpoints_statement(tenant, parameters),
            repository.take_from_outbox_statement(job_id),
        ],
    )
    if not job_rows:
        return None, limits_locked(plan_rows), 0
    job = repository.adopt(session, job_rows[0])
    remember_endpoints(session, job.tenant_id, endpoint_rows)
    return job, limits_locked(plan_rows), int(count_rows[0]["running"])


def _lock_with_endpoints(session: Session, job_id: str) -> Job | None:
    """The job, locked, with its tenant's endpoints read for the webhook events of what follows: one
    round trip (with the transaction's BEGIN)."""
    job_rows, endpoint_rows = read_pipelined(
        session,
        [
            repository.lock_statement(job_id),
            endpoints_statement(repository.TENANT_OF_JOB, {"job_id": job_id}),
        ],
    )
    if not job_rows:
        return None
    job = repository.adopt(session, job_rows[0])
    remember_endpoints(session, job.tenant_id, endpoint_rows)
    return job


def run_job(job_id: str, carrier: Mapping[str, str] | None = None) -> RunResult | None:
    """The whole run of one job, in a span continuing the trace that enqueued it (`carrier`, else the
    one stored with the job); every outcome ends in a terminal status or a scheduled retry."""
    if carrier is None:
        with session_scope() as session:
            carrier = repository.trace_context(session, job_id)
    with continue_trace("job.run", carrier, job_id=job_id):
        return _run(job_id)


def _run(job_id: str) -> RunResult | None:
    job = start(job_id)
    if job is None:
        return None
    set_ids(tenant_id=job.tenant_id)
    started = time.monotonic()
    try:
        kind = get_kind(job.kind)
    except KeyError:
        # E.g. an older worker during a deploy that added the kind: another attempt may know it.
        ended = _finish_failed(
            job_id, "UNKNOWN_KIND", f"this worker does not know the kind {job.kind!r}", True
        )
        return _result(job, ended, started)
    context = RunContext(job)
    stored: StoredObject | None = None
    output: ArtifactOutput | None = None
    try:
        with heartbeat(context):
            output = _produce(kind, job, context)
            stored = _store(job, output) if output is not None else None
    except JobCanceled:
        ended = _finish_canceled(job, output)
    except JobFailure as failure:
        ended = _finish_failed(job_id, failure.code, failure.message, failure.retryable, kind, context)
    except JobTimeoutException:
        message = f"the job ran past its {kind.timeout_seconds} s limit"
        ended = _finish_failed(job_id, "TIMEOUT", message, True, kind, context)
    except Exception as error:
        log_failure(log, "job %s failed unexpectedly", job_id)
        code, message = (
            ("UNAVAILABLE", "a backing service was briefly unavailable")
            if is_outage(error)
            else ("INTERNAL", "the job failed unexpectedly")
        )
        ended = _finish_failed(job_id, code, message, True, kind, context)
    else:
        ended = _finish_succeeded(job_id, stored, output, context)
    return _result(job, ended, started)


def _result(job: Job, status: str | None, started: float) -> RunResult:
    wait = (job.started_at - job.created_at).total_seconds() if job.started_at else 0.0
    return RunResult(job.kind, status or job.status, wait, time.monotonic() - started if status else None)


def _produce(kind: Kind, job: Job, context: RunContext) -> ArtifactOutput | None:
    """Run the kind's handler; its filename is untrusted, so from here on it is a safe basename."""
    output = kind.handler(context, kind.input_model.model_validate(job.input))
    return replace(output, filename=safe_filename(output.filename)) if output is not None else None


def _store(job: Job, output: ArtifactOutput) -> StoredObject:
    key = artifact_key(job.tenant_id, job.id, output.filename)
    with get_tracer().start_as_current_span("storage.upload", attributes={"storage.key": key}) as span:
        stored = get_storage().put_stream(
            key, output.chunks, content_type=output.content_type, filename=output.filename
        )
        span.set_attribute("storage.bytes", stored.byte_size)
        return stored


def _catch_up(session: Session, job: Job, context: RunContext | None) -> None:
    """Write the progress the handler reported since the last write, before the final transition."""
    pending = context.unwritten() if context is not None else None
    if pending is not None and job.status == JobStatus.RUNNING:
        service.report_progress(session, job, pending[0], pending[1])


def _patient(write: Callable[P, str | None]) -> Callable[P, str | None]:
    """A run's final write, tried again while Postgres is unreachable (a restart, a failover, a pooler
    restarting) for up to half of JOB_STUCK_AFTER_SECONDS: the outcome is kept, where giving up would
    leave the job RUNNING until the lost-runs sweep ran it again. Each write locks the job and checks
    its status, so one that did commit before the connection broke is not applied twice."""

    @functools.wraps(write)
    def patiently(*args: P.args, **kwargs: P.kwargs) -> str | None:
        deadline = time.monotonic() + get_settings().job_stuck_after_seconds / 2
        delay = 0.1
        while True:
            try:
                return write(*args, **kwargs)
            except Exception as error:
                if not is_outage(error) or time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "could not record a job's outcome (%s); trying again in %.1f s", describe(error), delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    return patiently


@_patient
def _finish_succeeded(
    job_id: str, stored: StoredObject | None, output: ArtifactOutput | None, context: RunContext
) -> str | None:
    with run_transaction() as session:
        job = _lock_with_endpoints(session, job_id)
        if job is None or job.status not in (JobStatus.RUNNING, JobStatus.CANCELING):
            return None
        if service.stopped_for_deadline(job):  # done, but too late: the deadline stop wins
            if stored is not None:
                get_storage().delete(stored.key)
            service.finish_stopped(session, job)
            return job.status
        _catch_up(session, job, context)
        filename = output.filename if output else ""
        content_type = output.content_type if output else ""
        service.succeed(session, job, stored, filename=filename, content_type=content_type)
        return job.status


@_patient
def _finish_canceled(job: Job, output: ArtifactOutput | None) -> str | None:
    if output is not None:
        get_storage().delete(artifact_key(job.tenant_id, job.id, output.filename))  # a partial upload
    with run_transaction() as session:
        locked = _lock_with_endpoints(session, job.id)
        if locked is None or locked.status != JobStatus.CANCELING:
            return None
        service.finish_stopped(session, locked)
        return locked.status


@_patient
def _finish_failed(
    job_id: str,
    code: str,
    message: str,
    retryable: bool,
    kind: Kind | None = None,
    context: RunContext | None = None,
) -> str | None:
    """Retry a transient failure with backoff while attempts remain; otherwise FAILED."""
    with run_transaction() as session:
        job = _lock_with_endpoints(session, job_id)
        if job is None:
            return None
        if job.status == JobStatus.CANCELING:
            service.finish_stopped(session, job)
        elif job.status != JobStatus.RUNNING:
            return None
        elif retryable and kind is not None and job.attempt < kind.max_attempts:
            _catch_up(session, job, context)
            service.retry_later(
                session, job, code=code, message=message, delay=service.retry_delay(job.attempt)
            )
        else:
            _catch_up(session, job, context)
            service.fail(session, job, code=code, message=message, retryable=retryable)
        return job.status
