"""All SQL about jobs: tenant-scoped reads for the API, and by-id access for workers and the sweep."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, LiteralString

from sqlalchemy import delete, func, or_, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, col, select

from service.db import Statement, write_with_next
from service.ids import first_id_at
from service.jobs.models import Job, JobEvent, JobOutbox, JobStatus
from service.models import construct, utcnow
from service.repository import TenantRepository

HISTORY_BATCH_ROWS = 500


_QUEUED_COUNT: LiteralString = (
    "SELECT coalesce(sum(queued), 0) FROM job_queue_counts WHERE tenant_id = %(tenant_id)s"
)


class JobRepository(TenantRepository[Job]):
    """One tenant's jobs."""

    model = Job

    def by_idempotency_key(self, key: str) -> Job | None:
        return self.session.exec(self.base_statement().where(Job.idempotency_key == key)).first()

    def page(
        self,
        *,
        first: int,
        after_id: str | None,
        statuses: Sequence[JobStatus],
        kind: str | None,
        dead_lettered: bool | None = None,
        newer_than_id: str | None = None,
    ) -> list[Job]:
        """Newest first; one more row than asked so the caller knows whether there is a next page."""
        statement = self.base_statement()
        if after_id:
            statement = statement.where(col(Job.id) < after_id)
        if newer_than_id:
            statement = statement.where(col(Job.id) > newer_than_id)
        if statuses:
            statement = statement.where(col(Job.status).in_([status.value for status in statuses]))
        if kind:
            statement = statement.where(Job.kind == kind)
        if dead_lettered is not None:
            lettered = col(Job.dead_lettered_at)
            statement = statement.where(lettered.is_not(None) if dead_lettered else lettered.is_(None))
        return list(self.session.exec(statement.order_by(col(Job.id).desc()).limit(first + 1)))

    def count_by_status(self) -> dict[str, int]:
        statement = (
            select(Job.status, func.count()).where(Job.tenant_id == self.tenant_id).group_by(Job.status)
        )
        return {status: count for status, count in self.session.exec(statement)}

    def queued_count_statement(self) -> Statement:
        """How many of the tenant's jobs are QUEUED, as plain SQL to run along other reads
        (service.db.read_together): the sum of its counts kept by a trigger (migration 0014), which
        costs the same however many are queued."""
        return _QUEUED_COUNT, {"tenant_id": self.tenant_id}

    def count_since(self, since: datetime | None) -> int:
        statement = select(func.count()).where(Job.tenant_id == self.tenant_id)
        if since is not None:
            statement = statement.where(col(Job.created_at) >= since)
        return int(self.session.exec(statement).one())

    def created_per_hour(self, since: datetime) -> dict[datetime, int]:
        """How many jobs were created in each hour since `since` (hours without any are absent).

        Job ids sort by creation time, so the (tenant_id, id) index bounds the scan to the period."""
        hour = func.date_trunc("hour", col(Job.created_at), "UTC")  # whatever the session's time zone
        statement = (
            select(hour, func.count())
            .where(Job.tenant_id == self.tenant_id, col(Job.id) >= first_id_at("job", since))
            .where(col(Job.created_at) >= since)
            .group_by(hour)
        )
        return {at: count for at, count in self.session.exec(statement)}

    def stored_bytes(self) -> int:
        """The size of the tenant's files still in storage."""
        statement = select(func.coalesce(func.sum(Job.artifact_byte_size), 0)).where(
            Job.tenant_id == self.tenant_id, col(Job.artifact_key).is_not(None)
        )
        return int(self.session.exec(statement).one() or 0)

    def history(self, since: datetime | None) -> Iterator[Job]:
        """Every job created since a time, oldest first, read in batches."""
        statement = self.base_statement()
        if since is not None:
            statement = statement.where(col(Job.created_at) >= since)
        yield from self.session.scalars(
            statement.order_by(col(Job.id)).execution_options(yield_per=HISTORY_BATCH_ROWS)
        )

    def events(self, job_ids: Sequence[str]) -> list[JobEvent]:
        """The events of these jobs, oldest first."""
        statement = (
            select(JobEvent)
            .where(JobEvent.tenant_id == self.tenant_id, col(JobEvent.job_id).in_(job_ids))
            .order_by(col(JobEvent.id))
        )
        return list(self.session.exec(statement))


