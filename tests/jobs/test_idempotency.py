"""Idempotency under concurrency: racing requests with one key make one job and one enqueue."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from sqlmodel import col, func, select

from service.db import session_scope
from service.jobs.models import Job, JobEvent, JobOutbox
from tests.conftest import SPEECH_MUTATION, TenantHandle
from tests.servers import ApiProcess

RACERS = 6


def _race(api: ApiProcess, tenant: TenantHandle, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """POST every input at the same moment (one connection each); the generateSpeech payloads."""
    barrier = threading.Barrier(len(inputs))
    results: list[dict[str, Any]] = [{} for _ in inputs]
    headers = {"authorization": f"Bearer {tenant.api_key}"}

    def post(index: int) -> None:
        with httpx.Client(base_url=api.url, headers=headers, timeout=30) as client:
            client.get("/healthz")  # connected before the start line
            barrier.wait()
            response = client.post(
                "/graphql", json={"query": SPEECH_MUTATION, "variables": {"input": inputs[index]}}
            )
            body = response.json()
            assert body.get("data"), body
            results[index] = body["data"]["generateSpeech"]

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_requests_with_one_key_and_input_make_one_job_and_one_enqueue(
    api: ApiProcess, tenant: TenantHandle
) -> None:
    for round_ in range(3):
        key = f"race-{round_}"
        payloads = _race(api, tenant, [{"text": "same words", "idempotencyKey": key}] * RACERS)
        assert all(p["userErrors"] == [] for p in payloads), payloads
        ids = {p["job"]["id"] for p in payloads}
        assert len(ids) == 1
        [job_id] = ids
        with session_scope() as session:
            jobs = session.exec(
                select(func.count())
                .select_from(Job)
                .where(Job.tenant_id == tenant.id, Job.idempotency_key == key)
            ).one()
            queued_events = session.exec(
                select(func.count())
                .select_from(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.type == "job.queued")
            ).one()
            outbox = session.exec(
                select(func.count()).select_from(JobOutbox).where(col(JobOutbox.job_id) == job_id)
            ).one()
        # One job, one event, one outbox row: the losers' writes (and their after-commit enqueues,
        # registered in the same savepoint) were rolled back; only the creator enqueues.
        assert jobs == 1
        assert queued_events == 1
        assert outbox <= 1  # 0 once a worker started it


def test_concurrent_requests_with_one_key_and_different_inputs_conflict(
    api: ApiProcess, tenant: TenantHandle
) -> None:
    inputs = [{"text": f"words {n}", "idempotencyKey": "race-conflict"} for n in range(RACERS)]
    payloads = _race(api, tenant, inputs)
    winners = [p for p in payloads if p["job"] is not None]
    losers = [p for p in payloads if p["job"] is None]
    assert len(winners) == 1, payloads
    assert {p["userErrors"][0]["code"] for p in losers} == {"IDEMPOTENCY_CONFLICT"}
    with session_scope() as session:
        count = session.exec(
            select(func.count())
            .select_from(Job)
            .where(Job.tenant_id == tenant.id, Job.idempotency_key == "race-conflict")
        ).one()
    assert count == 1
