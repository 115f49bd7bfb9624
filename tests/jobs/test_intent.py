"""Job intent over the real API, workers, scheduler and a webhook receiver: priorities (taken highest
first, LOW still moving under a HIGH load, capped by plan), deadlines (a queued job never starts, a
running one is stopped, at-risk is flagged once), and the dead letter (listed, requeued with the same
id by its tenant or an operator, never by another tenant)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.db import session_scope
from service.jobs.priority import JobPriority
from service.jobs.service import create_job
from service.scheduler import run_once
from tests.conftest import GraphQLClient, TenantHandle
from tests.jobs.test_lifecycle import wait_for_status
from tests.receiver import Received, Receiver
from tests.servers import ApiProcess, ServiceProcess
from tests.tenants.support import set_limits

SPEAK = """
mutation Speak($input: GenerateSpeechInput!) {
  generateSpeech(input: $input) {
    job { id status priority deadline }
    userErrors { code field message }
  }
}
"""
JOB = """
query Job($id: ID!) {
  job(id: $id) {
    id status attempt priority deadline atRisk deadLetteredAt startedAt finishedAt
    error { code message retryable remediation }
    artifact { filename }
    events { type data }
  }
}
"""
DEAD_LETTER = "{ jobs(deadLettered: true) { nodes { id status deadLetteredAt error { code } } } }"
RETRY = "mutation R($id: ID!) { retryJob(id: $id) { job { id status } userErrors { code field message } } }"
CREATE_ENDPOINT = """
mutation E($url: String!) {
  createWebhookEndpoint(input: {url: $url}) { endpoint { id } userErrors { code } }
}
"""


def _speak(gql: GraphQLClient, text: str, **fields: Any) -> str:
    payload = gql(SPEAK, {"input": {"text": text, **fields}})["generateSpeech"]
    assert payload["userErrors"] == [], payload
    job_id: str = payload["job"]["id"]
    return job_id


def _job(gql: GraphQLClient, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = gql(JOB, {"id": job_id})["job"]
    return job


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def _wait(condition: Any, timeout: float = 30, interval: float = 0.1) -> None:
    """Until condition() holds (running the scheduler's sweeps meanwhile), or fail at the timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(interval)


@pytest.fixture
def paused(worker: ServiceProcess) -> Iterator[None]:
    """The session's worker stopped for the test (jobs wait in their queues), started again after."""
    worker.stop()
    try:
        yield
    finally:
        worker.start()


def _own_worker(env: dict[str, str], api: ApiProcess, workdir: Path, **settings: str) -> ServiceProcess:
    name = f"intent-worker-{uuid.uuid4().hex[:6]}.log"
    process_env = {**env, "PUBLIC_BASE_URL": api.url, **settings}
    return ServiceProcess(["worker", "--queues", "jobs"], process_env, workdir / name).start()


def _started_order(gql: GraphQLClient, job_ids: list[str]) -> list[str]:
    jobs = [_job(gql, job_id) for job_id in job_ids]
    assert all(job["startedAt"] for job in jobs), jobs
    return [job["id"] for job in sorted(jobs, key=lambda job: job["startedAt"])]


# --- priority ------------------------------------------------------------------------------------------


def test_with_a_backlog_of_low_jobs_a_high_job_starts_next(
    gql: GraphQLClient, paused: None, env: dict[str, str], api: ApiProcess, workdir: Path
) -> None:
    low = [_speak(gql, f"Low number {n}.", priority="LOW") for n in range(6)]
    normal = _speak(gql, "Normal one.")
    high = _speak(gql, "High one.", priority="HIGH")
    assert _job(gql, high)["priority"] == "HIGH"
    worker = _own_worker(env, api, workdir)
    try:
        for job_id in [*low, normal, high]:
            wait_for_status(gql, job_id, {"SUCCEEDED"})
    finally:
        worker.stop()
    order = _started_order(gql, [*low, normal, high])
    assert order[:2] == [high, normal], order  # queued last, started first
    assert order[2:] == low  # in their own order


def test_low_still_progresses_under_a_steady_high_load(
    gql: GraphQLClient, paused: None, env: dict[str, str], api: ApiProcess, workdir: Path
) -> None:
    low = _speak(gql, "Low, waiting.", priority="LOW")
    high = [_speak(gql, f"High number {n}.", priority="HIGH") for n in range(24)]
    worker = _own_worker(env, api, workdir, JOB_PRIORITY_STARVATION_EVERY="4")
    try:
        wait_for_status(gql, low, {"SUCCEEDED"})
        for job_id in high:
            wait_for_status(gql, job_id, {"SUCCEEDED"})
    finally:
        worker.stop()
    order = _started_order(gql, [low, *high])
    assert order.index(low) == 3, order  # the 4th take looks lowest first: LOW ran with 21 HIGH still waiting


def test_a_plan_without_high_priority_refuses_it_and_bad_deadlines_are_validation_errors(
    gql: GraphQLClient, tenant: TenantHandle
) -> None:
    set_limits(tenant.id, max_priority=1)
    refused = gql(SPEAK, {"input": {"text": "Hurry.", "priority": "HIGH"}})["generateSpeech"]
    assert refused["job"] is None
    assert refused["userErrors"] == [
        {
            "code": "FORBIDDEN",
            "field": ["input", "priority"],
            "message": "this plan allows priorities up to NORMAL",
        }
    ]
    limits = gql("{ viewer { limits { maxPriority } } }")["viewer"]["limits"]
    assert limits == {"maxPriority": "NORMAL"}
    _speak(gql, "Low is fine.", priority="LOW")
    for deadline in (_in(-60), _in(60 * 24 * 3600)):  # past, and beyond JOB_DEADLINE_MAX_SECONDS
        payload = gql(SPEAK, {"input": {"text": "When?", "deadline": deadline}})["generateSpeech"]
        errors = [(error["code"], error["field"]) for error in payload["userErrors"]]
        assert errors == [("VALIDATION", ["input", "deadline"])]


# --- deadlines -----------------------------------------------------------------------------------------


def test_a_queued_job_past_its_deadline_never_runs(
    gql: GraphQLClient, paused: None, env: dict[str, str], api: ApiProcess, workdir: Path
) -> None:
    taken = _speak(gql, "Too late for a worker.", deadline=_in(1.5))
    swept = _speak(gql, "Too late for the scheduler.", deadline=_in(1.5))
    time.sleep(1.6)  # both deadlines pass while no worker runs
    run_once()  # the scheduler's deadline sweep fails both; the worker below finds nothing to run
    worker = _own_worker(env, api, workdir)
    try:
        fresh = _speak(gql, "Plenty of time.", deadline=_in(600))
        wait_for_status(gql, fresh, {"SUCCEEDED"})
    finally:
        worker.stop()
    for job_id in (taken, swept):
        job = _job(gql, job_id)
        assert job["status"] == "FAILED"
        assert job["attempt"] == 0
        assert job["startedAt"] is None
        assert job["error"]["code"] == "DEADLINE_EXCEEDED"
        assert job["error"]["retryable"] is False
        assert "later deadline" in job["error"]["remediation"]
        assert job["deadLetteredAt"] is not None
        assert [event["type"] for event in job["events"]] == ["job.queued", "job.failed"]


def test_a_worker_taking_a_job_past_its_deadline_fails_it_without_running_it(
    gql: GraphQLClient, paused: None, env: dict[str, str], api: ApiProcess, workdir: Path
) -> None:
    job_id = _speak(gql, "Still in RQ at the deadline.", deadline=_in(1.2))
    time.sleep(1.3)  # no scheduler round: the worker is the first to see it
    worker = _own_worker(env, api, workdir)
    try:
        job = wait_for_status(gql, job_id, {"FAILED"})
    finally:
        worker.stop()
    job = _job(gql, job_id)
    assert (job["attempt"], job["startedAt"], job["error"]["code"]) == (0, None, "DEADLINE_EXCEEDED")


def test_a_running_job_is_flagged_at_risk_once_then_stopped_at_its_deadline(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess, env: dict[str, str]
) -> None:
    receiver = Receiver().start()
    path = f"/hooks/{uuid.uuid4().hex}"
    try:
        created = gql(CREATE_ENDPOINT, {"url": receiver.url + path})["createWebhookEndpoint"]
        assert created["userErrors"] == []
        with session_scope() as session:  # a slow kind of the test worker (tests/plugin_kinds.py)
            job_id = create_job(
                session,
                tenant.id,
                "test-slow",
                {"seconds": 30, "steps": 150},
                None,
                priority=JobPriority.LOW,
                deadline=datetime.now(UTC) + timedelta(seconds=8),
            ).id
        wait_for_status(gql, job_id, {"RUNNING"})
        # 30 s of work cannot end within 8 s: flagged once its rate is known (5 % done), before the end
        _wait(lambda: "job.deadline_at_risk" in [event["type"] for event in _job(gql, job_id)["events"]])
        at_risk = _job(gql, job_id)
        assert (at_risk["status"], at_risk["atRisk"]) == ("RUNNING", True)
        wait_for_status(gql, job_id, {"FAILED"}, timeout=20)
        job = _job(gql, job_id)
        requests = receiver.wait_for(path, lambda found: "job.failed" in _types(found))
    finally:
        receiver.stop()
    assert job["error"]["code"] == "DEADLINE_EXCEEDED"
    assert job["startedAt"] is not None
    assert job["atRisk"] is False  # it has ended
    assert job["artifact"] is None
    types = [event["type"] for event in job["events"]]
    assert types.count("job.deadline_at_risk") == 1
    assert types.index("job.deadline_at_risk") < types.index("job.canceling") < types.index("job.failed")
    job_dir = Path(env["STORAGE_DIR"]) / "tenants" / tenant.id / "jobs" / job_id
    assert not job_dir.exists() or not any(job_dir.iterdir())  # no partial file left
    bodies = {body["type"]: body["data"]["job"] for body in map(_body, requests)}
    assert _types(requests).count("job.deadline_at_risk") == 1
    assert bodies["job.deadline_at_risk"]["priority"] == "LOW"
    assert bodies["job.deadline_at_risk"]["deadline"] is not None
    assert bodies["job.failed"]["error"]["code"] == "DEADLINE_EXCEEDED"
    assert bodies["job.failed"]["error"]["remediation"]
    assert bodies["job.failed"]["deadLetteredAt"] is not None


def _body(request: Received) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.body)
    return body


