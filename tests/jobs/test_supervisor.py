"""A job that takes its work horse down (a segfault, a hang SIGALRM cannot reach) fails or retries alone:
the worker's supervisor recovers that job at once, forks a fresh horse, and the worker goes on."""

from __future__ import annotations

import time
from typing import Any

from service.db import session_scope
from service.jobs.service import create_job
from service.scheduler import run_once
from tests.conftest import JOB_QUERY, SPEECH_MUTATION, GraphQLClient, TenantHandle
from tests.jobs.test_lifecycle import wait_for_status
from tests.servers import ServiceProcess


def _start(tenant: TenantHandle, kind: str) -> str:
    with session_scope() as session:
        return create_job(session, tenant.id, kind, {}, None).id


def _until_ended(gql: GraphQLClient, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """The job once it ended, running the scheduler's sweeps meanwhile (a retry is enqueued by them)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = gql(JOB_QUERY, {"id": job_id})["job"]
        if job["status"] in {"SUCCEEDED", "FAILED", "CANCELED"} or time.monotonic() > deadline:
            return job
        run_once()
        time.sleep(0.2)


def _speak(gql: GraphQLClient, text: str) -> str:
    payload = gql(SPEECH_MUTATION, {"input": {"text": text}})["generateSpeech"]
    assert payload["userErrors"] == []
    job_id: str = payload["job"]["id"]
    return job_id


def test_a_job_that_crashes_its_horse_fails_alone_and_the_worker_goes_on(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    crashing = _start(tenant, "test-segfault")
    job = _until_ended(gql, crashing)
    assert job["status"] == "FAILED"
    assert job["attempt"] == 2  # retried once, as its kind allows, then failed
    assert job["error"]["code"] == "CRASHED"
    assert "SIGSEGV" in job["error"]["message"]
    retried = [e["data"] for e in job["events"] if e["type"] == "job.queued" and e["data"].get("code")]
    assert [data["code"] for data in retried] == ["CRASHED"]

    after = _speak(gql, "The worker went on.")
    assert wait_for_status(gql, after, {"SUCCEEDED", "FAILED"})["status"] == "SUCCEEDED"
    assert worker.process is not None
    assert worker.process.poll() is None  # the same worker process, with a fresh horse


def test_a_job_that_hangs_past_its_limit_is_killed_and_the_worker_goes_on(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    hanging = _start(tenant, "test-deaf-hang")
    job = _until_ended(gql, hanging)
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "TIMEOUT"
    assert job["attempt"] == 1

    after = _speak(gql, "Still here.")
    assert wait_for_status(gql, after, {"SUCCEEDED", "FAILED"})["status"] == "SUCCEEDED"
    assert worker.process is not None
    assert worker.process.poll() is None
