"""Signing in to the portal over plain HTTP, where a browser would hide what matters: links and sessions
(issued, used once, expiring, stored only as hashes, signed out), CSRF on every change, and one
tenant's session meeting another tenant's ids."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from service.db import AFTER_COMMIT, enter_tenant, get_engine, session_scope
from service.jobs.models import Job
from service.jobs.service import create_job
from service.settings import get_settings
from service.tenants.models import ApiKey, PortalLink, PortalSession
from service.tenants.service import create_portal_link, purge_portal_access
from service.webhooks.models import WebhookEndpoint
from tests.conftest import GraphQLClient, TenantHandle
from tests.portal.conftest import LINK, csrf_of, portal_client
from tests.servers import ApiProcess
from tests.test_cli import _cli

ENDPOINT = "mutation C($u: String!) { createWebhookEndpoint(input: {url: $u}) { endpoint { id } } }"
TEST_EVENT = "mutation T($e: ID!) { sendTestWebhook(endpointId: $e) { delivery { eventId } } }"


def _queued_job(tenant_id: str) -> str:
    """A committed QUEUED job no worker will take (its enqueue dropped): it stays as it is."""
    with session_scope() as session:
        job = create_job(session, tenant_id, "test-slow", {"seconds": 1}, None)
        session.info.pop(AFTER_COMMIT, None)
    return job.id


def _status(job_id: str) -> str:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status


@pytest.fixture
def browser_of(api: ApiProcess, gql: GraphQLClient) -> Iterator[Callable[[], httpx.Client]]:
    """HTTP clients each signed in to the `tenant`'s portal with a link of their own."""
    clients: list[httpx.Client] = []

    def sign_in() -> httpx.Client:
        clients.append(portal_client(api, gql(LINK)["createPortalSession"]["url"]))
        return clients[-1]

    yield sign_in
    for client in clients:
        client.close()


def test_create_portal_session_gives_a_link_under_the_public_base_url_for_ten_minutes(
    api: ApiProcess, gql: GraphQLClient
) -> None:
    issued = gql(LINK)["createPortalSession"]
    assert issued["url"].startswith(f"{api.url}/portal/login/")
    lifetime = datetime.fromisoformat(issued["expiresAt"]) - datetime.now(UTC)
    assert timedelta(seconds=590) < lifetime <= timedelta(seconds=600)
    for wrong in (0, 86_401):
        body = gql.post(
            "mutation L($s: Int!) { createPortalSession(expiresIn: $s) { url } }", {"s": wrong}
        ).json()
        assert body["errors"][0]["extensions"]["code"] == "VALIDATION", body


def test_a_key_with_only_the_portal_scope_makes_links_and_nothing_else(
    make_tenant: Callable[..., TenantHandle], client_for: Callable[[str | None], GraphQLClient]
) -> None:
    client = client_for(make_tenant("linker", scopes=["portal"]).api_key)
    assert client(LINK)["createPortalSession"]["url"]
    refused = client.post("{ jobs { edges { cursor } } }").json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_only_hashes_of_links_and_sessions_are_stored(api: ApiProcess, gql: GraphQLClient) -> None:
    link = gql(LINK)["createPortalSession"]["url"]
    client = portal_client(api, link)
    cookie = client.cookies["claimcheck_portal"]
    token = link.rsplit("/", 1)[1]
    with session_scope() as session:
        stored = [row.model_dump_json() for row in session.exec(select(PortalLink))]
        stored += [row.model_dump_json() for row in session.exec(select(PortalSession))]
    assert stored
    assert not any(token in row or cookie in row for row in stored)
    client.close()


def test_the_session_cookie_is_secure_over_https(api: ApiProcess, gql: GraphQLClient) -> None:
    link = gql(LINK)["createPortalSession"]["url"]
    # uvicorn trusts X-Forwarded-Proto from loopback, as from a TLS-terminating proxy in front of it
    response = httpx.get(link, headers={"x-forwarded-proto": "https"})
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "secure" in cookie
    assert "httponly" in cookie
    assert "samesite=strict" in cookie


