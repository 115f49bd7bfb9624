"""The schema comes from migrations only: `upgrade head` yields exactly the models, and downgrade works."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.db import sqlalchemy_url
from service.migrate import downgrade, upgrade
from service.tables import metadata
from tests.servers import create_database, drop_database


@pytest.fixture
def empty_database(postgres_server_url: str) -> Iterator[str]:
    url = create_database(postgres_server_url)
    yield url
    drop_database(postgres_server_url, url)


def _schema_diff(url: str) -> list[object]:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(sqlalchemy_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_head_yields_exactly_the_models_schema(empty_database: str) -> None:
    upgrade(empty_database)
    assert _schema_diff(empty_database) == []


def test_downgrade_to_base_and_back(empty_database: str) -> None:
    upgrade(empty_database)
    downgrade(empty_database, "base")
    assert _tables(empty_database) == {"alembic_version"}
    upgrade(empty_database)
    assert _schema_diff(empty_database) == []


def test_0013_fills_last_success_and_event_types_from_history(empty_database: str) -> None:
    """0013 fills endpoints' last_success_at from the newest succeeded delivery's 2xx attempt (an
    endpoint that never succeeded keeps none) and deliveries' event_type from their event."""
    upgrade(empty_database, "0011_webhook_contract")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name, plan, created_at) VALUES ('ten_a', 'a', 'free', now())")
        for endpoint in ("wep_ok", "wep_failing"):
            conn.execute(
                """
                INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, enabled, signing,
                                               signing_keys, failing_alerts, created_at, updated_at)
                VALUES (%s, 'ten_a', 'https://receiver.example/', '["*"]', true, 'V1', '[]', 0, now(), now())
                """,
                [endpoint],
            )
        conn.execute(
            "INSERT INTO webhook_events (id, tenant_id, type, data, created_at)"
            " VALUES ('whe_1', 'ten_a', 'job.queued', '{}', now())"
        )
        outcomes = {
            "whd_1": ("wep_ok", "SUCCEEDED", [(500, "2026-01-01T10:00:00Z"), (200, "2026-01-01T10:00:05Z")]),
            "whd_2": ("wep_failing", "FAILED", [(500, "2026-01-01T10:00:00Z")]),
        }
        for delivery, (endpoint, status, attempts) in outcomes.items():
            conn.execute(
                """
                INSERT INTO webhook_deliveries (id, tenant_id, event_id, endpoint_id, status, attempt_count,
                                                next_trigger, created_at, updated_at)
                VALUES (%s, 'ten_a', 'whe_1', %s, %s, %s, 'scheduled', now(), now())
                """,
                [delivery, endpoint, status, len(attempts)],
            )
            for number, (code, at) in enumerate(attempts):
                conn.execute(
                    """
                    INSERT INTO webhook_attempts
                        (id, delivery_id, tenant_id, at, status_code, duration_ms, trigger)
                    VALUES (%s, %s, 'ten_a', %s, %s, 10, 'scheduled')
                    """,
                    [f"wha_{delivery}_{number}", delivery, at, code],
                )
    upgrade(empty_database)
    with psycopg.connect(empty_database) as conn:
        rows: dict[str, datetime | None] = dict(
            conn.execute("SELECT id, last_success_at FROM webhook_endpoints").fetchall()
        )
        types = conn.execute("SELECT DISTINCT event_type FROM webhook_deliveries").fetchall()
    assert rows["wep_ok"] == datetime(2026, 1, 1, 10, 0, 5, tzinfo=UTC)
    assert rows["wep_failing"] is None
    assert types == [("job.queued",)]


def test_0014_counts_the_queued_jobs_there_are_and_downgrades(empty_database: str) -> None:
    """0014 fills each tenant's queued count from its jobs, its trigger counts from then on, and its
    downgrade leaves jobs as they were (no table, no trigger)."""
    upgrade(empty_database, "0013_delivery_log_at_scale")
    job = (
        "INSERT INTO jobs (id, tenant_id, kind, status, progress, attempt, input, input_hash, created_at)"
        " VALUES (%s, %s, 'speech', %s, 0, 0, '{}', 'x', now())"
    )
    with psycopg.connect(empty_database, autocommit=True) as conn:
        for tenant in ("ten_a", "ten_b"):
            conn.execute(
                "INSERT INTO tenants (id, name, plan, created_at) VALUES (%s, %s, 'free', now())",
                [tenant, tenant],
            )
        for number, (tenant, status) in enumerate(
            [("ten_a", "QUEUED"), ("ten_a", "QUEUED"), ("ten_a", "RUNNING"), ("ten_b", "SUCCEEDED")]
        ):
            conn.execute(job, [f"job_{number}", tenant, status])
    upgrade(empty_database)
    counted = "SELECT tenant_id, sum(queued) FROM job_queue_counts GROUP BY tenant_id"
    with psycopg.connect(empty_database, autocommit=True) as conn:
        assert dict(conn.execute(counted).fetchall()) == {"ten_a": 2}
        conn.execute(job, ["job_new", "ten_b", "QUEUED"])
        conn.execute("UPDATE jobs SET status = 'RUNNING' WHERE id = 'job_0'")
        assert dict(conn.execute(counted).fetchall()) == {"ten_a": 1, "ten_b": 1}
    downgrade(empty_database, "0013_delivery_log_at_scale")
    assert "job_queue_counts" not in _tables(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(job, ["job_after", "ten_b", "QUEUED"])  # no trigger left to fail
        conn.execute("DELETE FROM jobs WHERE status = 'QUEUED'")
