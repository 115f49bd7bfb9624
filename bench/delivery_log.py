"""The delivery log's queries at scale: EXPLAIN (ANALYZE, BUFFERS) over millions of webhook attempts.

Fills a fresh database (built by the migrations) with `--attempts` webhook attempts (default 10M): a
quarter as many events over 35 days, each delivered to two of its tenant's three endpoints, each
delivery tried twice. Half the rows belong to one large tenant, the rest to nine others. Then runs
the service's own reads (the portal's and `webhookDeliveries`' log page with each filter, a cursor
page, the page's attempts and event types) as that tenant, under row-level
security, and one retention batch (rolled back), and prints each statement's plan and time.

    python -m bench.delivery_log [--attempts 10000000] [--keep-database NAME]

`--keep-database NAME` fills NAME once and reuses it on later runs (it is not dropped).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlmodel import Session

from service.db import enter_tenant, make_engine, sqlalchemy_url
from service.embedded import EmbeddedPostgres
from service.migrate import upgrade
from service.webhooks import repository as webhook_repository
from service.webhooks.models import DeliveryStatus
from service.webhooks.service import delivery_log
from tests.servers import create_database, drop_database, with_database

TENANTS = 10
LARGE_TENANT = "ten_bench_0"
SPAN_DAYS = 35
RETENTION_DAYS = 30
_ID_LIST = re.compile(r"'\{[^}]{80,}\}'")
TABLES = ("webhook_events", "webhook_deliveries", "webhook_attempts")

_BASE32 = """
CREATE FUNCTION pg_temp.b32(value bigint, width int) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(
        substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((value >> (5 * (width - 1 - i))) & 31)::int + 1, 1),
        '' ORDER BY i)
    FROM generate_series(0, width - 1) AS i
$$
"""

# Event n: its job (six events each; one job in 100 fails), its tenant (half the jobs in the large one),
# its type, its time.
_EVENTS = """
INSERT INTO webhook_events (id, tenant_id, type, data, job_id, created_at)
SELECT 'whe_' || pg_temp.b32(ms, 10) || pg_temp.b32(n, 16), tenant, kind,
       jsonb_build_object('job', jsonb_build_object('id', job)), job, to_timestamp(ms / 1000.0)
FROM (
    SELECT n, CAST(%(start_ms)s AS bigint) + n * CAST(%(step_ms)s AS bigint) AS ms,
           'ten_bench_' || CASE WHEN (n / 6) %% 2 = 0 THEN 0 ELSE (n / 12) %% 9 + 1 END AS tenant,
           'job_' || pg_temp.b32(n / 6, 26) AS job,
           (ARRAY['job.queued', 'job.started', 'job.progress', 'job.progress', 'job.progress',
                  CASE WHEN (n / 6) %% 100 = 0 THEN 'job.failed' ELSE 'job.succeeded' END])[n %% 6 + 1]
               AS kind
    FROM generate_series(0, CAST(%(events)s AS bigint) - 1) AS n
) AS e
"""

# Each event to two of its tenant's three endpoints; the newest few still pending, one in 50 failed.
_DELIVERIES = """
INSERT INTO webhook_deliveries (id, tenant_id, event_id, endpoint_id, job_id, event_type, status,
                                attempt_count, next_attempt_at, next_trigger, created_at, updated_at)
SELECT 'whd_' || substr(e.id, 5, 25) || k, e.tenant_id, e.id,
       e.tenant_id || '_wep_' || ((ascii(right(e.id, 1)) + k) %% 3), e.job_id, e.type,
       CASE WHEN e.created_at >= %(pending_after)s THEN 'PENDING'
            WHEN (ascii(right(e.id, 2)) + k) %% 50 = 7 THEN 'FAILED' ELSE 'SUCCEEDED' END,
       2, CASE WHEN e.created_at >= %(pending_after)s THEN e.created_at END, 'scheduled',
       e.created_at, e.created_at + interval '2 seconds'
FROM webhook_events e, generate_series(0, 1) AS k
"""

# Each delivery tried twice: the first answered 500, the second 200 (or 500 again if it failed).
_ATTEMPTS = """
INSERT INTO webhook_attempts (id, delivery_id, tenant_id, at, status_code, duration_ms, response_body,
                              trigger, request_headers, response_headers)
SELECT 'wha_' || substr(d.id, 5, 24) || right(d.id, 1) || t, d.id, d.tenant_id,
       d.created_at + t * interval '1 second',
       CASE WHEN t = 0 OR d.status = 'FAILED' THEN 500 ELSE 200 END, 40 + t * 30,
       CASE WHEN t = 0 THEN 'upstream busy' ELSE '{"ok":true}' END, 'scheduled',
       jsonb_build_object('content-type', 'application/json', 'user-agent', 'Claimcheck-Webhooks/1.0',
                          'webhook-id', d.event_id, 'webhook-timestamp', '1764600000',
                          'webhook-signature', 'v1,' || md5(d.id)),
       '{"content-type": "application/json", "server": "receiver"}'::jsonb
