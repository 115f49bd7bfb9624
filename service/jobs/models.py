"""Job, job event and outbox tables."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Identity, Index, text
from sqlmodel import Column, Field, SQLModel

from service.ids import new_id
from service.models import jsonb_column, timestamp_column, utcnow


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    """Succeeded, but its file is gone (retention deleted it), as Shopify's bulk operations say."""


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED})


class Job(SQLModel, table=True):
    """The claim check: what was asked, where it stands, and the artifact when done."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('QUEUED','RUNNING','SUCCEEDED','FAILED','CANCELING','CANCELED','EXPIRED')",
            name="status_valid",
        ),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress_range"),
        CheckConstraint("priority IN ('HIGH','NORMAL','LOW')", name="priority_valid"),
        Index("ix_jobs_tenant_id_id", "tenant_id", "id"),
        Index("ix_jobs_status_finished_at", "status", "finished_at"),  # retention
        Index("ix_jobs_tenant_id_status", "tenant_id", "status"),  # the tenant's jobs counted by status
        Index(  # max_running: the jobs holding a worker, counted at each start (migration 0015)
            "ix_jobs_tenant_id_running",
            "tenant_id",
            postgresql_where=text("status IN ('RUNNING','CANCELING')"),
        ),
        Index(
            "uq_jobs_tenant_id_idempotency_key",
            "tenant_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(  # the dead letter, per tenant and for operators
            "ix_jobs_dead_lettered_at",
            "dead_lettered_at",
            postgresql_where=text("dead_lettered_at IS NOT NULL"),
        ),
        Index(  # the deadline sweep: unfinished jobs with a deadline
            "ix_jobs_deadline_at",
            "deadline_at",
            postgresql_where=text("deadline_at IS NOT NULL AND status IN ('QUEUED','RUNNING')"),
        ),
    )

    id: str = Field(default_factory=lambda: new_id("job"), primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", ondelete="CASCADE")
    kind: str = Field(max_length=50)
    status: str = Field(default=JobStatus.QUEUED, max_length=20)
    progress: float = 0.0
    message: str | None = Field(default=None, max_length=200)
    attempt: int = 0
    priority: str = Field(default="NORMAL", max_length=10, sa_column_kwargs={"server_default": "NORMAL"})
    deadline_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    """Not finished by then: FAILED with DEADLINE_EXCEEDED (never started, or stopped as a cancel is)."""
    at_risk_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    """When job.deadline_at_risk was sent (once): its estimated completion passed its deadline."""
    dead_lettered_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    """FAILED for good (retries spent or a permanent error): listed in the dead letter until requeued."""
    input: dict[str, Any] = Field(sa_column=jsonb_column())
    input_hash: str = Field(max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    started_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    heartbeat_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    trace_context: dict[str, str] | None = Field(default=None, sa_column=jsonb_column(nullable=True))
    """W3C carrier of the request that created it: the worker's run continues that trace."""
    """Last sign of life from the worker running it; a RUNNING job whose heartbeat stops is recovered."""
    error_code: str | None = Field(default=None, max_length=50)
    error_message: str | None = Field(default=None, max_length=1000)
    error_retryable: bool | None = None
    artifact_key: str | None = Field(default=None, max_length=500)
    artifact_filename: str | None = Field(default=None, max_length=200)
    artifact_content_type: str | None = Field(default=None, max_length=100)
    artifact_byte_size: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    artifact_sha256: str | None = Field(default=None, max_length=64)


class JobEvent(SQLModel, table=True):
    """One line of a job's audit trail."""

    __tablename__ = "job_events"

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    job_id: str = Field(foreign_key="jobs.id", index=True, ondelete="CASCADE")
    tenant_id: str = Field(foreign_key="tenants.id", ondelete="CASCADE")
    type: str = Field(max_length=50)
    at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    data: dict[str, Any] | None = Field(default=None, sa_column=jsonb_column(nullable=True))


class JobQueueCount(SQLModel, table=True):
    """A share of a tenant's count of QUEUED jobs, kept by a trigger on jobs (migration 0014): the
    tenant's count is the sum of its rows, one per slot its transactions wrote to."""

    __tablename__ = "job_queue_counts"

    tenant_id: str = Field(foreign_key="tenants.id", primary_key=True, ondelete="CASCADE")
    slot: int = Field(primary_key=True)
    queued: int


class JobOutbox(SQLModel, table=True):
    """A committed job not yet taken by a worker: the sweep re-enqueues it until one does.

    ``created_at`` is when the job became ready to run: a retry's backoff sets it in the future.
    """

    __tablename__ = "job_outbox"

    job_id: str = Field(foreign_key="jobs.id", primary_key=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column(index=True))
    enqueued_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    """When the sweep last made sure RQ held this job."""
