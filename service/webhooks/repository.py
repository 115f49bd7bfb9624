"""All SQL about webhook endpoints, events, deliveries and attempts: tenant-scoped reads for the API,
and the deliverer's cross-tenant claims and updates."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, LiteralString, NamedTuple

from sqlalchemy import func, text, update
from sqlmodel import Session, col, select

from service.db import Statement, read_and_commit, read_pipelined, write_with_next
from service.ids import first_id_at
from service.repository import TenantRepository
from service.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

NOTIFY_CHANNEL = "webhook_deliveries"
HISTORY_BATCH_ROWS = 500
ENABLED_FILTERS: LiteralString = (
    "SELECT id, event_types FROM webhook_endpoints WHERE tenant_id = {tenant} AND enabled ORDER BY id"
)
"""EndpointRepository.enabled_filters in plain SQL, the tenant's id given as SQL in place of {tenant}."""


class EndpointRepository(TenantRepository[WebhookEndpoint]):
    """One tenant's endpoints."""

    model = WebhookEndpoint

    def all(self) -> Sequence[WebhookEndpoint]:
        return self.session.exec(self.base_statement().order_by(col(WebhookEndpoint.id))).all()

    def count(self) -> int:
        statement = select(func.count()).where(WebhookEndpoint.tenant_id == self.tenant_id)
        return int(self.session.exec(statement).one())

    def enabled_filters(self) -> list[tuple[str, list[str]]]:
        """(id, event types) of the tenant's enabled endpoints, by id; no types: every type."""
        statement = (
            select(WebhookEndpoint.id, WebhookEndpoint.event_types)
            .where(WebhookEndpoint.tenant_id == self.tenant_id, col(WebhookEndpoint.enabled).is_(True))
            .order_by(col(WebhookEndpoint.id))
        )
        with self.session.no_autoflush:  # a lookup; the caller's pending rows are flushed with its writes
            return [(endpoint_id, list(types)) for endpoint_id, types in self.session.exec(statement)]


class EventRepository(TenantRepository[WebhookEvent]):
    """One tenant's webhook events."""

    model = WebhookEvent

    def since(self, first_id: str, types: Sequence[str], limit: int) -> Sequence[WebhookEvent]:
        """Events with ids from first_id on (ids sort by creation time), oldest first; of these types
        only, unless none are given."""
        statement = self.base_statement().where(col(WebhookEvent.id) >= first_id)
        if types:
            statement = statement.where(col(WebhookEvent.type).in_(types))
        return self.session.exec(statement.order_by(col(WebhookEvent.id)).limit(limit)).all()

    def by_ids(self, event_ids: Sequence[str]) -> Sequence[WebhookEvent]:
        return self.session.exec(self.base_statement().where(col(WebhookEvent.id).in_(event_ids))).all()


class DeliveryRepository(TenantRepository[WebhookDelivery]):
    """One tenant's deliveries and their attempts."""

    model = WebhookDelivery

    def by_ids(self, delivery_ids: Sequence[str]) -> Sequence[WebhookDelivery]:
        return self.session.exec(self.base_statement().where(col(WebhookDelivery.id).in_(delivery_ids))).all()

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


ID_CLOCK_SLACK = timedelta(minutes=1)
"""How far a delivery's id time may stray from its created_at (both are taken as it is made): the id
bounds of a time filter are widened by this much, and created_at then decides exactly."""


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
    """One tenant's deliveries as a filtered log, newest first."""

    model = WebhookDelivery

    def page(
        self, where: DeliveryFilter, *, first: int, before_id: str | None
    ) -> list[tuple[WebhookDelivery, str, str | None]]:
        """Deliveries with their event's type and job id, newest first, older than before_id; one more
        than asked, so the caller knows whether a next page exists. Delivery ids sort by creation time,
        so both time bounds are also bounds on the id, which keep a time range an index range read
        (without the upper one, a range deep in the past read every newer delivery: 393 ms at 5M)."""
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
            statement = statement.where(col(WebhookDelivery.event_type) == where.event_type)
        if where.job_id is not None:
            statement = statement.where(col(WebhookDelivery.job_id) == where.job_id)
        if where.since is not None:
            statement = statement.where(
                col(WebhookDelivery.id) >= first_id_at("whd", where.since - ID_CLOCK_SLACK),
                col(WebhookDelivery.created_at) >= where.since,
            )
        if where.until is not None:
            statement = statement.where(
                col(WebhookDelivery.id) < first_id_at("whd", where.until + ID_CLOCK_SLACK),
                col(WebhookDelivery.created_at) < where.until,
            )
        statement = statement.order_by(col(WebhookDelivery.id).desc()).limit(first + 1)
        return [
            (delivery, event_type, job_id) for delivery, event_type, job_id in self.session.exec(statement)
        ]