def _insert_queued_statement() -> LiteralString:
    """The job (every column of the model) and its first event, in one statement built once."""
    columns = list(Job.__table__.columns)  # type: ignore[attr-defined]
    values = [
        f"CAST(%({c.name})s AS jsonb)" if isinstance(c.type, JSONB) else f"%({c.name})s" for c in columns
    ]
    statement = f"""
        WITH new_job AS (
            INSERT INTO jobs ({", ".join(c.name for c in columns)}) VALUES ({", ".join(values)})
            RETURNING id, tenant_id
        )
        INSERT INTO job_events (job_id, tenant_id, type, at, data)
        SELECT id, tenant_id, %(event_type)s, %(event_at)s, CAST(%(event_data)s AS jsonb) FROM new_job
        """  # noqa: S608 - column names come from the model, values are bound
    return statement


_INSERT_QUEUED = _insert_queued_statement()
_JSON_COLUMNS = {c.name for c in Job.__table__.columns if isinstance(c.type, JSONB)}  # type: ignore[attr-defined]
_INSERT_OUTBOX: LiteralString = (
    "INSERT INTO job_outbox (job_id, created_at) VALUES (%(job_id)s, %(created_at)s)"
)


def insert_queued(session: Session, job: Job, event_type: str, event_data: dict[str, Any] | None) -> None:
    """Write a new job with its first event in one statement, then its outbox row (the outbox's
    row-level security looks for the job, which the first statement's own snapshot cannot see), both
    in one round trip: the transaction's next when it defers writes (service.db.write_with_next),
    else now. Plain SQL built once: this runs for every job created, and building the statement per
    call cost more than running it."""
    row = job.model_dump()
    for name in _JSON_COLUMNS:
        if row[name] is not None:
            row[name] = json.dumps(row[name])
    event = {
        "event_type": event_type,
        "event_at": utcnow(),
        "event_data": None if event_data is None else json.dumps(event_data),
    }
    write_with_next(
        session,
        (_INSERT_QUEUED, {**row, **event}),
        (_INSERT_OUTBOX, {"job_id": job.id, "created_at": utcnow()}),
    )


_INSERT_EVENT: LiteralString = (
    "INSERT INTO job_events (job_id, tenant_id, type, at, data)"
    " VALUES (%(job_id)s, %(tenant_id)s, %(type)s, %(at)s, CAST(%(data)s AS jsonb))"
)


def add_event(session: Session, job: Job, event_type: str, data: dict[str, Any] | None) -> None:
    """A line of the job's audit trail, sent with the transaction's next round trip when it defers
    writes (service.db.write_with_next)."""
    parameters = {
        "job_id": job.id,
        "tenant_id": job.tenant_id,
        "type": event_type,
        "at": utcnow(),
        "data": None if data is None else json.dumps(data),
    }
    write_with_next(session, (_INSERT_EVENT, parameters))


_COLUMNS = ", ".join(c.name for c in Job.__table__.columns)  # type: ignore[attr-defined]
_LOCK_JOB: LiteralString = f"SELECT {_COLUMNS} FROM jobs WHERE id = %(job_id)s FOR UPDATE"  # noqa: S608 - names from the model
TENANT_OF_JOB: LiteralString = "(SELECT tenant_id FROM jobs WHERE id = %(job_id)s)"
"""SQL for the tenant of the job %(job_id)s: the other domains' statements read beside lock_statement."""
_RUNNING_COUNT: LiteralString = (  # ix_jobs_tenant_id_running: its predicate names these statuses
    "SELECT count(*) AS running FROM jobs WHERE tenant_id = (SELECT tenant_id FROM jobs WHERE id = %(job_id)s)"  # noqa: E501
    " AND status IN ('RUNNING', 'CANCELING')"
)
_TAKE_FROM_OUTBOX: LiteralString = (
    "DELETE FROM job_outbox WHERE job_id = %(job_id)s"
    " AND EXISTS (SELECT 1 FROM jobs WHERE id = %(job_id)s AND status = 'QUEUED')"
)