FROM webhook_deliveries d, generate_series(0, 1) AS t
"""


def fill(url: str, attempts: int) -> None:
    """Tenants, endpoints, events, deliveries and attempts; secondary indexes dropped during the load
    and rebuilt after it with the migrations' own definitions."""
    events = attempts // 4
    span_ms = SPAN_DAYS * 86_400_000
    start_ms = int(time.time() * 1000) - span_ms
    values = {
        "events": events,
        "deliveries": events * 2,
        "attempts": attempts,
        "pending_after": datetime.fromtimestamp((start_ms + span_ms - 60_000) / 1000, UTC),
        "start_ms": start_ms,
        "step_ms": max(span_ms // max(events, 1), 1),
    }
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET session_replication_role = replica")  # no foreign-key checks while loading
        conn.execute(_BASE32)
        indexes = conn.execute(
            """
            SELECT indexname, indexdef FROM pg_indexes
            WHERE tablename = ANY(%s) AND indexname NOT LIKE 'pk_%%' AND indexname NOT LIKE 'uq_%%'
            """,
            [list(TABLES)],
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        now = datetime.now(UTC)
        for number in range(TENANTS):
            tenant = f"ten_bench_{number}"
            conn.execute(
                "INSERT INTO tenants (id, name, plan, created_at) VALUES (%s, %s, 'free', %s)",
                [tenant, tenant, now],
            )
            for endpoint in range(3):
                conn.execute(
                    """
                    INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, enabled, signing,
                                                   signing_keys, failing_alerts, created_at, updated_at)
                    VALUES (%s, %s, %s, '["*"]', true, 'V1', '[]', 0, %s, %s)
                    """,
                    [f"{tenant}_wep_{endpoint}", tenant, f"https://receiver.example/{endpoint}", now, now],
                )
        for label, statement in (("events", _EVENTS), ("deliveries", _DELIVERIES), ("attempts", _ATTEMPTS)):
            started = time.perf_counter()
            conn.execute(statement, values)
            print(f"  {values[label]:>11,} {label} in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        for _, definition in indexes:
            conn.execute(definition)
        conn.execute("VACUUM ANALYZE")
        print(f"  indexes rebuilt and analyzed in {time.perf_counter() - started:.0f} s", flush=True)


@contextmanager
def explained(session: Session) -> Iterator[list[tuple[str, Any]]]:
    """Collect every statement the session runs while inside, with its parameters."""
    statements: list[tuple[str, Any]] = []

    def record(_conn: Connection, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(("SELECT SET_CONFIG", "EXPLAIN")):
            statements.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def explain(session: Session, title: str, call: Callable[[Session], object]) -> None:
    """Run `call` as the large tenant, then print the plan and time of each statement it ran."""
    with explained(session) as statements:
        call(session)
    print(f"\n=== {title}")
    cursor = session.connection().connection.cursor()
    for statement, parameters in statements:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters)
        for (line,) in cursor.fetchall():
            print("   ", _ID_LIST.sub(lambda match: f"'{{{match.group(0).count(',') + 1} ids}}'", line))


def run_queries(url: str) -> None:
    engine = make_engine(sqlalchemy_url(url))
    with Session(engine) as session:
        enter_tenant(session, LARGE_TENANT)
        counts = session.connection().exec_driver_sql(
            "SELECT (SELECT count(*) FROM webhook_attempts), (SELECT count(*) FROM webhook_deliveries)"
        )
        attempts, deliveries = counts.one()
        print(
            f"\n{LARGE_TENANT}'s rows (row-level security on): {attempts:,} attempts,"
            f" {deliveries:,} deliveries"
        )
        newest = delivery_log(session, LARGE_TENANT, first=50)
        deep = delivery_log(session, LARGE_TENANT, first=50, status=DeliveryStatus.FAILED)
        cursor_id = deep.deliveries[-1].delivery.id if deep.deliveries else None
        job_id = newest.job_ids[newest.deliveries[-1].delivery.id] if newest.deliveries else None
        middle = datetime.now(UTC) - timedelta(days=SPAN_DAYS / 2)
        explain(session, "log page, no filter (50 newest)", lambda s: delivery_log(s, LARGE_TENANT, first=50))
        explain(
            session,
            "status = FAILED, second page (cursor)",
            lambda s: delivery_log(
                s, LARGE_TENANT, first=50, status=DeliveryStatus.FAILED, before_id=cursor_id
            ),
        )
        explain(
            session,
            "event type job.failed (1 in 600 events)",
            lambda s: delivery_log(s, LARGE_TENANT, first=50, event_type="job.failed"),
        )
        explain(session, "one job", lambda s: delivery_log(s, LARGE_TENANT, first=50, job_id=job_id))
        explain(
            session,
            "one hour, 17 days ago",
            lambda s: delivery_log(
                s, LARGE_TENANT, first=50, since=middle, until=middle + timedelta(hours=1)
            ),
        )
        explain(
            session,
            "one endpoint, FAILED",
            lambda s: delivery_log(
                s, LARGE_TENANT, first=50, endpoint_id=f"{LARGE_TENANT}_wep_1", status=DeliveryStatus.FAILED
            ),
        )
        session.rollback()
    with Session(engine) as session:
        cutoff = datetime.now(UTC) - timedelta(days=RETENTION_DAYS)
        explain(
            session,
            "retention: one batch of 500 events (rolled back)",
            lambda s: webhook_repository.prune_events(s, cutoff=cutoff, limit=500),
        )
        session.rollback()
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attempts", type=int, default=10_000_000)
    parser.add_argument("--keep-database", metavar="NAME", help="fill NAME once, reuse it, never drop it")
    args = parser.parse_args()
    embedded = None
    server_url = os.environ.get("DATABASE_URL")
    if server_url is None:
        import tempfile

        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="claimcheck-bench-")), delete_on_stop=True)
        server_url = embedded.start()
    try:
        if args.keep_database:
            url = with_database(server_url, args.keep_database)
            with psycopg.connect(server_url, autocommit=True) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", [args.keep_database]
                ).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{args.keep_database}"')
            if not exists:
                upgrade(url)
                fill(url, args.attempts)
        else:
            url = create_database(server_url)
            upgrade(url)
            fill(url, args.attempts)
        try:
            run_queries(url)
        finally:
            if not args.keep_database:
                drop_database(server_url, url)
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