_INSERT_EVENT: LiteralString = """
    WITH event AS (
        INSERT INTO webhook_events
            (id, tenant_id, type, data, job_id, artifact_key, trace_context, created_at)
        VALUES (%(event_id)s, %(tenant_id)s, %(type)s, CAST(%(data)s AS jsonb), %(job_id)s, %(artifact_key)s,
                CAST(%(trace_context)s AS jsonb), %(now)s)
    )
    INSERT INTO webhook_deliveries (id, tenant_id, event_id, endpoint_id, job_id, event_type, status,
                                    attempt_count, next_attempt_at, next_trigger, created_at, updated_at)
    SELECT delivery.id, %(tenant_id)s, %(event_id)s, delivery.endpoint_id, %(job_id)s, %(type)s,
           'PENDING', 0, %(now)s, 'scheduled', %(now)s, %(now)s
    FROM unnest(CAST(%(delivery_ids)s AS text[]), CAST(%(endpoint_ids)s AS text[]))
        AS delivery(id, endpoint_id)
"""


def insert_event(session: Session, event: WebhookEvent, deliveries: Sequence[tuple[str, str]]) -> None:
    """The event and a pending delivery (id, endpoint id) of it for each endpoint, in one statement,
    sent with the transaction's next round trip when it defers writes (service.db.write_with_next)."""
    parameters = {
        "event_id": event.id,
        "tenant_id": event.tenant_id,
        "type": event.type,
        "data": json.dumps(event.data),
        "job_id": event.job_id,
        "artifact_key": event.artifact_key,
        "trace_context": json.dumps(event.trace_context) if event.trace_context is not None else None,
        "now": event.created_at,
        "delivery_ids": [delivery_id for delivery_id, _ in deliveries],
        "endpoint_ids": [endpoint_id for _, endpoint_id in deliveries],
    }
    write_with_next(session, (_INSERT_EVENT, parameters))


def wake_deliverers(session: Session) -> None:
    """Ask the deliverers to look for due deliveries once this transaction commits (NOTIFY is
    transactional: Postgres sends it only if the transaction commits)."""
    write_with_next(session, ("SELECT pg_notify(%(channel)s, '')", {"channel": NOTIFY_CHANNEL}))


def forget_artifact(session: Session, job_id: str) -> None:
    """The job's file is gone: its events no longer sign download URLs for it."""
    statement = (
        update(WebhookEvent)
        .where(col(WebhookEvent.job_id) == job_id, col(WebhookEvent.artifact_key).is_not(None))
        .values(artifact_key=None)
    )
    session.execute(statement)


# --- the deliverer's side: every tenant's deliveries ---------------------------------------------

