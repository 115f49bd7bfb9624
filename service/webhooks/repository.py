"""All SQL about webhook endpoints, events, deliveries and attempts: tenant-scoped reads for the API,
and the deliverer's cross-tenant claims and updates."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, text, update
from sqlalchemy.engine import Row
from sqlmodel import Session, col, select

from service.ids import first_id_at
from service.repository import TenantRepository
from service.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

NOTIFY_CHANNEL = "webhook_deliveries"
HISTORY_BATCH_ROWS = 500


class EndpointRepository(TenantRepository[WebhookEndpoint]):
    """One tenant's endpoints."""

    model = WebhookEndpoint

    def all(self) -> Sequence[WebhookEndpoint]:
        return self.session.exec(self.base_statement().order_by(col(WebhookEndpoint.id))).all()

    def count(self) -> int:
        statement = select(func.count()).where(WebhookEndpoint.tenant_id == self.tenant_id)
        return int(self.session.exec(statement).one())

    def subscribers(self, event_type: str, endpoint_ids: list[str] | None = None) -> list[str]:
        """Ids of the enabled endpoints that want this event type (or of the given ones)."""
        endpoints = select(WebhookEndpoint.id).where(
            WebhookEndpoint.tenant_id == self.tenant_id, col(WebhookEndpoint.enabled).is_(True)
        )
        if endpoint_ids is not None:
            endpoints = endpoints.where(col(WebhookEndpoint.id).in_(endpoint_ids))
        else:
            subscribed = or_(
                text("webhook_endpoints.event_types = '[]'::jsonb"),
                text("webhook_endpoints.event_types ? :event_type").bindparams(event_type=event_type),
            )
            endpoints = endpoints.where(subscribed)
        with self.session.no_autoflush:  # a lookup; the caller's pending rows are flushed with its writes
            return list(self.session.exec(endpoints).all())


class EventRepository(TenantRepository[WebhookEvent]):
    """One tenant's webhook events."""

    model = WebhookEvent


class DeliveryRepository(TenantRepository[WebhookDelivery]):
    """One tenant's deliveries and their attempts."""

    model = WebhookDelivery

    def for_event(self, event_id: str, endpoint_id: str) -> WebhookDelivery | None:
        statement = self.base_statement().where(
            WebhookDelivery.event_id == event_id, WebhookDelivery.endpoint_id == endpoint_id
        )
        return self.session.exec(statement.with_for_update()).first()

    def recent(self, endpoint_id: str, *, first: int, status: str | None) -> Sequence[WebhookDelivery]:
        """Newest first."""
        statement = self.base_statement().where(WebhookDelivery.endpoint_id == endpoint_id)
        if status is not None:
            statement = statement.where(WebhookDelivery.status == status)
        return self.session.exec(statement.order_by(col(WebhookDelivery.id).desc()).limit(first)).all()

    def failed_since(self, endpoint_id: str, since: datetime) -> Sequence[WebhookDelivery]:
        statement = self.base_statement().where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status == "FAILED",
            col(WebhookDelivery.created_at) >= since,
        )
        return self.session.exec(statement.with_for_update()).all()

    def attempts(self, delivery_ids: Sequence[str]) -> Sequence[WebhookAttempt]:
        """Oldest first."""
        statement = (
            select(WebhookAttempt)
            .where(
                WebhookAttempt.tenant_id == self.tenant_id, col(WebhookAttempt.delivery_id).in_(delivery_ids)
            )
            .order_by(col(WebhookAttempt.at))
        )
        return self.session.exec(statement).all()

    def event_types(self, event_ids: Sequence[str]) -> dict[str, str]:
        statement = select(WebhookEvent.id, WebhookEvent.type).where(
            WebhookEvent.tenant_id == self.tenant_id, col(WebhookEvent.id).in_(event_ids)
        )
        return dict(self.session.exec(statement).all())

    def count_since(self, since: datetime | None) -> int:
        statement = select(func.count()).where(WebhookDelivery.tenant_id == self.tenant_id)
        if since is not None:
            statement = statement.where(col(WebhookDelivery.created_at) >= since)
        return int(self.session.exec(statement).one())

    def history(self, since: datetime | None) -> Iterator[tuple[WebhookDelivery, str]]:
        """Every delivery since a time with its event type, oldest first, read in batches."""
        statement = (
            select(WebhookDelivery, col(WebhookEvent.type))
            .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
            .where(col(WebhookDelivery.tenant_id) == self.tenant_id)
        )
        if since is not None:
            statement = statement.where(col(WebhookDelivery.created_at) >= since)
        rows = self.session.execute(
            statement.order_by(col(WebhookDelivery.id)).execution_options(yield_per=HISTORY_BATCH_ROWS)
        )
        yield from rows.tuples()