def _types(requests: list[Received]) -> list[str]:
    return [_body(request)["type"] for request in requests]


# --- the dead letter -----------------------------------------------------------------------------------


def _dead_lettered(gql: GraphQLClient, text: str) -> str:
    """A speech job failed for good (its deadline passed before any worker took it)."""
    job_id = _speak(gql, text, deadline=_in(1.1))
    _wait(lambda: (run_once(), _job(gql, job_id)["status"])[1] == "FAILED", interval=0.3)
    return job_id


def test_requeue_from_the_dead_letter_succeeds_with_the_same_id(
    gql: GraphQLClient,
    tenant: TenantHandle,
    paused: None,
    env: dict[str, str],
    api: ApiProcess,
    workdir: Path,
) -> None:
    by_tenant = _dead_lettered(gql, "Requeued by its tenant.")
    by_operator = _dead_lettered(gql, "Requeued by the operator.")
    listed = {job["id"]: job for job in gql(DEAD_LETTER)["jobs"]["nodes"]}
    assert {by_tenant, by_operator} <= set(listed)
    assert listed[by_tenant]["error"]["code"] == "DEADLINE_EXCEEDED"

    payload = gql(RETRY, {"id": by_tenant})["retryJob"]
    assert payload == {"job": {"id": by_tenant, "status": "QUEUED"}, "userErrors": []}
    again = gql(RETRY, {"id": by_tenant})["retryJob"]["userErrors"]
    assert [error["code"] for error in again] == ["INVALID_STATE"]  # no longer in the dead letter

    listing = _cli(env, "jobs", "dead-letter", "--tenant", tenant.id, "--json")
    rows = {row["job_id"]: row for row in json.loads(listing)}
    assert set(rows) == {by_operator}
    assert rows[by_operator]["error_code"] == "DEADLINE_EXCEEDED"
    assert rows[by_operator]["remediation"]
    assert f"{by_operator} requeued" in _cli(env, "jobs", "requeue", by_operator)

    worker = _own_worker(env, api, workdir)
    try:
        done = [wait_for_status(gql, job_id, {"SUCCEEDED", "FAILED"}) for job_id in (by_tenant, by_operator)]
    finally:
        worker.stop()
    assert [job["status"] for job in done] == ["SUCCEEDED", "SUCCEEDED"]
    for job_id, by in ((by_tenant, "tenant"), (by_operator, "operator")):
        job = _job(gql, job_id)
        assert (job["id"], job["attempt"], job["error"], job["deadLetteredAt"]) == (job_id, 1, None, None)
        types = [event["type"] for event in job["events"]]
        assert types[:4] == ["job.queued", "job.failed", "job.requeued", "job.started"], types
        assert types[-1] == "job.succeeded", types
        requeued = next(event for event in job["events"] if event["type"] == "job.requeued")
        assert requeued["data"] == {"attempt": 1, "previousError": "DEADLINE_EXCEEDED", "by": by}
    still_dead = {node["id"] for node in gql(DEAD_LETTER)["jobs"]["nodes"]}
    assert not still_dead & {by_tenant, by_operator}


def test_another_tenant_cannot_requeue(
    gql: GraphQLClient, make_tenant: Any, client_for: Any, paused: None
) -> None:
    job_id = _dead_lettered(gql, "Mine to requeue.")
    other = client_for(make_tenant("other").api_key)
    payload = other(RETRY, {"id": job_id})["retryJob"]
    assert payload["job"] is None
    assert [error["code"] for error in payload["userErrors"]] == ["NOT_FOUND"]
    assert other(DEAD_LETTER)["jobs"]["nodes"] == []
    assert _job(gql, job_id)["status"] == "FAILED"


def _cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
