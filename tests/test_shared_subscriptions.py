"""Subscriptions at scale, on real API processes: subscribers asking the same thing share one execution
and one rendering of each change (the API's metrics count both), and a tenant's cap on open
subscriptions holds across API processes, a killed process's share coming free once its lease ends."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection

from service.embedded import free_port
from service.jobs.dispatch import enqueue_job
from tests.conftest import TenantHandle, commit_job_without_enqueue
from tests.servers import ApiProcess, ServiceProcess
from tests.websocket import open_socket, receive, subscribe, ws_url_of

STATUS = "subscription U($id: ID!) { jobUpdates(id: $id) { status progress message } }"
BRIEF = "subscription B($id: ID!) { jobUpdates(id: $id) { id status } }"
RENDERS = "claimcheck_subscription_renders_total"
RECIPIENTS = "claimcheck_subscription_recipients_total"
LEASE_SECONDS = 1.5


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url, timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not scraped")


def _raw_messages(socket: ClientConnection, timeout: float = 30) -> list[str]:
    """The raw text of every message of operation "1" until it completes."""
    texts: list[str] = []
    while True:
        text = socket.recv(timeout=timeout)
        assert isinstance(text, str)
        if '"type":"complete"' in text.replace(" ", ""):
            return texts
        texts.append(text)


def _first(socket: ClientConnection) -> dict[str, Any]:
    message = receive(socket)
    assert message["type"] == "next", message
    return message


@contextlib.contextmanager
def _apis(env: dict[str, str], workdir: Path, count: int, **settings: str) -> Iterator[list[ApiProcess]]:
    processes: list[ApiProcess] = []
    try:
        for _ in range(count):
            process = ApiProcess({**env, **settings}, workdir / f"api-shared-{len(processes)}.log")
            process.env["PUBLIC_BASE_URL"] = process.url
            processes.append(process.start())
        yield processes
    finally:
        for process in processes:
            process.stop()


def test_subscribers_asking_the_same_share_one_rendering_of_each_change(
    env: dict[str, str], workdir: Path, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    """Eight subscribers of one job with one document, two with another: each change is executed and
    rendered once per document, not once per subscriber, and the eight receive the same bytes."""
    metrics_port = free_port()
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    with _apis(env, workdir, 1, METRICS_PORT=str(metrics_port)) as (api,):
        job_id = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 1.5, "steps": 6})
        url = ws_url_of(api.url)
        with contextlib.ExitStack() as sockets:
            same = [sockets.enter_context(open_socket(url, tenant.api_key)) for _ in range(8)]
            other = [sockets.enter_context(open_socket(url, tenant.api_key)) for _ in range(2)]
            renders, recipients = _metric(metrics, RENDERS), _metric(metrics, RECIPIENTS)
            for socket in same:
                subscribe(socket, "1", STATUS, {"id": job_id})
            for socket in other:
                subscribe(socket, "1", BRIEF, {"id": job_id})
            for socket in same + other:  # each holds the QUEUED snapshot: all have joined
                assert '"QUEUED"' in socket.recv(timeout=10)
            enqueue_job(job_id, "test-slow")  # the worker runs it
            heard = [_raw_messages(socket) for socket in same]
            heard_other = [_raw_messages(socket) for socket in other]
        rendered = _metric(metrics, RENDERS) - renders
        sent = _metric(metrics, RECIPIENTS) - recipients

    assert all(messages == heard[0] for messages in heard), "the same bytes to every subscriber"
    assert all(messages == heard_other[0] for messages in heard_other)
    assert len(heard[0]) >= 4, heard[0]  # RUNNING, progress..., SUCCEEDED
    assert '"SUCCEEDED"' in heard[-1][-1]
    changes = 1 + len(heard[0]) + 1 + len(heard_other[0])  # the QUEUED snapshots, then the rest
    assert rendered == changes
    assert sent == 8 * (1 + len(heard[0])) + 2 * (1 + len(heard_other[0]))


def _subscription(url: str, api_key: str, job_id: str, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Open a socket with one subscription to the job and return its first message."""
    socket = stack.enter_context(open_socket(url, api_key))
    subscribe(socket, "1", BRIEF, {"id": job_id})
    return _first(socket)


def _refused(message: dict[str, Any]) -> bool:
    errors = message["payload"].get("errors") or []
    return bool(errors) and errors[0]["extensions"]["code"] == "QUOTA_EXCEEDED"