def test_the_operator_command_prints_the_link_alone_and_it_expires(
    env: dict[str, str], api: ApiProcess, tenant: TenantHandle
) -> None:
    made = _cli({**env, "PUBLIC_BASE_URL": api.url}, "portal-link", "--tenant", tenant.id, "--ttl", "1")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{api.url}/portal/login/")
    time.sleep(1.2)
    assert httpx.get(lines[0]).status_code == 410
    missing = _cli(env, "portal-link", "--tenant", "ten_missing")
    assert missing.returncode == 2
    assert "NOT_FOUND" in missing.stderr
    assert missing.stdout == ""


def test_an_expired_session_is_signed_out(
    browser_of: Callable[[], httpx.Client], tenant: TenantHandle
) -> None:
    client = browser_of()
    assert client.get("/portal/jobs").status_code == 200
    with session_scope() as session:
        session.execute(
            text("UPDATE portal_sessions SET expires_at = now() - interval '1 second' WHERE tenant_id = :t"),
            {"t": tenant.id},
        )
    assert client.get("/portal/jobs").status_code == 401


def test_signing_out_ends_the_session_even_for_a_replayed_cookie(
    api: ApiProcess, browser_of: Callable[[], httpx.Client]
) -> None:
    client = browser_of()
    cookie = client.cookies["claimcheck_portal"]
    token = csrf_of(client.get("/portal/jobs").text)
    signed_out = client.post("/portal/logout", data={"csrf_token": token})
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/portal/signed-out"
    replayed = httpx.get(f"{api.url}/portal/jobs", cookies={"claimcheck_portal": cookie})
    assert replayed.status_code == 401


def test_a_forged_or_missing_csrf_token_is_refused_and_changes_nothing(
    browser_of: Callable[[], httpx.Client], tenant: TenantHandle
) -> None:
    client, other = browser_of(), browser_of()
    job_id = _queued_job(tenant.id)
    cancel = f"/portal/jobs/{job_id}/cancel"
    token = csrf_of(client.get("/portal/jobs").text)
    others = csrf_of(other.get("/portal/jobs").text)
    assert token != others  # each session has its own
    refusals = [
        client.post(cancel),
        client.post(cancel, data={"csrf_token": ""}),
        client.post(cancel, data={"csrf_token": "0" * 64}),
        client.post(cancel, data={"csrf_token": others}),  # another session's (same tenant)
        client.post(cancel, headers={"x-csrf-token": token[:-1] + ("1" if token[-1] != "1" else "2")}),
        client.post(cancel, content=b'{"csrf_token": "x"}', headers={"content-type": "application/json"}),
        client.post("/portal/logout"),
    ]
    assert [response.status_code for response in refusals] == [403] * 5 + [400, 403]
    assert _status(job_id) == "QUEUED"
    assert client.get("/portal/jobs").status_code == 200  # the refused logout signed nobody out
    by_header = client.post(cancel, headers={"x-csrf-token": token})  # htmx sends it as a header
    assert by_header.status_code == 303
    assert _status(job_id) == "CANCELED"


def _snapshot(tenant_id: str) -> dict[str, Any]:
    with session_scope() as session:
        jobs = [(job.id, job.status) for job in session.exec(select(Job).where(Job.tenant_id == tenant_id))]
        endpoints = [
            (e.id, e.enabled, e.url, e.signing_keys)
            for e in session.exec(select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id))
        ]
        keys = [
            (k.id, k.revoked_at) for k in session.exec(select(ApiKey).where(ApiKey.tenant_id == tenant_id))
        ]
    return {"jobs": sorted(jobs), "endpoints": sorted(endpoints), "keys": sorted(keys)}