# The claim, in stages (each a CTE below; extend it by adding a stage, not by folding one into another):
#   1. pending_endpoints: every endpoint with a pending delivery, found by a skip scan of
#      ix_webhook_deliveries_pending (one index probe per endpoint, whatever its backlog);
#   2. paced_endpoints: the rate-limited ones among them, locked, with their pace (GCRA);
#   3. endpoint_room: how many more of each this deliverer may start (its per-endpoint cap less what
#      it has in flight there, and no more than the pace allows);
#   4. due: each endpoint's oldest due, unleased deliveries, at most its room, none ahead of an
#      earlier pending delivery of its job (an index range read that stops at the first not yet due);
#   5. sendable / share: each tenant's place in line and its share of the deliverer's slots;
#   6. picked: lock the winners (SKIP LOCKED) re-checking they are still due and unleased;
#   7. leased / paced: lease them, advance each paced endpoint's pace by what it got, and return
#      each delivery with its event and endpoint.
# The cost follows what is claimed and the number of endpoints with pending deliveries, never the
# size of a backlog.
_CLAIM: LiteralString = """
    WITH RECURSIVE endpoint_load AS (
        SELECT * FROM unnest(CAST(%(endpoint_ids)s AS text[]), CAST(%(endpoint_counts)s AS int[]))
            AS l(endpoint_id, n)
    ), tenant_load AS (
        SELECT * FROM unnest(CAST(%(tenant_ids)s AS text[]), CAST(%(tenant_counts)s AS int[]))
            AS l(tenant_id, n)
    ), pending_endpoints(endpoint_id) AS (
        (SELECT endpoint_id FROM webhook_deliveries WHERE status = 'PENDING' ORDER BY endpoint_id LIMIT 1)
        UNION ALL
        SELECT (SELECT d.endpoint_id FROM webhook_deliveries d
                WHERE d.status = 'PENDING' AND d.endpoint_id > p.endpoint_id
                ORDER BY d.endpoint_id LIMIT 1)
        FROM pending_endpoints p WHERE p.endpoint_id IS NOT NULL
    ), paced_endpoints AS (
        -- the rate-limited ones, locked: a concurrent claim waits here and then reads the pace this
        -- one advanced (a locked row is re-read at its newest version), so two claims never both
        -- take the same room
        SELECT ep.id, ep.rate_limit_per_second, GREATEST(coalesce(ep.rate_tat, now()), now()) AS tat
        FROM webhook_endpoints ep JOIN pending_endpoints p ON p.endpoint_id = ep.id
        WHERE ep.rate_limit_per_second IS NOT NULL
        ORDER BY ep.id  -- the order every claim and recording locks endpoints in: no deadlock
        FOR NO KEY UPDATE OF ep
    ), endpoint_room AS (
        -- room: the per-endpoint cap less what is in flight here, and for an endpoint with a rate
        -- limit what its pace allows (GCRA: the theoretical arrival time, tat, may run ahead of now by
        -- at most one second, or one interval when slower than 1/s: a burst of one second's worth)
        SELECT p.endpoint_id, LEAST(
            %(per_endpoint)s - coalesce(el.n, 0),
            CASE WHEN pe.id IS NULL THEN %(per_endpoint)s
                 ELSE floor(pe.rate_limit_per_second * extract(epoch FROM
                        now() + make_interval(secs => GREATEST(1.0, 1.0 / pe.rate_limit_per_second))
                        - pe.tat))::int
            END) AS room
        FROM pending_endpoints p
        LEFT JOIN paced_endpoints pe ON pe.id = p.endpoint_id
        LEFT JOIN endpoint_load el ON el.endpoint_id = p.endpoint_id
        WHERE p.endpoint_id IS NOT NULL AND coalesce(el.n, 0) < %(per_endpoint)s
    ), due AS (
        SELECT d.id, d.tenant_id, d.next_attempt_at
        FROM endpoint_room r CROSS JOIN LATERAL (
            SELECT d.id, d.tenant_id, d.next_attempt_at FROM webhook_deliveries d
            WHERE d.endpoint_id = r.endpoint_id AND d.status = 'PENDING' AND d.next_attempt_at <= now()
              AND (d.lease_until IS NULL OR d.lease_until < now())
              -- per-job order: not before every earlier delivery of its job to this endpoint has
              -- succeeded or been given up (other jobs' deliveries pass it by)
              AND (d.job_id IS NULL OR NOT EXISTS (
                  SELECT 1 FROM webhook_deliveries earlier
                  WHERE earlier.endpoint_id = d.endpoint_id AND earlier.job_id = d.job_id
                    AND earlier.status = 'PENDING' AND earlier.job_id IS NOT NULL
                    AND (earlier.created_at, earlier.id) < (d.created_at, d.id)))
            ORDER BY d.next_attempt_at, d.id
            LIMIT GREATEST(r.room, 0)
        ) d
    ), sendable AS (
        SELECT due.id, due.next_attempt_at,
               coalesce(tl.n, 0)
                   + row_number() OVER (PARTITION BY due.tenant_id ORDER BY due.next_attempt_at, due.id)
                   AS tenant_place
        FROM due LEFT JOIN tenant_load tl ON tl.tenant_id = due.tenant_id
    ), share AS (
        -- each tenant with work (due here, or in flight here) gets an equal share of the slots but
        -- one endpoint's worth, kept free for a tenant that starts sending; at least one endpoint's worth
        SELECT GREATEST(%(per_endpoint)s, (%(max_in_flight)s - %(per_endpoint)s) / NULLIF(count(*), 0))
            AS slots
        FROM (SELECT tenant_id FROM due UNION SELECT tenant_id FROM tenant_load) AS working
    ), picked AS (
        SELECT d.id FROM webhook_deliveries d JOIN sendable s ON s.id = d.id, share
        WHERE d.id = ANY(ARRAY(SELECT id FROM sendable)) AND s.tenant_place <= share.slots
          -- again here: the row lock re-checks these on the newest row version, so a delivery that
          -- another deliverer leased after this statement's snapshot is skipped, not sent twice.
          -- The rows are found by primary key (the id list; the status compared through coalesce, never
          -- null, so that no index of pending deliveries can serve this scan): such an index keeps the
          -- entries of every delivery sent since the last vacuum (a bitmap scan never marks them dead),
          -- and its scan walked 12,490 of them for 27 due in a drain of 1,500 jobs, growing with each
          AND coalesce(d.status, '') = 'PENDING' AND d.next_attempt_at <= now()
          AND (d.lease_until IS NULL OR d.lease_until < now())
        -- the least loaded tenants first: round robin between tenants, oldest due first within each
        ORDER BY s.tenant_place, s.next_attempt_at
        LIMIT %(limit)s
        FOR UPDATE OF d SKIP LOCKED
    ), leased AS (
        UPDATE webhook_deliveries d
        SET lease_until = now() + make_interval(secs => %(lease)s)
        FROM picked, webhook_events e, webhook_endpoints ep
        WHERE d.id = picked.id AND e.id = d.event_id AND ep.id = d.endpoint_id
        RETURNING d.id, d.tenant_id, d.endpoint_id, d.attempt_count, d.next_trigger,
                  e.id AS event_id, e.type, e.data, e.created_at, e.job_id, e.trace_context,
                  e.artifact_key, ep.url, ep.enabled, ep.signing_keys, ep.timeout_seconds,
                  ep.retry_schedule, ep.rate_limit_per_second
    ), paced AS (
        -- each rate-limited endpoint's arrival time moves on by one interval per delivery claimed
        UPDATE webhook_endpoints ep
        SET rate_tat = pe.tat + make_interval(secs => c.n / pe.rate_limit_per_second)
        FROM (SELECT endpoint_id, count(*) AS n FROM leased GROUP BY endpoint_id) c
        JOIN paced_endpoints pe ON pe.id = c.endpoint_id
        WHERE ep.id = c.endpoint_id
    )
    SELECT * FROM leased
    """

