"""The job lifecycle over real HTTP, WebSockets and worker processes: watch, wait, cancel, delete,
estimated completion, and recovery when a worker is killed or stopped mid-job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from service.db import session_scope
from service.jobs.service import create_job
from service.scheduler import run_once
from tests.conftest import JOB_QUERY, GraphQLClient, TenantHandle, commit_job_without_enqueue
from tests.servers import ApiProcess, ServiceProcess
from tests.websocket import PROTOCOL, open_socket, ws_url_of

CANCEL = "mutation C($id: ID!) { cancelJob(id: $id) { job { id status } userErrors { code message } } }"
DELETE = "mutation D($id: ID!) { deleteJob(id: $id) { id userErrors { code message } } }"
WAIT = "query W($id: ID!, $wait: Int) { job(id: $id, waitSeconds: $wait) { status progress message } }"
UPDATES = "subscription U($id: ID!) { jobUpdates(id: $id) { id status progress message } }"


def start_slow(tenant: TenantHandle, seconds: float = 2.0, steps: int = 10) -> str:
    """A committed, enqueued job of the test worker's slow kind (tests/plugin_kinds.py)."""
    with session_scope() as session:
        job = create_job(session, tenant.id, "test-slow", {"seconds": seconds, "steps": steps}, None)
    return job.id


def wait_for_status(
    gql: GraphQLClient, job_id: str, statuses: set[str], timeout: float = 30
) -> dict[str, Any]:
    job = gql.wait_for_job(job_id, timeout=timeout, until=statuses)
    assert job["status"] in statuses, job
    return job


def test_canceling_a_queued_job_is_immediate_and_it_never_runs(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    job_id = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 0.5})
    payload = gql(CANCEL, {"id": job_id})["cancelJob"]
    assert payload["userErrors"] == []
    assert payload["job"]["status"] == "CANCELED"
    run_once()  # the outbox no longer holds it
    time.sleep(1)
    job = gql(JOB_QUERY, {"id": job_id})["job"]
    assert job["status"] == "CANCELED"
    assert job["attempt"] == 0
    assert job["finishedAt"]
    assert [e["type"] for e in job["events"]] == ["job.queued", "job.canceled"]


