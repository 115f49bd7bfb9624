"""Plan limits on the real API and worker: rate limits, queued and endpoint quotas, text size,
max running jobs per tenant (the rest wait while other tenants' jobs run), and `viewer`."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete
from sqlmodel import col, func, select

from service.db import session_scope
from service.jobs.models import Job, JobEvent
from service.jobs.service import create_job
from service.scheduler import run_once
from tests.conftest import GraphQLClient, TenantHandle
from tests.servers import ApiProcess, ServiceProcess
from tests.tenants.support import set_limits
from tests.websocket import open_socket, receive, subscribe, ws_url_of

VIEWER = """
{ viewer { plan
  limits { maxTextChars mutationsPerMinute burst maxRunning maxQueued maxWebhookEndpoints
           queriesPerMinute queryBurst }
  usage { queuedJobs runningJobs totalJobs webhookEndpoints } } }
"""
SPEAK = """
mutation Speak($input: GenerateSpeechInput!) {
  generateSpeech(input: $input) { job { id } userErrors { code field message extensions } }
}
"""
CREATE_ENDPOINT = """
mutation C($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { endpoint { id } secret userErrors { code field message } }
}
"""


def _speak(gql: GraphQLClient, text: str = "hello") -> dict[str, Any]:
    response = gql.post(SPEAK, {"input": {"text": text}})
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()["data"]["generateSpeech"]
    payload["retry_after_header"] = response.headers.get("retry-after")
    return payload


def test_over_the_rate_the_mutation_is_rate_limited_with_retry_after(
    gql: GraphQLClient, tenant: TenantHandle
) -> None:
    set_limits(tenant.id, mutations_per_minute=6, burst=2)  # one every 10 s, two at once
    first, second, third = (_speak(gql) for _ in range(3))
    assert first["job"]
    assert second["job"]
    assert first["retry_after_header"] is None
    assert third["job"] is None
    [error] = third["userErrors"]
    assert error["code"] == "RATE_LIMITED"
    retry_after = int(third["retry_after_header"])
    assert 1 <= retry_after <= 10
    assert error["extensions"] == {"retryAfter": retry_after}
    assert f"retry after {retry_after} seconds" in error["message"]
    usage = gql(VIEWER)["viewer"]["usage"]
    assert usage["totalJobs"] == 2  # the refused request wrote nothing


def test_an_idempotent_replay_takes_no_token_from_the_bucket(
    gql: GraphQLClient, tenant: TenantHandle
) -> None:
    """A client retrying a request it is unsure of (same idempotencyKey and input) gets its job back
    even when its bucket is empty: the replay is answered before the rate limit is consulted."""
    set_limits(tenant.id, mutations_per_minute=1, burst=1)  # one token, then one a minute
    job_id = _speak_with_key(gql, "order-17")["job"]["id"]
    for _ in range(3):  # the bucket is empty now
        replay = _speak_with_key(gql, "order-17")
        assert replay["userErrors"] == []
        assert replay["job"]["id"] == job_id
    assert _speak(gql)["userErrors"][0]["code"] == "RATE_LIMITED"  # a new job still waits its turn


def _speak_with_key(gql: GraphQLClient, key: str) -> dict[str, Any]:
    response = gql.post(SPEAK, {"input": {"text": "hello", "idempotencyKey": key}})
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()["data"]["generateSpeech"]
    return payload


def test_start_export_draws_from_the_same_bucket(gql: GraphQLClient, tenant: TenantHandle) -> None:
    set_limits(tenant.id, mutations_per_minute=1, burst=1)
    assert _speak(gql)["job"] is not None
    export = "mutation { startExport(input: {}) { job { id } userErrors { code extensions } } }"
    response = gql.post(export)
    payload = response.json()["data"]["startExport"]
    assert payload["job"] is None
    assert payload["userErrors"][0]["code"] == "RATE_LIMITED"
    assert int(response.headers["retry-after"]) == payload["userErrors"][0]["extensions"]["retryAfter"]


def test_other_tenants_have_their_own_buckets(
    gql: GraphQLClient, tenant: TenantHandle, make_tenant: Callable[..., TenantHandle], client_for: Any
) -> None:
    set_limits(tenant.id, mutations_per_minute=1, burst=1)
    assert _speak(gql)["job"] is not None
    assert _speak(gql)["userErrors"][0]["code"] == "RATE_LIMITED"
    other = client_for(make_tenant("bystander").api_key)
    assert _speak(other)["job"] is not None


def test_over_the_query_rate_queries_get_429_rate_limited_while_mutations_go_on(
    api: ApiProcess, gql: GraphQLClient, tenant: TenantHandle, make_tenant: Any, client_for: Any
) -> None:
    set_limits(tenant.id, queries_per_minute=6, query_burst=2)  # one every 10 s, two at once
    jobs = "{ jobs(first: 1) { edges { cursor } } }"
    assert [gql.post(jobs).status_code for _ in range(2)] == [200, 200]
    refused = gql.post(jobs)
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 10
    body = refused.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": retry_after}
    assert f"retry after {retry_after} seconds" in error["message"]
    assert _speak(gql)["job"] is not None  # mutations take from their own bucket
    with open_socket(ws_url_of(api.url), tenant.api_key) as socket:  # the same bucket over a socket
        subscribe(socket, "q", jobs)
        message = receive(socket)
    assert message["type"] == "error"  # refused before execution, as the protocol says
    assert message["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
    other = client_for(make_tenant("bystander").api_key)
    assert other.post(jobs).status_code == 200


def test_plans_without_query_limits_get_ten_times_their_mutation_rate(
    gql: GraphQLClient, tenant: TenantHandle
) -> None:
    from service.settings import get_settings

    plan = get_settings().plans[get_settings().default_plan]
    assert "queries_per_minute" not in plan  # the test plans predate the query limits
    limits = gql(VIEWER)["viewer"]["limits"]
    assert limits["queriesPerMinute"] == 10 * plan["mutations_per_minute"]
    assert limits["queryBurst"] == 10 * plan["burst"]
    set_limits(tenant.id, queries_per_minute=5)
    assert gql(VIEWER)["viewer"]["limits"]["queriesPerMinute"] == 5


def test_over_the_queued_cap_the_mutation_answers_quota_exceeded(
    gql: GraphQLClient, tenant: TenantHandle
) -> None:
    set_limits(tenant.id, max_queued=2)
    with session_scope() as session:  # two queued jobs that no worker takes (none runs in this test)
        for _ in range(2):
            create_job(session, tenant.id, "test-slow", {"seconds": 1}, None)
        from service.db import AFTER_COMMIT

        session.info.pop(AFTER_COMMIT, None)
    payload = _speak(gql)
    assert payload["job"] is None
    assert payload["userErrors"][0]["code"] == "QUOTA_EXCEEDED"
    assert gql(VIEWER)["viewer"]["usage"]["queuedJobs"] == 2


def test_text_over_the_plan_limit_is_a_validation_error(gql: GraphQLClient, tenant: TenantHandle) -> None:
    set_limits(tenant.id, max_text_chars=10)
    assert _speak(gql, "x" * 10)["job"] is not None
    payload = _speak(gql, "x" * 11)
    [error] = payload["userErrors"]
    assert error["code"] == "VALIDATION"
    assert error["field"] == ["input", "text"]
    assert "at most 10 characters" in error["message"]
    assert gql(VIEWER)["viewer"]["limits"]["maxTextChars"] == 10


def test_webhook_endpoints_over_the_plan_limit_are_quota_exceeded(
    gql: GraphQLClient, tenant: TenantHandle
) -> None:
    set_limits(tenant.id, max_webhook_endpoints=2)
    for n in range(2):
        created = gql(CREATE_ENDPOINT, {"input": {"url": f"http://127.0.0.1:9/hook/{n}"}})
        assert created["createWebhookEndpoint"]["userErrors"] == []
    refused = gql(CREATE_ENDPOINT, {"input": {"url": "http://127.0.0.1:9/hook/3"}})["createWebhookEndpoint"]
    assert refused["endpoint"] is None
    assert refused["secret"] is None
    assert refused["userErrors"][0]["code"] == "QUOTA_EXCEEDED"
    assert gql(VIEWER)["viewer"]["usage"]["webhookEndpoints"] == 2


def test_viewer_shows_the_plan_with_the_tenants_overrides(gql: GraphQLClient, tenant: TenantHandle) -> None:
    from service.settings import get_settings

    plan = get_settings().plans[get_settings().default_plan]
    before = gql(VIEWER)["viewer"]
    assert before["limits"]["maxRunning"] == plan["max_running"]
    assert before["limits"]["mutationsPerMinute"] == plan["mutations_per_minute"]
    set_limits(tenant.id, max_running=3, max_queued=7)
    after = gql(VIEWER)["viewer"]
    assert after["limits"]["maxRunning"] == 3
    assert after["limits"]["maxQueued"] == 7
    assert after["limits"]["burst"] == plan["burst"]
    assert after["usage"] == {"queuedJobs": 0, "runningJobs": 0, "totalJobs": 0, "webhookEndpoints": 0}


@pytest.fixture
def second_worker(
    api: ApiProcess, worker: ServiceProcess, env: dict[str, str], workdir: Path
) -> Iterator[ServiceProcess]:
    """A second jobs worker beside the session's, so a capped tenant's jobs compete for two."""
    process = ServiceProcess(
        ["worker", "--queues", "jobs"], {**env, "PUBLIC_BASE_URL": api.url}, workdir / "worker-2.log"
    )
    process.start()
    yield process
    process.stop()


def test_jobs_over_max_running_wait_while_another_tenants_job_runs(
    second_worker: ServiceProcess, make_tenant: Callable[..., TenantHandle]
) -> None:
    busy, other = make_tenant("busy"), make_tenant("other")
    set_limits(busy.id, max_running=1)
    time.sleep(1.5)  # both workers listening
    with session_scope() as session:
        busy_ids = [
            create_job(session, busy.id, "test-slow", {"seconds": 1.5, "steps": 3}, None).id for _ in range(3)
        ]
    with session_scope() as session:
        other_id = create_job(session, other.id, "test-slow", {"seconds": 0.3, "steps": 1}, None).id
    ids = [*busy_ids, other_id]
    most_running = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run_once()  # the scheduler's sweep hands deferred jobs back to RQ
        with session_scope() as session:
            rows = list(session.exec(select(Job).where(col(Job.id).in_(ids))))
        running = sum(row.status == "RUNNING" and row.tenant_id == busy.id for row in rows)
        most_running = max(most_running, running)
        if all(row.status == "SUCCEEDED" for row in rows):
            break
        time.sleep(0.1)
    with session_scope() as session:
        jobs = {row.id: row for row in session.exec(select(Job).where(col(Job.id).in_(ids)))}
        events = list(session.exec(select(JobEvent).where(col(JobEvent.job_id).in_(busy_ids))))
    assert all(job.status == "SUCCEEDED" for job in jobs.values()), {j.id: j.status for j in jobs.values()}
    assert most_running <= 1
    runs = sorted((jobs[job_id].started_at, jobs[job_id].finished_at) for job_id in busy_ids)
    for (_, finished), (started, _) in itertools.pairwise(runs):
        assert finished is not None
        assert started is not None
        assert started >= finished  # one at a time
    # The other tenant's job, queued after all three, did not wait for them all.
    other_started = jobs[other_id].started_at
    assert other_started is not None
    assert runs[-1][0] is not None
    assert other_started < runs[-1][0]
    # Waiting is not retrying: one attempt each, and no events beyond queued/started/progress/succeeded.
    assert all(jobs[job_id].attempt == 1 for job_id in busy_ids)
    assert {event.type for event in events} <= {"job.queued", "job.started", "job.progress", "job.succeeded"}
    assert sum(event.type == "job.queued" for event in events) == 3


def test_a_tenant_with_a_long_queue_does_not_hold_up_another_tenant(
    second_worker: ServiceProcess, make_tenant: Callable[..., TenantHandle]
) -> None:
    busy, quiet = make_tenant("busy"), make_tenant("quiet")
    set_limits(busy.id, max_running=1)
    time.sleep(1.5)
    with session_scope() as session:  # 300 jobs in RQ ahead of the quiet tenant's one
        for _ in range(300):
            create_job(session, busy.id, "test-slow", {"seconds": 1, "steps": 1}, None)
    with session_scope() as session:
        quiet_id = create_job(session, quiet.id, "test-slow", {"seconds": 0.2, "steps": 1}, None).id
    deadline = time.monotonic() + 30
    job: Job | None = None
    while time.monotonic() < deadline:
        run_once()
        with session_scope() as session:
            job = session.get(Job, quiet_id)
            if job is not None and job.started_at is not None:
                break
        time.sleep(0.1)
    with session_scope() as session:
        running = session.exec(
            select(func.count()).where(Job.tenant_id == busy.id, Job.status == "RUNNING")
        ).one()
        with session_scope() as session:  # the rest of the busy tenant's queue goes
            session.execute(delete(Job).where(col(Job.tenant_id) == busy.id, col(Job.status) == "QUEUED"))
    assert job is not None, "the quiet tenant's job is gone"
    assert job.started_at is not None, "the quiet tenant's job never started"
    waited = (job.started_at - job.created_at).total_seconds()
    # One of the busy tenant's jobs runs; the rest are set aside at once, not skipped one by one.
    assert waited < 3, f"the quiet tenant's job waited {waited:.1f} s behind 300 jobs of another tenant"
    assert running <= 1