# Recording a batch of attempts' outcomes: one round trip (with the transaction's BEGIN), in this order.
# FOR NO KEY UPDATE on endpoints: publishing (which only references endpoints) goes on; a deletion waits.
# Endpoints, then deliveries, each in id order: deliverers recording at once never deadlock. The
# writes after the locks skip deliveries that no longer exist (an endpoint deleted while in flight).
_LOCK_ENDPOINTS: LiteralString = (
    "SELECT id FROM webhook_endpoints WHERE id = ANY(%(ids)s) ORDER BY id FOR NO KEY UPDATE"
)
_LOCK_DELIVERIES: LiteralString = (
    "SELECT id FROM webhook_deliveries WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE"
)
_INSERT_ATTEMPTS: LiteralString = """
    INSERT INTO webhook_attempts
        (id, delivery_id, tenant_id, at, status_code, duration_ms, error, response_body, trigger,
         request_headers, response_headers)
    SELECT a.id, a.delivery_id, a.tenant_id, a.at, a.status_code, a.duration_ms, a.error, a.response_body,
           a.trigger, CAST(a.request_headers AS jsonb), CAST(a.response_headers AS jsonb)
    FROM unnest(
        CAST(%(ids)s AS text[]), CAST(%(delivery_ids)s AS text[]), CAST(%(tenant_ids)s AS text[]),
        CAST(%(ats)s AS timestamptz[]), CAST(%(status_codes)s AS int[]), CAST(%(durations)s AS int[]),
        CAST(%(errors)s AS text[]), CAST(%(response_bodies)s AS text[]), CAST(%(triggers)s AS text[]),
        CAST(%(request_headers)s AS text[]), CAST(%(response_headers)s AS text[]))
        AS a(id, delivery_id, tenant_id, at, status_code, duration_ms, error, response_body, trigger,
             request_headers, response_headers)
    WHERE EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = a.delivery_id)
"""
_UPDATE_DELIVERIES: LiteralString = """
    UPDATE webhook_deliveries d SET
        status = u.status,
        attempt_count = u.attempt_count,
        next_attempt_at = now() + make_interval(secs => u.delay),
        next_trigger = 'scheduled',
        lease_until = NULL,
        updated_at = now()
    FROM unnest(CAST(%(ids)s AS text[]), CAST(%(statuses)s AS text[]), CAST(%(attempt_counts)s AS int[]),
                CAST(%(delays)s AS double precision[])) AS u(id, status, attempt_count, delay)
    WHERE d.id = u.id
"""
# Each endpoint's latest success ends its failing streak; `old` is the row as this statement found it.
_SUCCEEDED: LiteralString = """
    UPDATE webhook_endpoints ep
    SET last_success_at = GREATEST(ep.last_success_at, s.at), failing_since = NULL, failing_alerts = 0,
        last_error = NULL
    FROM (
        SELECT u.id, max(u.at) AS at
        FROM unnest(CAST(%(ids)s AS text[]), CAST(%(ats)s AS timestamptz[]), CAST(%(delivery_ids)s AS text[]))
            AS u(id, at, delivery_id)
        WHERE EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = u.delivery_id)
        GROUP BY u.id
    ) s, webhook_endpoints old
    WHERE ep.id = s.id AND old.id = ep.id
    RETURNING ep.id, ep.tenant_id, ep.url, s.at, old.failing_since AS was_failing_since,
              old.failing_alerts AS alerts_sent
"""