@dataclass(frozen=True)
class DeliveryFilter:
    """Which deliveries a log shows; None: any."""

    endpoint_id: str | None = None
    status: str | None = None
    event_type: str | None = None
    job_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class DeliveryLogRepository(TenantRepository[WebhookDelivery]):
    """One tenant's deliveries as a filtered log, newest first, and its endpoints' last successes."""

    model = WebhookDelivery

    def page(
        self, where: DeliveryFilter, *, first: int, before_id: str | None
    ) -> list[tuple[WebhookDelivery, str, str | None]]:
        """Deliveries with their event's type and job id, newest first, older than before_id; one more
        than asked, so the caller knows whether a next page exists. Delivery ids sort by creation time,
        so the time bounds are bounds on the (tenant_id, id) index too."""
        statement = (
            select(WebhookDelivery, col(WebhookEvent.type), col(WebhookEvent.job_id))
            .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
            .where(col(WebhookDelivery.tenant_id) == self.tenant_id)
        )
        if before_id is not None:
            statement = statement.where(col(WebhookDelivery.id) < before_id)
        if where.endpoint_id is not None:
            statement = statement.where(col(WebhookDelivery.endpoint_id) == where.endpoint_id)
        if where.status is not None:
            statement = statement.where(col(WebhookDelivery.status) == where.status)
        if where.event_type is not None:
            statement = statement.where(col(WebhookEvent.type) == where.event_type)
        if where.job_id is not None:
            statement = statement.where(col(WebhookEvent.job_id) == where.job_id)
        if where.since is not None:
            statement = statement.where(
                col(WebhookDelivery.id) >= first_id_at("whd", where.since),
                col(WebhookDelivery.created_at) >= where.since,
            )
        if where.until is not None:
            statement = statement.where(col(WebhookDelivery.created_at) < where.until)
        statement = statement.order_by(col(WebhookDelivery.id).desc()).limit(first + 1)
        return [
            (delivery, event_type, job_id) for delivery, event_type, job_id in self.session.exec(statement)
        ]

    def last_successes(self) -> dict[str, datetime]:
        """Per endpoint, when its newest succeeded delivery succeeded (walks the (endpoint_id, id) index
        back to that delivery; endpoints with none are absent)."""
        statement = text(
            """
            SELECT e.id, (
                SELECT max(a.at) FROM webhook_attempts a
                WHERE a.status_code BETWEEN 200 AND 299 AND a.delivery_id = (
                    SELECT d.id FROM webhook_deliveries d
                    WHERE d.endpoint_id = e.id AND d.status = 'SUCCEEDED'
                    ORDER BY d.id DESC LIMIT 1
                )
            ) FROM webhook_endpoints e WHERE e.tenant_id = :tenant_id
            """
        )
        rows = self.session.execute(statement, {"tenant_id": self.tenant_id})
        return {endpoint_id: at for endpoint_id, at in rows if at is not None}


def wake_deliverers(session: Session) -> None:
    """Ask the deliverers to look for due deliveries once this transaction commits (NOTIFY is
    transactional: Postgres sends it only if the transaction commits)."""
    session.execute(text("SELECT pg_notify(:channel, '')").bindparams(channel=NOTIFY_CHANNEL))


def forget_artifact(session: Session, job_id: str) -> None:
    """The job's file is gone: its events no longer sign download URLs for it."""
    statement = (
        update(WebhookEvent)
        .where(col(WebhookEvent.job_id) == job_id, col(WebhookEvent.artifact_key).is_not(None))
        .values(artifact_key=None)
    )
    session.execute(statement)


# --- the deliverer's side: every tenant's deliveries ---------------------------------------------