def test_canceling_a_running_job_stops_the_handler(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    job_id = start_slow(tenant, seconds=10, steps=100)
    wait_for_status(gql, job_id, {"RUNNING"})
    payload = gql(CANCEL, {"id": job_id})["cancelJob"]
    assert payload["job"]["status"] == "CANCELING"
    started = time.monotonic()
    job = wait_for_status(gql, job_id, {"CANCELED", "SUCCEEDED", "FAILED"}, timeout=15)
    assert job["status"] == "CANCELED"
    assert time.monotonic() - started < 5  # long before its 10 s
    assert job["progress"] < 1
    assert job["artifact"] is None
    assert [e["type"] for e in job["events"]][-2:] == ["job.canceling", "job.canceled"]
    again = gql(CANCEL, {"id": job_id})["cancelJob"]
    assert again["job"] is None
    assert again["userErrors"][0]["code"] == "INVALID_STATE"


def test_deleting_removes_the_job_and_its_file_but_not_a_running_one(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    running = start_slow(tenant, seconds=3)
    wait_for_status(gql, running, {"RUNNING"})
    refused = gql(DELETE, {"id": running})["deleteJob"]
    assert refused["id"] is None
    assert refused["userErrors"][0]["code"] == "INVALID_STATE"

    done = wait_for_status(gql, running, {"SUCCEEDED"})
    url = done["artifact"]["downloadUrl"]
    assert httpx.get(url).status_code == 200
    assert gql(DELETE, {"id": running})["deleteJob"] == {"id": running, "userErrors": []}
    assert gql(JOB_QUERY, {"id": running})["job"] is None
    assert httpx.get(url).status_code == 410
    assert gql(DELETE, {"id": running})["deleteJob"]["userErrors"][0]["code"] == "NOT_FOUND"


def test_long_poll_answers_when_the_job_changes_and_advises_a_retry(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    job_id = start_slow(tenant, seconds=3, steps=3)
    first = wait_for_status(gql, job_id, {"RUNNING"})
    asked = time.monotonic()
    response = gql.post(WAIT, {"id": job_id, "wait": 20})
    waited = time.monotonic() - asked
    changed = response.json()["data"]["job"]
    assert waited < 5
    assert (changed["progress"], changed["message"]) != (first["progress"], first["message"])
    assert response.headers["retry-after"] == "2"

    done = gql.post(WAIT, {"id": job_id, "wait": 20})
    while done.json()["data"]["job"]["status"] == "RUNNING":
        done = gql.post(WAIT, {"id": job_id, "wait": 20})
    assert done.json()["data"]["job"]["status"] == "SUCCEEDED"
    assert "retry-after" not in done.headers

    too_long = gql.post(WAIT, {"id": job_id, "wait": 31}).json()
    assert too_long["errors"][0]["extensions"]["code"] == "VALIDATION"


def test_estimated_completion_appears_once_the_rate_is_known(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    query = "query E($id: ID!) { job(id: $id) { status progress estimatedCompletionAt } }"
    job_id = start_slow(tenant, seconds=4, steps=8)
    deadline = time.monotonic() + 20
    estimate = None
    while time.monotonic() < deadline and estimate is None:
        job = gql(query, {"id": job_id})["job"]
        if job["status"] == "QUEUED":
            assert job["estimatedCompletionAt"] is None
        estimate = job["estimatedCompletionAt"]
        time.sleep(0.2)
    assert estimate is not None
    eta = time.mktime(time.strptime(estimate[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert time.time() - 1 < eta < time.time() + 10
    done = wait_for_status(gql, job_id, {"SUCCEEDED"})
    assert gql(query, {"id": done["id"]})["job"]["estimatedCompletionAt"] is None


@pytest.fixture
def ws_url(api: ApiProcess) -> str:
    return ws_url_of(api.url)


def updates(socket: ClientConnection, timeout: float = 30) -> Iterator[dict[str, Any]]:
    """Each `next` payload's job until `complete`."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(socket.recv(timeout=max(deadline - time.monotonic(), 0.1)))
        if message["type"] == "complete":
            return
        assert message["type"] == "next", message
        yield message["payload"]["data"]["jobUpdates"]


def test_a_subscription_sends_the_snapshot_then_ordered_changes_then_completes(
    ws_url: str, tenant: TenantHandle, worker: ServiceProcess, gql: GraphQLClient
) -> None:
    job_id = start_slow(tenant, seconds=2, steps=8)
    with open_socket(ws_url, tenant.api_key) as socket:
        socket.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": UPDATES, "variables": {"id": job_id}}}
            )
        )
        seen = list(updates(socket))
    assert seen[0]["id"] == job_id
    assert seen[0]["status"] in {"QUEUED", "RUNNING"}
    assert seen[-1]["status"] == "SUCCEEDED"
    assert seen[-1]["progress"] == 1.0
    progress = [update["progress"] for update in seen]
    assert progress == sorted(progress)
    assert len(seen) >= 4
    statuses = [update["status"] for update in seen]
    assert statuses.index("RUNNING") < statuses.index("SUCCEEDED")


def test_a_reconnecting_subscriber_gets_the_current_snapshot_first(
    ws_url: str, tenant: TenantHandle, worker: ServiceProcess, gql: GraphQLClient
) -> None:
    job_id = start_slow(tenant, seconds=1, steps=2)
    wait_for_status(gql, job_id, {"SUCCEEDED"})
    with open_socket(ws_url, tenant.api_key) as socket:
        socket.send(
            json.dumps(
                {"id": "a", "type": "subscribe", "payload": {"query": UPDATES, "variables": {"id": job_id}}}
            )
        )
        assert [update["status"] for update in updates(socket)] == ["SUCCEEDED"]


def test_subscriptions_refuse_bad_keys_and_other_tenants_jobs(
    ws_url: str, tenant: TenantHandle, make_tenant: Any, worker: ServiceProcess
) -> None:
    bad_key = {"type": "connection_init", "payload": {"authorization": "Bearer ck_00000000_nope"}}
    with connect(ws_url, subprotocols=[PROTOCOL]) as socket:
        socket.send(json.dumps(bad_key))
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403

    subscribe = {"id": "1", "type": "subscribe", "payload": {"query": UPDATES, "variables": {"id": "x"}}}
    with connect(ws_url, subprotocols=[PROTOCOL]) as socket:
        socket.send(json.dumps(subscribe))  # without connection_init
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401

    job_id = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 0.1})
    with open_socket(ws_url, make_tenant("other").api_key) as socket:
        socket.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": UPDATES, "variables": {"id": job_id}}}
            )
        )
        message = json.loads(socket.recv(timeout=10))
    assert message["type"] == "next"
    assert message["payload"]["data"] is None
    assert message["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def _descendants(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def _own_worker(env: dict[str, str], api: ApiProcess, workdir: Path, name: str) -> ServiceProcess:
    process = ServiceProcess(
        ["worker", "--queues", "jobs"], {**env, "PUBLIC_BASE_URL": api.url}, workdir / name
    )
    return process.start()


def test_a_job_whose_worker_is_killed_is_recovered_to_a_terminal_state(
    gql: GraphQLClient,
    tenant: TenantHandle,
    worker: ServiceProcess,
    env: dict[str, str],
    api: ApiProcess,
    workdir: Path,
) -> None:
    worker.stop()  # only the doomed worker may take the job
    doomed = _own_worker(env, api, workdir, "doomed-worker.log")
    try:
        job_id = start_slow(tenant, seconds=3, steps=30)
        running = wait_for_status(gql, job_id, {"RUNNING"})
        assert running["attempt"] == 1
        for pid in [doomed.pid, *_descendants(doomed.pid)]:  # the machine is gone: worker and work horse
            os.kill(pid, signal.SIGKILL)
        doomed.process.wait() if doomed.process else None
    finally:
        worker.start()
    deadline = time.monotonic() + 30
    while gql(JOB_QUERY, {"id": job_id})["job"]["attempt"] < 2 and time.monotonic() < deadline:
        run_once()  # the scheduler: heartbeat older than JOB_STUCK_AFTER_SECONDS, then the outbox
        time.sleep(0.5)
    job = wait_for_status(gql, job_id, {"SUCCEEDED", "FAILED"})
    assert job["status"] == "SUCCEEDED"
    assert job["attempt"] == 2
    lost = [e for e in job["events"] if e["type"] == "job.queued" and e["data"] and e["data"].get("code")]
    assert lost
    assert lost[0]["data"]["code"] == "WORKER_LOST"


def test_sigterm_lets_a_worker_finish_its_job_before_it_exits(
    gql: GraphQLClient,
    tenant: TenantHandle,
    worker: ServiceProcess,
    env: dict[str, str],
    api: ApiProcess,
    workdir: Path,
) -> None:
    worker.stop()
    # PYTHONFAULTHANDLER: should the worker not leave, SIGABRT prints every thread's stack to its log.
    leaving = _own_worker({**env, "PYTHONFAULTHANDLER": "1"}, api, workdir, "leaving-worker.log")
    try:
        job_id = start_slow(tenant, seconds=2, steps=10)
        wait_for_status(gql, job_id, {"RUNNING"})
        assert leaving.process is not None
        leaving.process.send_signal(signal.SIGTERM)
        try:
            exit_code = leaving.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in [*_descendants(leaving.pid), leaving.pid]:
                os.kill(pid, signal.SIGABRT)
            leaving.process.wait(timeout=10)
            pytest.fail("the worker was still there 30 s after SIGTERM:\n" + leaving.log()[-8000:])
        assert exit_code == 0, leaving.log()[-2000:]
    finally:
        worker.start()
    job = gql(JOB_QUERY, {"id": job_id})["job"]
    assert job["status"] == "SUCCEEDED", leaving.log()[-2000:]
    assert job["attempt"] == 1, leaving.log()[-2000:]


def test_a_live_run_past_its_kinds_timeout_is_stopped_by_the_scheduler(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    with session_scope() as session:
        job_id = create_job(session, tenant.id, "test-overrun", {"seconds": 20, "steps": 40}, None).id
    wait_for_status(gql, job_id, {"RUNNING"})
    deadline = time.monotonic() + 15
    job = gql(JOB_QUERY, {"id": job_id})["job"]
    while job["status"] == "RUNNING" and time.monotonic() < deadline:
        run_once()  # the timeout is 1 s, the margin JOB_STUCK_AFTER_SECONDS (3 s in tests)
        time.sleep(0.5)
        job = gql(JOB_QUERY, {"id": job_id})["job"]
    assert job["status"] == "FAILED", job
    assert job["error"] == {"code": "TIMEOUT", "message": "the job ran past its 1 s limit", "retryable": True}
    time.sleep(1)  # the stopped run does not come back to overwrite the outcome
    assert gql(JOB_QUERY, {"id": job_id})["job"]["status"] == "FAILED"
