"""What happens to a delivery row: it is claimed when due, and each attempt's outcome moves it on
(succeeded, due again later, or failed) and keeps its endpoint's health.

Postgres alone decides what is due (``status = 'PENDING' AND next_attempt_at <= now()``), so a Redis
restart, a deliverer crash or a lost NOTIFY delays a delivery by at most one poll, never loses it.
A claimed delivery carries a lease; a deliverer that dies mid-send lets it lapse and the delivery is
due again (at-least-once; receivers dedupe by ``webhook-id``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from observability.metrics import OVERDUE_SECONDS, DeliveryBacklog
from service.ids import new_id
from service.models import utcnow
from service.settings import Settings
from service.webhooks import repository
from service.webhooks.models import AttemptTrigger, DeliveryStatus
from service.webhooks.retry import next_delay
from service.webhooks.service import disable, recovered

RESPONSE_BODY_LIMIT = 4096


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
    timeout_seconds: float | None = None
    """The endpoint's own attempt deadline; None: WEBHOOK_TIMEOUT_SECONDS."""
    retry_schedule: list[float] | None = None
    """The endpoint's own retry schedule; None: WEBHOOK_RETRY_SCHEDULE."""


class Failure(enum.StrEnum):
    """Why an attempt got no response, when it was not the network."""

    TIMEOUT = "timeout"  # no answer within WEBHOOK_TIMEOUT_SECONDS
    REFUSED = "refused"  # the SSRF guard refused the URL or its address
    NOT_SENT = "not_sent"  # the request could not be prepared (the key, the body, a setting)


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
    request_headers: dict[str, str] | None = None
    response_headers: dict[str, str] | None = None
    failure: Failure | None = None
    attempted: bool = True
    """False when nothing was sent (the endpoint was disabled): no attempt row, the delivery fails."""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim_due(
    session: Session,
    limit: int,
    settings: Settings,
    lease_seconds: float,
    endpoints_in_flight: Mapping[str, int],
    tenants_in_flight: Mapping[str, int],
) -> list[Claimed]:
    """Lease up to `limit` due deliveries, sharing the caller's slots fairly: counting what it has in
    flight, at most WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT per endpoint, and for each tenant with work an
    equal share of WEBHOOK_MAX_IN_FLIGHT (less one endpoint's worth kept for a tenant that starts
    sending, so it never waits for another tenant's slow receivers); least loaded tenants first."""
    rows = repository.claim_due(
        session,
        limit=limit,
        per_endpoint=settings.webhook_max_in_flight_per_endpoint,
        max_in_flight=settings.webhook_max_in_flight,
        lease_seconds=lease_seconds,
        endpoints_in_flight=endpoints_in_flight,
        tenants_in_flight=tenants_in_flight,
    )
    return [
        Claimed(
            delivery_id=row["id"],
            tenant_id=row["tenant_id"],
            endpoint_id=row["endpoint_id"],
            attempt_count=row["attempt_count"],
            trigger=row["next_trigger"],
            event_id=row["event_id"],
            event_type=row["type"],
            event_data=row["data"],
            event_created_at=row["created_at"],
            job_id=row["job_id"],
            url=row["url"],
            endpoint_enabled=row["enabled"],
            signing_keys=row["signing_keys"],
            artifact_key=row["artifact_key"],
            trace_context=row["trace_context"],
            timeout_seconds=row["timeout_seconds"],
            retry_schedule=row["retry_schedule"],
        )
        for row in rows
    ]


def backlog(session: Session) -> DeliveryBacklog:
    """Deliveries waiting for a deliverer: due now, and due for longer than OVERDUE_SECONDS."""
    due, overdue = repository.count_due(session, overdue_seconds=OVERDUE_SECONDS)
    return DeliveryBacklog(due=due, overdue=overdue)


def clean_body(raw: bytes) -> str:
    """A response body fit to store: at most RESPONSE_BODY_LIMIT bytes, decoded, without NUL bytes."""
    return raw[:RESPONSE_BODY_LIMIT].decode("utf-8", errors="replace").replace("\x00", "")


