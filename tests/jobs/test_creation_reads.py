"""Creating a job reads what its first event needs (the tenant's endpoints, whether a listener
streams) once, along with the quota's count and the rate check, and still delivers to every endpoint.
Its rows go with the COMMIT: two round trips to Postgres in all."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import col, select

from observability import tracing
from service import db
from service.db import AFTER_COMMIT, get_engine, session_scope, tenant_session_scope
from service.jobs.models import Job, JobOutbox
from service.jobs.service import create_job
from service.principal import Principal
from service.tenants.service import limits_for
from service.webhooks.listeners import mark_listening
from service.webhooks.models import WebhookDelivery, WebhookEvent
from tests.conftest import GraphQLClient, TenantHandle

CREATE_ENDPOINT = "mutation C($u: String!) { createWebhookEndpoint(input: {url: $u}) { endpoint { id } } }"


def _caller(tenant: TenantHandle) -> Principal:
    """The tenant as an API request brings it: its limits known, so nothing is read before the job."""
    with session_scope() as session:
        limits = limits_for(session, tenant.id)
    return Principal(tenant.id, tenant.key_id, frozenset({"jobs:write"}), limits)


def _statements_through_sqlalchemy() -> tuple[list[str], Any]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(get_engine(), "before_cursor_execute", note)
    return seen, note


def test_a_new_jobs_event_reaches_every_endpoint_with_no_read_of_its_own(
    gql: GraphQLClient, tenant: TenantHandle
) -> None:
    endpoint_ids = {
        gql(CREATE_ENDPOINT, {"u": f"http://127.0.0.1:9/{n}"})["createWebhookEndpoint"]["endpoint"]["id"]
        for n in range(2)
    }
    caller = _caller(tenant)
    seen, note = _statements_through_sqlalchemy()
    try:
        with tenant_session_scope(tenant.id) as session:
            job = create_job(session, caller, "test-slow", {"seconds": 1}, None)
            session.info.pop(AFTER_COMMIT, None)  # no worker takes it
    finally:
        event.remove(get_engine(), "before_cursor_execute", note)
    assert not [statement for statement in seen if "webhook_endpoints" in statement], seen
    with tenant_session_scope(tenant.id) as session:
        delivered = session.exec(
            select(WebhookDelivery.endpoint_id)
            .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
            .where(WebhookEvent.job_id == job.id)
        ).all()
    assert set(delivered) == endpoint_ids


def test_a_new_jobs_event_is_recorded_while_a_listener_streams(tenant: TenantHandle) -> None:
    mark_listening(tenant.id)
    with tenant_session_scope(tenant.id) as session:
        job = create_job(session, _caller(tenant), "test-slow", {"seconds": 1}, None)
        session.info.pop(AFTER_COMMIT, None)
    with tenant_session_scope(tenant.id) as session:
        events = session.exec(select(WebhookEvent.type).where(WebhookEvent.job_id == job.id)).all()
    assert events == ["job.queued"]


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """The SQL of each pipelined round trip to Postgres, and (as one each) of the statements
    SQLAlchemy sends one at a time, while the test runs."""
    sent: list[list[str]] = []
    pipeline_span = tracing.pipeline_span

    def noting(engine: Any, statements: Iterable[str]) -> Any:
        sent.append(list(statements))
        return pipeline_span(engine, sent[-1])

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        sent.append([sql])

    monkeypatch.setattr(db, "pipeline_span", noting)
    event.listen(get_engine(), "before_cursor_execute", statement)
    yield sent
    event.remove(get_engine(), "before_cursor_execute", statement)


def test_a_new_job_costs_two_round_trips_its_reads_then_its_rows_with_the_commit(
    gql: GraphQLClient, tenant: TenantHandle, round_trips: list[list[str]]
) -> None:
    endpoint_id = gql(CREATE_ENDPOINT, {"u": "http://127.0.0.1:9/hook"})["createWebhookEndpoint"]["endpoint"][
        "id"
    ]
    caller = _caller(tenant)
    round_trips.clear()
    with tenant_session_scope(tenant.id) as session:
        job = create_job(session, caller, "test-slow", {"seconds": 1}, None)
        session.info.pop(AFTER_COMMIT, None)  # no worker takes it
    reads, writes = round_trips  # nothing else: no flush, no statement of its own, no lone COMMIT
    assert any("webhook_endpoints" in sql for sql in reads)
    assert not any(sql.startswith("INSERT") for sql in reads)
    written = ["INSERT INTO jobs", "INSERT INTO job_outbox", "INSERT INTO webhook_events", "pg_notify"]
    written.append("COMMIT")
    assert [next((w for w in written if w in sql), sql) for sql in writes] == written
    with tenant_session_scope(tenant.id) as session:
        assert session.get(Job, job.id) is not None
        assert session.get(JobOutbox, job.id) is not None
        delivered = session.exec(
            select(WebhookDelivery.endpoint_id)
            .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
            .where(WebhookEvent.job_id == job.id)
        ).all()
    assert delivered == [endpoint_id]