def lock_statement(job_id: str) -> Statement:
    """Plain SQL locking the job (any tenant's, by id) for the transaction, for read_pipelined: its
    row, for adopt()."""
    return _LOCK_JOB, {"job_id": job_id}


def running_count_statement(job_id: str) -> Statement:
    """running_count of the job's tenant in plain SQL, for read_pipelined: one row, `running`."""
    return _RUNNING_COUNT, {"job_id": job_id}


def take_from_outbox_statement(job_id: str) -> Statement:
    """remove_from_outbox in plain SQL for read_pipelined, if the job is QUEUED (a job starting here
    leaves the outbox; one failed at its deadline leaves it anyway, and a deferred one is put back)."""
    return _TAKE_FROM_OUTBOX, {"job_id": job_id}


def adopt(session: Session, row: Mapping[str, Any]) -> Job:
    """The Job of a row read (and locked) in plain SQL, as the session would have loaded it: its
    changes are flushed as usual (built as SQLAlchemy builds a loaded row: service.models.construct)."""
    job = construct(Job, **row)
    make_transient_to_detached(job)
    session.add(job)
    return job


def lock_job(session: Session, job_id: str) -> Job | None:
    """The job row, locked for this transaction (workers act on any tenant's job by id)."""
    return session.exec(select(Job).where(Job.id == job_id).with_for_update()).first()


def touch(session: Session, job_id: str, at: datetime) -> None:
    """Record a running job's heartbeat."""
    live = col(Job.status).in_([JobStatus.RUNNING, JobStatus.CANCELING])
    session.execute(update(Job).where(col(Job.id) == job_id, live).values(heartbeat_at=at))


