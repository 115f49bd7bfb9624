"""Per-job order without endpoint-wide blocking, and per-endpoint rate limits, at a real receiver."""

from __future__ import annotations

import json
import time
from pathlib import Path

from service.db import session_scope
from service.webhooks.service import publish
from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle, commit_job_without_enqueue
from tests.receiver import Answer, Received, Receiver
from tests.servers import ApiProcess, ServiceProcess
from tests.webhooks.support import create_endpoint

JOB_TYPES = ["job.queued", "job.started", "job.progress", "job.succeeded"]


def _job_of(request: Received) -> str:
    job_id: str = json.loads(request.body)["data"]["job"]["id"]
    return job_id


def _type_of(request: Received) -> str:
    event_type: str = json.loads(request.body)["type"]
    return event_type


def _start(gql: GraphQLClient, text: str) -> str:
    payload = gql(SPEECH_MUTATION, {"input": {"text": text}})["generateSpeech"]
    assert payload["userErrors"] == []
    job_id: str = payload["job"]["id"]
    return job_id


def test_a_jobs_events_arrive_in_order_behind_a_retry_while_another_jobs_pass(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    receiver.script(path, Answer(status=500, body=b"not yet"))
    create_endpoint(gql, receiver.url + path, eventTypes=JOB_TYPES)
    first = _start(gql, "The first job. It has two sentences.")
    receiver.wait_for(path, lambda requests: len(requests) >= 1)
    second = _start(gql, "The second job.")

    def both_done(requests: list[Received]) -> bool:
        done = {_job_of(r) for r in requests if _type_of(r) == "job.succeeded"}
        return {first, second} <= done

    requests = receiver.wait_for(path, both_done)
    assert both_done(requests), [(_job_of(r), _type_of(r)) for r in requests]
    of_first = [(_type_of(r), r.headers["webhook-id"]) for r in requests if _job_of(r) == first]
    # The 500, then the same event again, then the rest: nothing of the job overtook its retry.
    assert of_first[0][0] == of_first[1][0] == "job.queued", of_first
    assert of_first[0][1] == of_first[1][1]
    types = [event_type for event_type, _ in of_first[1:]]
    assert types[0] == "job.queued"
    assert types[1] == "job.started"
    assert types[-1] == "job.succeeded"
    stamps = [json.loads(r.body)["timestamp"] for r in requests if _job_of(r) == first][1:]
    assert stamps == sorted(stamps), "each later milestone after every earlier one"
    # The second job's events did not wait behind the first job's retry.
    retry_at = next(r.at for r in requests[1:] if _job_of(r) == first)
    assert any(_job_of(r) == second and r.at < retry_at for r in requests), "another job was held up"
    of_second = [_type_of(r) for r in requests if _job_of(r) == second]
    assert of_second[0] == "job.queued"
    assert of_second[-1] == "job.succeeded"


def test_a_jobs_next_event_goes_once_the_one_before_it_is_recorded_not_at_the_next_poll(
    env: dict[str, str],
    workdir: Path,
    api: ApiProcess,
    gql: GraphQLClient,
    tenant: TenantHandle,
    receiver: Receiver,
    path: str,
) -> None:
    endpoint = create_endpoint(gql, receiver.url + path, eventTypes=["job.progress"])["endpoint"]
    job_id = commit_job_without_enqueue(tenant.id, "speech", {"text": "Held in order."})
    worker_env = {**env, "PUBLIC_BASE_URL": api.url, "WEBHOOK_POLL_SECONDS": "120"}
    worker = ServiceProcess(["worker"], worker_env, workdir / "ordered-worker.log").start()
    try:
        time.sleep(1)  # listening
        with session_scope() as session:  # five events of one job, one NOTIFY
            for step in range(5):
                data = {"job": {"id": job_id}, "step": step}
                publish(
                    session, tenant.id, "job.progress", data, job_id=job_id, endpoint_ids=[endpoint["id"]]
                )
        started = time.monotonic()
        requests = receiver.wait_for(path, lambda requests: len(requests) >= 5, timeout=20)
        took = time.monotonic() - started
    finally:
        worker.stop()
    # Each waits for the one before it to be recorded, and goes on the claim that recording wakes.
    assert [json.loads(r.body)["data"]["step"] for r in requests] == [0, 1, 2, 3, 4]
    assert took < 10, f"{took:.1f} s: a later event waited for a poll"


RATE = 10
WINDOW = 10  # seconds over which the rate must hold to within 10 %
EVENTS = RATE + RATE * WINDOW  # one second's burst, then WINDOW seconds at the pace


def test_a_rate_limited_endpoint_is_held_to_its_rate_and_others_are_not_slowed(
    gql: GraphQLClient, tenant: TenantHandle, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    limited = create_endpoint(gql, receiver.url + path, eventTypes=["webhook.test"], rateLimitPerSecond=RATE)
    free_path = path + "/free"
    free = create_endpoint(gql, receiver.url + free_path, eventTypes=["webhook.test"])
    started = time.time()
    with session_scope() as session:
        for n in range(EVENTS):
            data = {"endpoint": {"id": "whe_x", "url": "https://x.example"}, "message": f"burst {n}"}
            ids = [limited["endpoint"]["id"], free["endpoint"]["id"]]
            publish(session, tenant.id, "webhook.test", data, endpoint_ids=ids)

    fast = receiver.wait_for(free_path, lambda requests: len(requests) >= EVENTS)
    assert len(fast) == EVENTS
    assert fast[-1].at - started < 5, "the endpoint without a limit was slowed"
    slow = receiver.wait_for(path, lambda requests: len(requests) >= EVENTS, timeout=WINDOW * 1.5)
    assert len(slow) == EVENTS
    arrivals = sorted(request.at for request in slow)
    # Over the window, after the first second's burst, the rate is the limit to within 10 %.
    rate = (EVENTS - RATE) / (arrivals[-1] - arrivals[0])
    assert RATE * 0.9 <= rate <= RATE * 1.1, rate
    # And at no moment faster: no one-second window holds more than the rate plus the burst.
    busiest = max(sum(1 for other in arrivals if at <= other < at + 1) for at in arrivals)
    assert busiest <= 2 * RATE, busiest
