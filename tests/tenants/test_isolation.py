"""Isolation in depth: every id-taking operation treats another tenant's id exactly like a missing
one and changes nothing of the owner's; and Postgres row-level security hides other tenants' rows
from the tenant role even when a query forgets its tenant filter."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlmodel import Session, col, select
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from service.db import (
    AFTER_COMMIT,
    TENANT_ROLE,
    enter_tenant,
    get_engine,
    session_scope,
    tenant_session_scope,
)
from service.graphql_base import Connection, Context
from service.ids import new_id
from service.jobs.models import Job, JobOutbox
from service.jobs.service import create_job
from service.plans import DEFAULT_PLANS, Limits
from service.principal import Principal
from service.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from tests.conftest import GraphQLClient, TenantHandle
from tests.servers import ApiProcess

SINCE = "2000-01-01T00:00:00Z"


@dataclass
class World:
    """Tenant A's things, tenant B's client and own endpoint/event, and ids that exist nowhere."""

    a: TenantHandle
    b: GraphQLClient
    ids: dict[str, str]  # name -> A's id
    b_endpoint: str
    b_event: str


def _queued_job(tenant_id: str) -> str:
    """A committed QUEUED job no worker will take (its enqueue dropped)."""
    with session_scope() as session:
        job = create_job(session, tenant_id, "test-slow", {"seconds": 1}, None)
        session.info.pop(AFTER_COMMIT, None)
    return job.id


def _endpoint_with_event(client: GraphQLClient, path: str) -> tuple[str, str]:
    created = client(
        "mutation C($u: String!) { createWebhookEndpoint(input: {url: $u}) { endpoint { id } } }",
        {"u": f"http://127.0.0.1:9/{path}"},
    )
    endpoint_id = created["createWebhookEndpoint"]["endpoint"]["id"]
    sent = client(
        "mutation T($e: ID!) { sendTestWebhook(endpointId: $e) { delivery { eventId } } }",
        {"e": endpoint_id},
    )
    return endpoint_id, sent["sendTestWebhook"]["delivery"]["eventId"]


@pytest.fixture
def world(
    make_tenant: Callable[..., TenantHandle], client_for: Callable[[str | None], GraphQLClient]
) -> World:
    a = make_tenant("owner")
    a_client = client_for(a.api_key)
    a_endpoint, a_event = _endpoint_with_event(a_client, "a")
    b_client = client_for(make_tenant("intruder").api_key)
    b_endpoint, b_event = _endpoint_with_event(b_client, "b")
    ids = {"job": _queued_job(a.id), "endpoint": a_endpoint, "event": a_event}
    return World(a=a, b=b_client, ids=ids, b_endpoint=b_endpoint, b_event=b_event)


DELIVERERS_BOOKKEEPING = (
    "failing_since",
    "failing_alerts",
    "last_success_at",
    "last_error",
    "rate_tat",
    "updated_at",
)
"""Endpoint columns the deliverer moves while the tenant's own deliveries go out, whatever B does."""


def _snapshot(tenant_id: str) -> dict[str, Any]:
    """Everything of the tenant's that an operation could change (owner role: no RLS)."""
    with session_scope() as session:
        jobs = [j.model_dump() for j in session.exec(select(Job).where(Job.tenant_id == tenant_id))]
        endpoints = [
            {k: v for k, v in e.model_dump().items() if k not in DELIVERERS_BOOKKEEPING}
            for e in session.exec(select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id))
        ]
        events = [e.id for e in session.exec(select(WebhookEvent).where(WebhookEvent.tenant_id == tenant_id))]
        deliveries = [
            (d.id, d.event_id, d.endpoint_id)
            for d in session.exec(select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id))
        ]
    return {"jobs": jobs, "endpoints": endpoints, "events": sorted(events), "deliveries": sorted(deliveries)}