_CLAIM = text(
    """
    WITH ranked AS (
        SELECT id, row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at) AS place
        FROM webhook_deliveries
        WHERE status = 'PENDING' AND next_attempt_at <= now()
          AND (lease_until IS NULL OR lease_until < now())
          AND NOT (endpoint_id = ANY(:busy))
    ), due AS (
        SELECT d.id FROM webhook_deliveries d JOIN ranked r ON r.id = d.id
        WHERE r.place <= :per_endpoint
          -- again here: the row lock re-checks these on the newest row version, so a delivery that
          -- another deliverer leased after this statement's snapshot is skipped, not sent twice
          AND d.status = 'PENDING' AND d.next_attempt_at <= now()
          AND (d.lease_until IS NULL OR d.lease_until < now())
        ORDER BY d.next_attempt_at
        LIMIT :limit
        FOR UPDATE OF d SKIP LOCKED
    )
    UPDATE webhook_deliveries d
    SET lease_until = now() + make_interval(secs => :lease)
    FROM due, webhook_events e, webhook_endpoints ep
    WHERE d.id = due.id AND e.id = d.event_id AND ep.id = d.endpoint_id
    RETURNING d.id, d.tenant_id, d.endpoint_id, d.attempt_count, d.next_trigger,
              e.id AS event_id, e.type, e.data, e.created_at, e.job_id, e.trace_context, e.artifact_key,
              ep.url, ep.enabled, ep.signing_keys
    """
).bindparams(bindparam("busy", expanding=False))

_UPDATE_DELIVERY = text(
    """
    UPDATE webhook_deliveries SET
        status = :status,
        attempt_count = :attempt_count,
        next_attempt_at = now() + make_interval(secs => CAST(:delay AS double precision)),
        next_trigger = 'scheduled',
        lease_until = NULL,
        updated_at = now()
    WHERE id = :id
    """
)


def claim_due(
    session: Session, *, limit: int, per_endpoint: int, lease_seconds: float, busy_endpoints: list[str]
) -> Sequence[Row[Any]]:
    """Lease up to `limit` due deliveries (`per_endpoint` at most for each endpoint), oldest due first,
    skipping the busy endpoints; each row carries its event and endpoint."""
    parameters = {
        "limit": limit,
        "per_endpoint": per_endpoint,
        "lease": lease_seconds,
        "busy": busy_endpoints,
    }
    return session.execute(_CLAIM, parameters).all()


def release(session: Session, delivery_ids: list[str]) -> None:
    """Give leases back unsent (another round, or another deliverer, takes them)."""
    if delivery_ids:
        session.execute(
            text("UPDATE webhook_deliveries SET lease_until = NULL WHERE id = ANY(:ids)"),
            {"ids": delivery_ids},
        )


def add_attempts(session: Session, attempts: Sequence[WebhookAttempt]) -> None:
    session.add_all(attempts)


def update_deliveries(session: Session, updates: Sequence[dict[str, Any]]) -> None:
    """Each delivery's new status, attempt count, next attempt (in `delay` seconds) and no lease."""
    if updates:
        session.execute(_UPDATE_DELIVERY, list(updates))


def clear_failing(session: Session, endpoint_ids: Sequence[str]) -> None:
    """These endpoints just succeeded: their failing streak ends."""
    statement = text(
        "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ANY(:ids) AND failing_since IS NOT NULL"
    )
    session.execute(statement, {"ids": list(endpoint_ids)})


def lock_endpoints(session: Session, endpoint_ids: Sequence[str]) -> Sequence[WebhookEndpoint]:
    statement = select(WebhookEndpoint).where(col(WebhookEndpoint.id).in_(endpoint_ids)).with_for_update()
    return session.exec(statement).all()


def endpoints_after(session: Session, last_id: str, limit: int) -> Sequence[WebhookEndpoint]:
    """Every tenant's endpoints, by id, locked: a batch of a walk over all of them."""
    statement = (
        select(WebhookEndpoint)
        .where(col(WebhookEndpoint.id) > last_id)
        .order_by(col(WebhookEndpoint.id))
        .limit(limit)
        .with_for_update()
    )
    return session.exec(statement).all()
