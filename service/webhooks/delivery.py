"""The Postgres side of sending webhooks: claim due deliveries, record what each attempt got back.

Postgres alone decides what is due (``status = 'PENDING' AND next_attempt_at <= now()``), so a Redis
restart, a deliverer crash or a lost NOTIFY delays a delivery by at most one poll, never loses it.
A claimed delivery carries a lease; a deliverer that dies mid-send lets it lapse and the delivery is
due again (at-least-once; receivers dedupe by ``webhook-id``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlmodel import Session, col, select

from callbacks.events import publish
from callbacks.models import AttemptTrigger, DeliveryStatus, WebhookAttempt, WebhookEndpoint
from callbacks.schedule import next_delay
from observability.metrics import record_endpoint_disabled
from service.models import utcnow
from service.settings import Settings

log = logging.getLogger(__name__)

RESPONSE_BODY_LIMIT = 4096

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
              e.id AS event_id, e.type, e.data, e.created_at, e.job_id, e.trace_context,
              ep.url, ep.enabled, ep.signing_keys,
              (SELECT artifact_key FROM jobs WHERE jobs.id = e.job_id) AS artifact_key
    """
).bindparams(bindparam("busy", expanding=False))


@dataclass(frozen=True)
class Claimed:
    """A due delivery this deliverer holds the lease on, with what sending it needs."""

    delivery_id: str
    tenant_id: str
    endpoint_id: str
    attempt_count: int
    trigger: str
    event_id: str
    event_type: str
    event_data: dict[str, Any]
    event_created_at: datetime
    job_id: str | None
    url: str
    endpoint_enabled: bool
    signing_keys: list[dict[str, Any]]
    artifact_key: str | None
    trace_context: dict[str, str] | None = None


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status code, or an error before any response."""

    claimed: Claimed
    at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    retry_after: float | None = None
    attempted: bool = True
    """False when nothing was sent (the endpoint was disabled): no attempt row, the delivery fails."""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim_due(
    session: Session, limit: int, per_endpoint: int, lease_seconds: float, busy_endpoints: list[str]
) -> list[Claimed]:
    """Lease up to `limit` due deliveries (`per_endpoint` at most for each endpoint), oldest due first,
    skipping the busy endpoints."""
    parameters = {
        "limit": limit,
        "per_endpoint": per_endpoint,
        "lease": lease_seconds,
        "busy": busy_endpoints,
    }
    rows = session.execute(_CLAIM, parameters).all()
    return [
        Claimed(
            delivery_id=row.id,
            tenant_id=row.tenant_id,
            endpoint_id=row.endpoint_id,
            attempt_count=row.attempt_count,
            trigger=row.next_trigger,
            event_id=row.event_id,
            event_type=row.type,
            event_data=row.data,
            event_created_at=row.created_at,
            job_id=row.job_id,
            url=row.url,
            endpoint_enabled=row.enabled,
            signing_keys=row.signing_keys,
            artifact_key=row.artifact_key,
            trace_context=row.trace_context,
        )
        for row in rows
    ]


def release(session: Session, delivery_ids: list[str]) -> None:
    """Give leases back unsent (another round, or another deliverer, takes them)."""
    if delivery_ids:
        session.execute(
            text("UPDATE webhook_deliveries SET lease_until = NULL WHERE id = ANY(:ids)"),
            {"ids": delivery_ids},
        )


def clean_body(raw: bytes) -> str:
    """A response body fit to store: at most RESPONSE_BODY_LIMIT bytes, decoded, without NUL bytes."""
    return raw[:RESPONSE_BODY_LIMIT].decode("utf-8", errors="replace").replace("\x00", "")


def record(session: Session, outcomes: list[Outcome], settings: Settings) -> None:
    """Store each attempt and move its delivery on: done, failed, or due again later."""
    if not outcomes:
        return
    session.add_all(
        WebhookAttempt(
            delivery_id=o.claimed.delivery_id,
            tenant_id=o.claimed.tenant_id,
            at=o.at,
            status_code=o.status_code,
            duration_ms=o.duration_ms,
            error=o.error[:500] if o.error else None,
            response_body=o.response_body,
            trigger=o.claimed.trigger,
        )
        for o in outcomes
        if o.attempted
    )
    updates = [_delivery_update(o, settings) for o in outcomes]
    session.execute(
        text(
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
        ),
        updates,
    )
    _track_endpoint_health(session, outcomes, settings)


def _delivery_update(outcome: Outcome, settings: Settings) -> dict[str, Any]:
    claimed = outcome.claimed
    scheduled = claimed.trigger == AttemptTrigger.SCHEDULED
    attempts = claimed.attempt_count + (1 if scheduled and outcome.attempted else 0)
    update: dict[str, Any] = {"id": claimed.delivery_id, "attempt_count": attempts, "delay": None}
    if outcome.succeeded:
        update["status"] = DeliveryStatus.SUCCEEDED
        return update
    # A manual attempt does not use up the schedule: a pending delivery keeps its retries,
    # a failed one (schedule exhausted) stays failed.
    delay = None
    if outcome.attempted and outcome.status_code != 410:
        delay = next_delay(attempts, outcome.retry_after, settings)
    update["status"] = DeliveryStatus.FAILED if delay is None else DeliveryStatus.PENDING
    update["delay"] = delay
    return update


def _track_endpoint_health(session: Session, outcomes: list[Outcome], settings: Settings) -> None:
    """Successes clear an endpoint's failing streak; a 410 or a streak past the limit disables it."""
    attempted = [o for o in outcomes if o.attempted]
    healthy = {o.claimed.endpoint_id for o in attempted if o.succeeded}
    failing = {o.claimed.endpoint_id: o for o in attempted if not o.succeeded}
    if healthy:
        recovered = text(
            "UPDATE webhook_endpoints SET failing_since = NULL"
            " WHERE id = ANY(:ids) AND failing_since IS NOT NULL"
        )
        session.execute(recovered, {"ids": list(healthy)})
    failing_ids = [endpoint_id for endpoint_id in failing if endpoint_id not in healthy]
    if not failing_ids:
        return
    now = utcnow()
    endpoints = session.exec(
        select(WebhookEndpoint).where(col(WebhookEndpoint.id).in_(failing_ids)).with_for_update()
    ).all()
    for endpoint in endpoints:
        if not endpoint.enabled:
            continue
        if endpoint.failing_since is None:
            endpoint.failing_since = failing[endpoint.id].at
        if failing[endpoint.id].status_code == 410:
            disable(session, endpoint, "the endpoint answered 410 Gone")
        elif (now - endpoint.failing_since).total_seconds() > settings.webhook_disable_after_seconds:
            disable(session, endpoint, "no successful delivery for too long")
        session.add(endpoint)


def disable(session: Session, endpoint: WebhookEndpoint, reason: str) -> None:
    """Disable an endpoint and tell the tenant's other endpoints (an ``endpoint.disabled`` event)."""
    log.warning("disabling webhook endpoint %s: %s", endpoint.id, reason)
    record_endpoint_disabled(reason)
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.updated_at = utcnow()
    session.add(endpoint)
    session.flush()
    data = {"endpoint": {"id": endpoint.id, "url": endpoint.url, "disabledReason": reason}}
    publish(session, endpoint.tenant_id, "endpoint.disabled", data)
