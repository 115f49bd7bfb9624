"""Webhook tables in the manner of Svix: endpoint, event (written once), delivery per endpoint, attempt."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from service.ids import new_id
from service.models import jsonb_column, timestamp_column, utcnow


class SigningScheme(enum.StrEnum):
    V1 = "V1"  # HMAC-SHA256 with a whsec_ secret
    V1A = "V1A"  # ed25519; receivers verify with the whpk_ public key


class DeliveryStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class AttemptTrigger(enum.StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"


class WebhookEndpoint(SQLModel, table=True):
    """Where a tenant wants events sent, which ones, and the keys that sign them."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        CheckConstraint("signing IN ('V1','V1A')", name="signing_valid"),
        Index("ix_webhook_endpoints_tenant_id_id", "tenant_id", "id"),
    )

    id: str = Field(default_factory=lambda: new_id("whe"), primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", ondelete="CASCADE")
    url: str = Field(max_length=2000)
    description: str | None = Field(default=None, max_length=500)
    event_types: list[str] = Field(default_factory=list, sa_column=jsonb_column())
    """Empty: every event type."""
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, max_length=200)
    signing: str = Field(default=SigningScheme.V1, max_length=10)
    signing_keys: list[dict[str, Any]] = Field(default_factory=list, sa_column=jsonb_column())
    """Newest first: ``{"key": <encrypted whsec_/whsk_>, "expires_at": ISO-8601 | null}``."""
    public_key: str | None = Field(default=None, max_length=100)
    """The newest key's ``whpk_`` for V1A endpoints."""
    failing_since: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    """First failure with no success since; disabled once it is older than the configured period."""
    failing_alerts: int = 0
    """How many `endpoint.failing` alerts (1 h, 24 h, 72 h) this failing streak has sent."""
    last_success_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    last_error: str | None = Field(default=None, max_length=500)
    """What the last failed attempt got (a status code or an error), kept until a success."""
    rate_limit_per_second: float | None = None
    """At most this many attempts per second to this endpoint; None: no limit but the in-flight caps."""
    rate_tat: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    """The rate limit's theoretical arrival time (GCRA): the claim may run ahead of now by one second."""
    timeout_seconds: float | None = None
    """This endpoint's attempt deadline; None: WEBHOOK_TIMEOUT_SECONDS."""
    retry_schedule: list[float] | None = Field(default=None, sa_column=jsonb_column(nullable=True))
    """This endpoint's retry schedule in seconds; None: WEBHOOK_RETRY_SCHEDULE."""
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class WebhookEvent(SQLModel, table=True):
    """One thing that happened, written once in the transaction that made it happen."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ix_webhook_events_tenant_id_id", "tenant_id", "id"),
        Index("ix_webhook_events_tenant_id_type_id", "tenant_id", "type", "id"),  # the log by event type
        Index("ix_webhook_events_created_at", "created_at"),  # retention
    )

    id: str = Field(default_factory=lambda: new_id("evt"), primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", ondelete="CASCADE")
    type: str = Field(max_length=50)
    data: dict[str, Any] = Field(sa_column=jsonb_column())
    job_id: str | None = Field(default=None, max_length=40)
    artifact_key: str | None = Field(default=None, max_length=500)
    """Storage key of the job's file (job.succeeded): each attempt signs a fresh downloadUrl for it."""
    trace_context: dict[str, str] | None = Field(default=None, sa_column=jsonb_column(nullable=True))
    """W3C carrier of the span that caused it: each delivery attempt continues (or links to) it."""
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint: pending until an attempt succeeds or the schedule runs out."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('PENDING','SUCCEEDED','FAILED')", name="status_valid"),
        UniqueConstraint("event_id", "endpoint_id"),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_tenant_id_id", "tenant_id", "id"),  # the delivery log
        Index("ix_webhook_deliveries_tenant_id_status_id", "tenant_id", "status", "id"),  # by status
        Index("ix_webhook_deliveries_tenant_id_job_id_id", "tenant_id", "job_id", "id"),  # by job
        Index("ix_webhook_deliveries_tenant_id_event_type_id", "tenant_id", "event_type", "id"),  # by type
        Index(  # per-job order: a job's earlier deliveries to the endpoint still pending
            "ix_webhook_deliveries_endpoint_id_job_id_id",
            "endpoint_id",
            "job_id",
            "id",
            postgresql_where=text("status = 'PENDING' AND job_id IS NOT NULL"),
        ),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'PENDING'"),
        ),
        Index(  # the deliverer's claim: each endpoint's pending deliveries in due order
            "ix_webhook_deliveries_pending",
            "endpoint_id",
            "next_attempt_at",
            "id",
            postgresql_where=text("status = 'PENDING'"),
        ),
    )

    id: str = Field(default_factory=lambda: new_id("whd"), primary_key=True)
    tenant_id: str = Field(foreign_key="tenants.id", ondelete="CASCADE")
    event_id: str = Field(foreign_key="webhook_events.id", ondelete="CASCADE")
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", ondelete="CASCADE")
    job_id: str | None = Field(default=None, max_length=40)
    """The event's job (copied from it): the log filters by it, and a job's deliveries keep their order."""
    event_type: str | None = Field(default=None, max_length=50)
    """The event's type (copied from it): the log filters by it, reading one index newest first."""
    status: str = Field(default=DeliveryStatus.PENDING, max_length=20)
    attempt_count: int = 0
    """Scheduled attempts made; indexes the retry schedule."""
    next_attempt_at: datetime | None = Field(
        default_factory=utcnow, sa_column=timestamp_column(nullable=True)
    )
    next_trigger: str = Field(default=AttemptTrigger.SCHEDULED, max_length=20)
    lease_until: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    """Set while a deliverer sends it; an expired lease means the sender died and it is due again."""
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class WebhookAttempt(SQLModel, table=True):
    """One POST of a delivery and what came back."""

    __tablename__ = "webhook_attempts"

    id: str = Field(default_factory=lambda: new_id("wha"), primary_key=True)
    delivery_id: str = Field(foreign_key="webhook_deliveries.id", index=True, ondelete="CASCADE")
    tenant_id: str = Field(foreign_key="tenants.id", ondelete="CASCADE")
    at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    status_code: int | None = None
    duration_ms: int
    error: str | None = Field(default=None, max_length=500)
    response_body: str | None = Field(default=None, max_length=4096)
    request_headers: dict[str, str] | None = Field(default=None, sa_column=jsonb_column(nullable=True))
    """What was sent but the body (the signature included: it proves nothing without the key)."""
    response_headers: dict[str, str] | None = Field(default=None, sa_column=jsonb_column(nullable=True))
    trigger: str = Field(default=AttemptTrigger.SCHEDULED, max_length=20)