def record(session: Session, outcomes: list[Outcome], settings: Settings) -> list[Outcome]:
    """Store each attempt and move its delivery on: done, failed, or due again later.

    Returns the outcomes whose delivery no longer exists (its endpoint was deleted while the attempt
    was in flight): they are dropped. The endpoints and then the deliveries are locked first, in the
    order an endpoint's deletion locks them, so a deletion waits for this or this sees it done. All of
    it goes to Postgres in one round trip; only a failure needs more (_track_failures).
    """
    if not outcomes:
        return []
    attempted = [o for o in outcomes if o.attempted]
    recorded = repository.record_outcomes(
        session,
        sorted({o.claimed.endpoint_id for o in outcomes}),
        [
            repository.AttemptRow(
                id=new_id("wha"),
                delivery_id=o.claimed.delivery_id,
                tenant_id=o.claimed.tenant_id,
                at=o.at,
                status_code=o.status_code,
                duration_ms=o.duration_ms,
                error=o.error[:500] if o.error else None,
                response_body=o.response_body,
                request_headers=o.request_headers,
                response_headers=o.response_headers,
                trigger=o.claimed.trigger,
            )
            for o in attempted
        ],
        sorted((_delivery_update(o, settings) for o in outcomes), key=lambda update: update.id),
        [
            repository.Success(o.claimed.endpoint_id, o.at, o.claimed.delivery_id)
            for o in attempted
            if o.succeeded
        ],
    )
    for row in recorded.recovered:
        if row["was_failing_since"] is not None and row["alerts_sent"] > 0:
            recovered(session, row["tenant_id"], row["id"], row["url"], row["was_failing_since"], row["at"])
    kept = [o for o in attempted if o.claimed.delivery_id in recorded.present]
    _track_failures(session, kept, {o.claimed.endpoint_id for o in kept if o.succeeded}, settings)
    return [o for o in outcomes if o.claimed.delivery_id not in recorded.present]


def _delivery_update(outcome: Outcome, settings: Settings) -> repository.DeliveryUpdate:
    claimed = outcome.claimed
    scheduled = claimed.trigger == AttemptTrigger.SCHEDULED
    attempts = claimed.attempt_count + (1 if scheduled and outcome.attempted else 0)
    if outcome.succeeded:
        return repository.DeliveryUpdate(claimed.delivery_id, DeliveryStatus.SUCCEEDED, attempts, None)
    # A manual attempt does not use up the schedule: a pending delivery keeps its retries,
    # a failed one (schedule exhausted) stays failed.
    delay = None
    if outcome.attempted and outcome.status_code != 410:
        delay = next_delay(attempts, outcome.retry_after, settings, claimed.retry_schedule)
    status = DeliveryStatus.FAILED if delay is None else DeliveryStatus.PENDING
    return repository.DeliveryUpdate(claimed.delivery_id, status, attempts, delay)


def describe_failure(outcome: Outcome) -> str:
    """An endpoint's lastError: the status and what went wrong."""
    if outcome.status_code is None:
        return (outcome.error or "no response")[:500]
    return (f"HTTP {outcome.status_code}" + (f": {outcome.error}" if outcome.error else ""))[:500]


def _track_failures(
    session: Session, attempted: list[Outcome], healthy: set[str], settings: Settings
) -> None:
    """Failures keep lastError; a 410 or a streak past the limit disables the endpoint. An endpoint
    that also succeeded in this batch (`healthy`) is not failing."""
    failing = {o.claimed.endpoint_id: o for o in attempted if not o.succeeded}
    failing_ids = [endpoint_id for endpoint_id in failing if endpoint_id not in healthy]
    if not failing_ids:
        return
    now = utcnow()
    for endpoint in repository.lock_endpoints(session, failing_ids):
        endpoint.last_error = describe_failure(failing[endpoint.id])
        if not endpoint.enabled:
            session.add(endpoint)
            continue
        if endpoint.failing_since is None:
            endpoint.failing_since = failing[endpoint.id].at
        if failing[endpoint.id].status_code == 410:
            disable(session, endpoint, "the endpoint answered 410 Gone", gone=True)
        elif (now - endpoint.failing_since).total_seconds() > settings.webhook_disable_after_seconds:
            disable(session, endpoint, "no successful delivery for too long")
        session.add(endpoint)