class AttemptRow(NamedTuple):
    """A webhook_attempts row as the deliverer inserts it (plain values: no model object per row)."""

    id: str
    delivery_id: str
    tenant_id: str
    at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None
    response_body: str | None
    request_headers: dict[str, str] | None
    response_headers: dict[str, str] | None
    trigger: str


class DeliveryUpdate(NamedTuple):
    """A delivery's new status, attempt count and next attempt (in `delay` seconds); its lease ends."""

    id: str
    status: str
    attempt_count: int
    delay: float | None


class Success(NamedTuple):
    """A delivery its endpoint accepted, and when."""

    endpoint_id: str
    at: datetime
    delivery_id: str


@dataclass(frozen=True)
class Recorded:
    """What record_outcomes found: the deliveries that still exist, and for each endpoint whose
    failing streak a success ended, the streak (was_failing_since, alerts_sent) as it was."""

    present: set[str]
    recovered: list[dict[str, Any]]


def record_outcomes(
    session: Session,
    endpoint_ids: Sequence[str],
    attempts: Sequence[AttemptRow],
    updates: Sequence[DeliveryUpdate],
    successes: Sequence[Success],
) -> Recorded:
    """Lock the endpoints and deliveries, insert the attempts, move the deliveries on and end the
    succeeded endpoints' failing streaks, in one round trip; only for deliveries that still exist.
    A row the database refuses fails the whole batch here (inside the caller's savepoint)."""
    statements: list[Statement] = [
        (_LOCK_ENDPOINTS, {"ids": list(endpoint_ids)}),
        (_LOCK_DELIVERIES, {"ids": [u.id for u in updates]}),
    ]
    if attempts:
        statements.append((_INSERT_ATTEMPTS, _attempt_columns(attempts)))
    statements.append(
        (
            _UPDATE_DELIVERIES,
            {
                "ids": [u.id for u in updates],
                "statuses": [u.status for u in updates],
                "attempt_counts": [u.attempt_count for u in updates],
                "delays": [u.delay for u in updates],
            },
        )
    )
    if successes:
        columns = {
            "ids": [s.endpoint_id for s in successes],
            "ats": [s.at for s in successes],
            "delivery_ids": [s.delivery_id for s in successes],
        }
        statements.append((_SUCCEEDED, columns))
    rows = read_pipelined(session, statements)
    streaks = rows[-1] if successes else []
    return Recorded({row["id"] for row in rows[1]}, streaks)


def _attempt_columns(attempts: Sequence[AttemptRow]) -> dict[str, list[Any]]:
    return {
        "ids": [a.id for a in attempts],
        "delivery_ids": [a.delivery_id for a in attempts],
        "tenant_ids": [a.tenant_id for a in attempts],
        "ats": [a.at for a in attempts],
        "status_codes": [a.status_code for a in attempts],
        "durations": [a.duration_ms for a in attempts],
        "errors": [a.error for a in attempts],
        "response_bodies": [a.response_body for a in attempts],
        "triggers": [a.trigger for a in attempts],
        "request_headers": [_json_or_none(a.request_headers) for a in attempts],
        "response_headers": [_json_or_none(a.response_headers) for a in attempts],
    }