def test_another_tenants_ids_are_not_found_and_nothing_of_theirs_changes(
    browser_of: Callable[[], httpx.Client],
    make_tenant: Callable[..., TenantHandle],
    client_for: Callable[[str | None], GraphQLClient],
) -> None:
    client = browser_of()
    token = csrf_of(client.get("/portal/jobs").text)
    other = make_tenant("other")
    theirs = client_for(other.api_key)
    endpoint = theirs(ENDPOINT, {"u": "http://127.0.0.1:9/theirs"})["createWebhookEndpoint"]["endpoint"]["id"]
    event = theirs(TEST_EVENT, {"e": endpoint})["sendTestWebhook"]["delivery"]["eventId"]
    job = _queued_job(other.id)
    before = _snapshot(other.id)
    form = {"csrf_token": token}
    pages = [
        f"/portal/jobs/{job}",
        f"/portal/jobs/{job}/download",
        f"/portal/webhooks/{endpoint}",
    ]
    actions: list[tuple[str, dict[str, str]]] = [
        (f"/portal/jobs/{job}/cancel", form),
        (f"/portal/jobs/{job}/delete", form),
        (f"/portal/webhooks/{endpoint}", form | {"url": "http://127.0.0.1:9/mine"}),
        (f"/portal/webhooks/{endpoint}/enabled", form | {"enabled": "false"}),
        (f"/portal/webhooks/{endpoint}/test", form),
        (f"/portal/webhooks/{endpoint}/rotate", form | {"keep_old_for": "0"}),
        (f"/portal/webhooks/{endpoint}/delete", form),
        (f"/portal/keys/{other.key_id}/revoke", form),
        ("/portal/deliveries/redeliver", form | {"event_id": event, "endpoint_id": endpoint}),
        ("/portal/deliveries/recover", form | {"endpoint_id": endpoint, "since": "2000-01-01T00:00"}),
    ]
    for path in pages:
        assert client.get(path).status_code == 404, path
    for path, data in actions:
        assert client.post(path, data=data).status_code == 404, path
    live = client.get("/portal/jobs/live", params={"id": job})
    assert "event: job" not in live.text
    assert "event: done" in live.text
    assert _snapshot(other.id) == before


def test_portal_rows_are_hidden_from_other_tenants_by_row_level_security(
    env: dict[str, str], make_tenant: Callable[..., TenantHandle]
) -> None:
    a, b = make_tenant("a"), make_tenant("b")
    secret = get_settings().secret_key
    with session_scope() as session:
        for tenant_id in (a.id, b.id):
            create_portal_link(
                session, tenant_id, created_by="operator", ttl_seconds=None, server_secret=secret
            )
    with Session(get_engine()) as session:
        enter_tenant(session, b.id)
        for table in ("portal_links", "portal_sessions"):
            tenants = {row[0] for row in session.execute(text(f"SELECT tenant_id FROM {table}"))}  # noqa: S608
            assert tenants <= {b.id}, table
        assert {row[0] for row in session.execute(text("SELECT tenant_id FROM portal_links"))} == {b.id}
        session.rollback()


def test_expired_links_and_sessions_are_purged(env: dict[str, str], tenant: TenantHandle) -> None:
    secret = get_settings().secret_key
    with session_scope() as session:
        create_portal_link(session, tenant.id, created_by="operator", ttl_seconds=1, server_secret=secret)
        session.execute(
            text("UPDATE portal_links SET expires_at = now() - interval '1 second' WHERE tenant_id = :t"),
            {"t": tenant.id},
        )
    with session_scope() as session:
        assert purge_portal_access(session) >= 1
    with session_scope() as session:
        left = session.exec(select(PortalLink).where(PortalLink.tenant_id == tenant.id)).all()
    assert left == []


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_jobs_trace_id_links_to_the_trace_url_template(
    env: dict[str, str],
    workdir: Path,
    api: ApiProcess,
    tenant: TenantHandle,
    browser_of: Callable[[], httpx.Client],
) -> None:
    job_id = _queued_job(tenant.id)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.trace_context = {"traceparent": TRACEPARENT}  # what the mutation's span stored
        session.add(job)
    trace_id = TRACEPARENT.split("-")[1]
    plain = browser_of().get(f"/portal/jobs/{job_id}").text
    assert f"<code>{trace_id}</code>" in plain
    assert "/trace/" not in plain  # no TRACE_URL_TEMPLATE: the id alone

    traced = ApiProcess(
        {**env, "TRACE_URL_TEMPLATE": "http://jaeger.example/trace/{trace_id}"}, workdir / "api-trace.log"
    )
    traced.env["PUBLIC_BASE_URL"] = traced.url
    traced.start()
    try:
        with session_scope() as session:
            link = create_portal_link(
                session,
                tenant.id,
                created_by="operator",
                ttl_seconds=None,
                server_secret=get_settings().secret_key,
            )
        client = portal_client(traced, traced.url + link.url.removeprefix(api.url))
        page = client.get(f"/portal/jobs/{job_id}").text
        client.close()
    finally:
        traced.stop()
    assert f'href="http://jaeger.example/trace/{trace_id}"' in page