def stale_running(session: Session, *, heartbeat_before: datetime, limit: int) -> list[Job]:
    """RUNNING or CANCELING jobs whose worker stopped beating, locked for one sweeper."""
    statement = (
        select(Job)
        .where(col(Job.status).in_([JobStatus.RUNNING, JobStatus.CANCELING]))
        .where(col(Job.heartbeat_at) < heartbeat_before)
        .order_by(col(Job.heartbeat_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.exec(statement))


def running_since(session: Session, *, started_before: datetime, limit: int) -> list[Job]:
    """RUNNING jobs started before the cutoff, locked for one sweeper (callers check each kind's timeout)."""
    statement = (
        select(Job)
        .where(col(Job.status) == JobStatus.RUNNING, col(Job.started_at) < started_before)
        .order_by(col(Job.started_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.exec(statement))


def remove_from_outbox(session: Session, job_id: str) -> None:
    session.execute(delete(JobOutbox).where(col(JobOutbox.job_id) == job_id))


def claim_outbox_due(
    session: Session, *, cutoff: datetime, limit: int
) -> list[tuple[str, str, Mapping[str, str] | None, str]]:
    """(job id, kind, trace carrier, priority) of outbox rows created and last checked before cutoff,
    locked."""
    statement = (
        select(JobOutbox.job_id, Job.kind, Job.trace_context, Job.priority)
        .join(Job, col(Job.id) == col(JobOutbox.job_id))
        .where(col(JobOutbox.created_at) < cutoff)
        .where(or_(col(JobOutbox.enqueued_at).is_(None), col(JobOutbox.enqueued_at) < cutoff))
        .order_by(col(JobOutbox.created_at))
        .limit(limit)
        .with_for_update(skip_locked=True, of=JobOutbox)
    )
    return [(job_id, kind, carrier, priority) for job_id, kind, carrier, priority in session.exec(statement)]


def ready_outbox(session: Session, *, now: datetime, limit: int) -> list[tuple[str, datetime]]:
    """(job id, ready since) of the oldest outbox rows due by now: jobs ready that no worker started."""
    statement = (
        select(JobOutbox.job_id, JobOutbox.created_at)
        .where(col(JobOutbox.created_at) <= now)
        .order_by(col(JobOutbox.created_at))
        .limit(limit)
    )
    return [(job_id, ready_since) for job_id, ready_since in session.exec(statement)]


def mark_outbox_checked(session: Session, job_ids: Sequence[str], at: datetime) -> None:
    if job_ids:
        session.execute(update(JobOutbox).where(col(JobOutbox.job_id).in_(job_ids)).values(enqueued_at=at))


def trace_context(session: Session, job_id: str) -> Mapping[str, str] | None:
    """The job's stored W3C carrier."""
    return session.exec(select(Job.trace_context).where(Job.id == job_id)).first()


def set_outbox_due(session: Session, job_id: str, due: datetime) -> None:
    """Put the job (back) in the outbox, due at `due`, whether or not a row is there."""
    statement = (
        update(JobOutbox).where(col(JobOutbox.job_id) == job_id).values(created_at=due, enqueued_at=None)
    )
    if session.execute(statement).rowcount == 0:  # type: ignore[attr-defined]
        session.add(JobOutbox(job_id=job_id, created_at=due))
    session.flush()


def defer_queued_of_tenant(session: Session, tenant_id: str, due: datetime) -> list[str]:
    """Make every QUEUED job of the tenant due at `due` in the outbox; their ids."""
    queued = select(Job.id).where(Job.tenant_id == tenant_id, Job.status == JobStatus.QUEUED)
    statement = (
        update(JobOutbox)
        .where(col(JobOutbox.job_id).in_(queued.scalar_subquery()))
        .values(created_at=due, enqueued_at=None)
        .returning(col(JobOutbox.job_id))
    )
    return [row[0] for row in session.execute(statement)]


def finished_before(session: Session, status: JobStatus, cutoff: datetime, limit: int) -> Sequence[Job]:
    """Jobs in a terminal status that finished before the cutoff, oldest first, locked for one sweeper."""
    statement = (
        select(Job)
        .where(Job.status == status, col(Job.finished_at) < cutoff)
        .order_by(col(Job.finished_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return session.exec(statement).all()


def succeeded_with_artifact(session: Session, key: str) -> Job | None:
    """The SUCCEEDED job whose file is stored under key, locked."""
    statement = (
        select(Job).where(Job.artifact_key == key, Job.status == JobStatus.SUCCEEDED).with_for_update()
    )
    return session.exec(statement).first()


def get_by_id(session: Session, job_id: str) -> Job | None:
    """Any tenant's job by id (workers and the API's job feed)."""
    return session.get(Job, job_id)


def dead_lettered(
    session: Session, *, tenant_id: str | None, since: datetime | None, code: str | None, limit: int
) -> list[Job]:
    """Dead-lettered jobs (of one tenant, since a time, with an error code), newest first."""
    statement = select(Job).where(col(Job.dead_lettered_at).is_not(None))
    if tenant_id is not None:
        statement = statement.where(Job.tenant_id == tenant_id)
    if since is not None:
        statement = statement.where(col(Job.dead_lettered_at) >= since)
    if code is not None:
        statement = statement.where(Job.error_code == code)
    return list(session.exec(statement.order_by(col(Job.dead_lettered_at).desc()).limit(limit)))


def past_deadline(session: Session, *, now: datetime, limit: int) -> list[Job]:
    """QUEUED or RUNNING jobs whose deadline passed, locked for one sweeper."""
    statement = (
        select(Job)
        .where(col(Job.deadline_at).is_not(None), col(Job.deadline_at) <= now)
        .where(col(Job.status).in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        .order_by(col(Job.deadline_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.exec(statement))