def _json_or_none(value: dict[str, str] | None) -> str | None:
    return None if value is None else json.dumps(value)


def claim_due(
    session: Session,
    *,
    limit: int,
    per_endpoint: int,
    max_in_flight: int,
    lease_seconds: float,
    endpoints_in_flight: Mapping[str, int],
    tenants_in_flight: Mapping[str, int],
) -> list[dict[str, Any]]:
    """Lease up to `limit` due deliveries, in one round trip with the transaction's BEGIN and COMMIT
    (the claim is one statement, a transaction of its own); each row carries its event and endpoint.

    Counting what the caller already has in flight, no endpoint gets more than `per_endpoint` and no
    tenant more than its share of `max_in_flight` (see _CLAIM); the least loaded tenants come first,
    and within a tenant the oldest due.
    """
    parameters = {
        "limit": limit,
        "per_endpoint": per_endpoint,
        "max_in_flight": max_in_flight,
        "lease": lease_seconds,
        "endpoint_ids": list(endpoints_in_flight),
        "endpoint_counts": list(endpoints_in_flight.values()),
        "tenant_ids": list(tenants_in_flight),
        "tenant_counts": list(tenants_in_flight.values()),
    }
    return read_and_commit(session, [(_CLAIM, parameters)])[0]


_DUE = text(
    """
    SELECT count(*) AS due,
           count(*) FILTER (
               WHERE next_attempt_at <= now() - make_interval(secs => CAST(:overdue AS double precision))
           ) AS overdue
    FROM webhook_deliveries
    WHERE status = 'PENDING' AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until < now())
    """
)


def count_due(session: Session, *, overdue_seconds: float) -> tuple[int, int]:
    """Deliveries due that no deliverer holds: (all of them, those due for over overdue_seconds)."""
    due, overdue = session.execute(_DUE, {"overdue": overdue_seconds}).one()
    return int(due), int(overdue)


def lock_endpoints(session: Session, endpoint_ids: Sequence[str]) -> Sequence[WebhookEndpoint]:
    statement = (
        select(WebhookEndpoint)
        .where(col(WebhookEndpoint.id).in_(endpoint_ids))
        .order_by(col(WebhookEndpoint.id))
        .with_for_update(key_share=True)
    )
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


# --- the scheduler's side: failing endpoints and retention ---------------------------------------

_DUE_ALERTS = text(
    """
    SELECT id FROM webhook_endpoints
    WHERE enabled AND failing_since IS NOT NULL AND failing_alerts < :steps
      AND failing_since <= now() - make_interval(secs => CAST(:first_due AS double precision))
    ORDER BY failing_since LIMIT :limit
    """
)


def failing_endpoints(session: Session, *, steps: int, first_due: float, limit: int) -> list[WebhookEndpoint]:
    """Enabled endpoints failing for at least `first_due` seconds that have not sent all `steps`
    alerts, locked (skipping any a deliverer is recording for); the longest failing first."""
    ids = list(
        session.execute(_DUE_ALERTS, {"steps": steps, "first_due": first_due, "limit": limit}).scalars()
    )
    if not ids:
        return []
    statement = (
        select(WebhookEndpoint)
        .where(col(WebhookEndpoint.id).in_(ids))
        .order_by(col(WebhookEndpoint.id))
        .with_for_update(skip_locked=True)
    )
    return list(session.exec(statement).all())


_PRUNE = text(
    """
    WITH old AS (
        SELECT e.id FROM webhook_events e
        WHERE e.created_at < :cutoff
          AND NOT EXISTS (
              SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status = 'PENDING'
          )
        ORDER BY e.created_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM webhook_events e USING old WHERE e.id = old.id
    """
)


def prune_events(session: Session, *, cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` events made before `cutoff` with no pending delivery, their deliveries
    and attempts with them (ON DELETE CASCADE); how many events."""
    result = session.execute(_PRUNE, {"cutoff": cutoff, "limit": limit})
    return int(result.rowcount)  # type: ignore[attr-defined]