# name -> (document, variables given A's ids (or missing ones) and B's own ids)
Variables = Callable[[dict[str, str], World], dict[str, Any]]
OPERATIONS: dict[str, tuple[str, Variables]] = {
    "job": ("query Q($id: ID!) { job(id: $id) { id status } }", lambda i, w: {"id": i["job"]}),
    "cancelJob": (
        "mutation M($id: ID!) { cancelJob(id: $id) { job { id } userErrors { code field message } } }",
        lambda i, w: {"id": i["job"]},
    ),
    "deleteJob": (
        "mutation M($id: ID!) { deleteJob(id: $id) { id userErrors { code field message } } }",
        lambda i, w: {"id": i["job"]},
    ),
    "webhookEndpoint": (
        "query Q($id: ID!) { webhookEndpoint(id: $id) { id url deliveries { id } } }",
        lambda i, w: {"id": i["endpoint"]},
    ),
    "updateWebhookEndpoint": (
        'mutation M($id: ID!) { updateWebhookEndpoint(id: $id, input: {description: "mine", enabled: false})'
        " { endpoint { id } secret userErrors { code field message } } }",
        lambda i, w: {"id": i["endpoint"]},
    ),
    "deleteWebhookEndpoint": (
        "mutation M($id: ID!) { deleteWebhookEndpoint(id: $id) { id userErrors { code field message } } }",
        lambda i, w: {"id": i["endpoint"]},
    ),
    "rotateWebhookSecret": (
        "mutation M($id: ID!) { rotateWebhookSecret(id: $id) { endpoint { id } secret"
        " userErrors { code field message } } }",
        lambda i, w: {"id": i["endpoint"]},
    ),
    "sendTestWebhook": (
        "mutation M($id: ID!) { sendTestWebhook(endpointId: $id) { delivery { id }"
        " userErrors { code field message } } }",
        lambda i, w: {"id": i["endpoint"]},
    ),
    "redeliverWebhook(their event, my endpoint)": (
        "mutation M($ev: ID!, $en: ID!) { redeliverWebhook(eventId: $ev, endpointId: $en) { delivery { id }"
        " userErrors { code field message } } }",
        lambda i, w: {"ev": i["event"], "en": w.b_endpoint},
    ),
    "redeliverWebhook(my event, their endpoint)": (
        "mutation M($ev: ID!, $en: ID!) { redeliverWebhook(eventId: $ev, endpointId: $en) { delivery { id }"
        " userErrors { code field message } } }",
        lambda i, w: {"ev": w.b_event, "en": i["endpoint"]},
    ),
    "recoverWebhooks": (
        "mutation M($id: ID!, $since: DateTime!) { recoverWebhooks(endpointId: $id, since: $since)"
        " { count userErrors { code field message } } }",
        lambda i, w: {"id": i["endpoint"], "since": SINCE},
    ),
}
MISSING = {"job": new_id("job"), "endpoint": new_id("whe"), "event": new_id("evt")}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_another_tenants_id_is_exactly_a_missing_id_and_changes_nothing(world: World, operation: str) -> None:
    document, variables = OPERATIONS[operation]
    before = _snapshot(world.a.id)
    theirs = world.b.post(document, variables(world.ids, world))
    missing = world.b.post(document, variables(MISSING, world))
    assert theirs.status_code == missing.status_code == 200
    assert theirs.json() == missing.json()
    assert "errors" not in theirs.json()
    assert json.dumps(theirs.json()).count("NOT_FOUND") or "null" in theirs.text  # absent, not refused
    assert _snapshot(world.a.id) == before


def _subscribe(api: ApiProcess, api_key: str, job_id: str) -> dict[str, Any]:
    url = api.url.replace("http://", "ws://") + "/graphql"
    with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as socket:
        socket.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {api_key}"}})
        )
        assert json.loads(socket.recv(timeout=10))["type"] == "connection_ack"
        query = "subscription S($id: ID!) { jobUpdates(id: $id) { id status } }"
        socket.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"id": job_id}}}
            )
        )
        message: dict[str, Any] = json.loads(socket.recv(timeout=10))
        return message