def test_a_tenants_subscription_cap_holds_across_api_processes_until_one_dies(
    env: dict[str, str], workdir: Path, make_tenant: Callable[..., TenantHandle]
) -> None:
    """Cap 3 over two API processes: two open on A and one on B fill it, a fourth on either is refused
    (another tenant is not); once A is killed, its two come free after its lease, and no more."""
    tenant, other = make_tenant("capped"), make_tenant("uncapped")
    job_id = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 1})  # stays QUEUED
    other_job = commit_job_without_enqueue(other.id, "test-slow", {"seconds": 1})
    settings = {
        "MAX_SUBSCRIPTIONS_PER_TENANT": "3",
        "MAX_SUBSCRIPTIONS_PER_CONNECTION": "2",
        "SUBSCRIPTION_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    with _apis(env, workdir, 2, **settings) as (a, b), contextlib.ExitStack() as sockets:
        url_a, url_b = ws_url_of(a.url), ws_url_of(b.url)
        on_a = sockets.enter_context(open_socket(url_a, tenant.api_key))
        subscribe(on_a, "1", BRIEF, {"id": job_id})
        subscribe(on_a, "2", STATUS, {"id": job_id})
        subscribe(on_a, "3", BRIEF, {"id": job_id})  # the connection's cap is 2
        answers: dict[str, dict[str, Any]] = {}
        while len(answers) < 3:
            message = receive(on_a)
            if message["type"] == "next":
                answers[message["id"]] = message
        assert not _refused(answers["1"])
        assert not _refused(answers["2"])
        assert _refused(answers["3"])
        assert "too many subscriptions on this connection" in answers["3"]["payload"]["errors"][0]["message"]

        assert not _refused(_subscription(url_b, tenant.api_key, job_id, sockets))
        assert _refused(_subscription(url_b, tenant.api_key, job_id, sockets))
        assert _refused(_subscription(url_a, tenant.api_key, job_id, sockets))
        assert not _refused(_subscription(url_b, other.api_key, other_job, sockets))

        a.kill()
        deadline = time.monotonic() + LEASE_SECONDS + 10
        while _refused(_subscription(url_b, tenant.api_key, job_id, sockets)):
            assert time.monotonic() < deadline, "the killed process's places never came free"
            time.sleep(0.2)
        assert not _refused(_subscription(url_b, tenant.api_key, job_id, sockets))
        assert _refused(_subscription(url_b, tenant.api_key, job_id, sockets))


@pytest.mark.parametrize("closing", ["complete", "socket"])
def test_a_subscription_ended_by_the_client_gives_its_place_back(
    env: dict[str, str], workdir: Path, tenant: TenantHandle, closing: str
) -> None:
    job_id = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 1})
    with (
        _apis(env, workdir, 1, MAX_SUBSCRIPTIONS_PER_TENANT="1") as (api,),
        contextlib.ExitStack() as sockets,
    ):
        url = ws_url_of(api.url)
        first = sockets.enter_context(open_socket(url, tenant.api_key))
        subscribe(first, "1", BRIEF, {"id": job_id})
        assert not _refused(_first(first))
        assert _refused(_subscription(url, tenant.api_key, job_id, sockets))
        if closing == "complete":
            first.send('{"id": "1", "type": "complete"}')
        else:
            first.close()
        deadline = time.monotonic() + 10
        while _refused(_subscription(url, tenant.api_key, job_id, sockets)):
            assert time.monotonic() < deadline, "the place never came back"
            time.sleep(0.1)


def test_a_subscriber_joining_a_running_job_starts_from_its_current_state(
    api: ApiProcess, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    """jobUpdates is a snapshot stream: joining the group of a running job, the latest result (its
    current state) comes first, never the QUEUED state the group started from."""
    job_id = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 3, "steps": 6})
    url = ws_url_of(api.url)
    with open_socket(url, tenant.api_key) as early, open_socket(url, tenant.api_key) as late:
        subscribe(early, "1", STATUS, {"id": job_id})
        assert _first(early)["payload"]["data"]["jobUpdates"]["status"] == "QUEUED"
        enqueue_job(job_id, "test-slow")  # now that the group exists
        while "step" not in (receive(early, timeout=30)["payload"]["data"]["jobUpdates"]["message"] or ""):
            pass  # until the job has made progress (the worker may be busy with earlier tests' jobs)
        subscribe(late, "1", STATUS, {"id": job_id})
        current = _first(late)["payload"]["data"]["jobUpdates"]
        assert current["status"] in {"RUNNING", "SUCCEEDED"}
        assert current["progress"] > 0
        rest = [json.loads(text)["payload"]["data"]["jobUpdates"] for text in _raw_messages(late)]
    assert (rest[-1] if rest else current)["status"] == "SUCCEEDED"