def test_job_updates_on_another_tenants_job_is_exactly_a_missing_job(
    api: ApiProcess, world: World, make_tenant: Callable[..., TenantHandle]
) -> None:
    intruder = make_tenant("subscriber")
    before = _snapshot(world.a.id)
    theirs = _subscribe(api, intruder.api_key, world.ids["job"])
    missing = _subscribe(api, intruder.api_key, MISSING["job"])
    assert theirs == missing, (theirs, missing)
    assert theirs["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert _snapshot(world.a.id) == before
    owner = _subscribe(api, world.a.api_key, world.ids["job"])  # the owner does get it
    assert owner["type"] == "next"
    assert owner["payload"]["data"]["jobUpdates"]["id"] == world.ids["job"]


@pytest.fixture
def tenants_with_jobs(make_tenant: Callable[..., TenantHandle]) -> tuple[str, str, str]:
    a, b = make_tenant("a"), make_tenant("b")
    return a.id, b.id, _queued_job(a.id)


def test_row_level_security_hides_other_tenants_rows_from_a_query_without_a_filter(
    env: dict[str, str], tenants_with_jobs: tuple[str, str, str]
) -> None:
    a_id, b_id, a_job = tenants_with_jobs
    b_job = _queued_job(b_id)
    with Session(get_engine()) as session:
        everything = {row[0] for row in session.execute(text("SELECT tenant_id FROM jobs"))}
        assert a_id in everything  # the owner role (workers, scheduler) sees every tenant
        enter_tenant(session, b_id)
        assert session.execute(text("SELECT current_user")).scalar() == TENANT_ROLE
        rows = session.execute(text("SELECT id, tenant_id FROM jobs")).all()  # the forgotten filter
        assert rows
        assert {tenant for _, tenant in rows} == {b_id}
        assert b_job in {row[0] for row in rows}
        assert session.execute(text("SELECT count(*) FROM jobs WHERE id = :id"), {"id": a_job}).scalar() == 0
        for table in ("job_events", "webhook_endpoints", "webhook_events", "webhook_deliveries", "api_keys"):
            tenants = {row[0] for row in session.execute(text(f"SELECT tenant_id FROM {table}"))}  # noqa: S608
            assert tenants <= {b_id}, table
        assert {row[0] for row in session.execute(text("SELECT id FROM tenants"))} == {b_id}
        outbox = {row[0] for row in session.execute(text("SELECT job_id FROM job_outbox"))}
        assert a_job not in outbox
        assert b_job in outbox
        updated = session.execute(text("UPDATE jobs SET message = 'mine' WHERE id = :id"), {"id": a_job})
        assert updated.rowcount == 0  # type: ignore[attr-defined]
        deleted = session.execute(text("DELETE FROM jobs WHERE tenant_id = :t"), {"t": a_id})
        assert deleted.rowcount == 0  # type: ignore[attr-defined]
        session.rollback()
    with Session(get_engine()) as session:
        enter_tenant(session, b_id)
        with pytest.raises(ProgrammingError, match="row-level security"):
            session.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, kind, status, progress, attempt, input, input_hash,"
                    " created_at) VALUES (:id, :t, 'speech', 'QUEUED', 0, 0, '{}', 'x', now())"
                ),
                {"id": new_id("job"), "t": a_id},
            )
    with session_scope() as session:
        job = session.get(Job, a_job)
        assert job is not None
        assert job.message != "mine"


def test_without_a_tenant_the_tenant_role_sees_nothing(env: dict[str, str], tenants_with_jobs: Any) -> None:
    with Session(get_engine()) as session:
        session.execute(text(f"SET LOCAL ROLE {TENANT_ROLE}"))
        assert session.execute(text("SELECT count(*) FROM jobs")).scalar() == 0
        assert session.execute(text("SELECT count(*) FROM tenants")).scalar() == 0


def test_tenant_facing_sessions_run_as_the_tenant_role(env: dict[str, str], tenants_with_jobs: Any) -> None:
    _, b_id, a_job = tenants_with_jobs
    probe = text("SELECT current_user, current_setting('app.tenant_id', true)")
    with tenant_session_scope(b_id) as session:  # what subscriptions and long-polls use
        assert tuple(session.execute(probe).one()) == (TENANT_ROLE, b_id)
        assert session.get(Job, a_job) is None
    limits = Limits(**DEFAULT_PLANS["free"])
    principal = Principal(tenant_id=b_id, key_id="key_x", scopes=frozenset(), limits=limits)
    context = Context(connection=Connection(principal))
    try:  # what every GraphQL request's resolvers use
        assert tuple(context.session.execute(probe).one()) == (TENANT_ROLE, b_id)
        assert list(context.session.exec(select(JobOutbox).where(col(JobOutbox.job_id) == a_job))) == []
    finally:
        context.finish(commit=False)
    with session_scope() as session:  # and nothing leaks into the pooled connection afterwards
        user, tenant = session.execute(probe).one()
        assert user != TENANT_ROLE
        assert not tenant


def test_the_tenant_role_cannot_log_in(postgres_server_url: str) -> None:
    with psycopg.connect(postgres_server_url) as conn:
        can_login = conn.execute(
            "SELECT rolcanlogin, rolbypassrls FROM pg_roles WHERE rolname = %s", (TENANT_ROLE,)
        )
        assert can_login.fetchone() == (False, False)
