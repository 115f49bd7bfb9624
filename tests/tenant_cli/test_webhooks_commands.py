"""`claimcheck webhooks listen` and `trigger` against the real API, worker and a local receiver."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis
from sqlmodel import col, select
from standardwebhooks.webhooks import Webhook

import callbacks
from service.client import Claimcheck
from service.client.generated_sync.input_types import CreateWebhookEndpointInput
from service.webhooks.events import CATALOG
from service.webhooks.listeners import PREFIX
from tests.conftest import TenantHandle
from tests.receiver import Received, Receiver
from tests.servers import ApiProcess, ServiceProcess
from tests.tenant_cli.conftest import CLI, default_ctrl_c, start_job, tenant_env
from tests.tenant_cli.conftest import Claimcheck as ClaimcheckCommand


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def own_api(env: dict[str, str], workdir: Path) -> Iterator[ApiProcess]:
    """An API process of this test's own, to kill and start again under a listener."""
    process = ApiProcess(env, workdir / "own-api.log")
    process.env["PUBLIC_BASE_URL"] = process.url
    process.start()
    yield process
    process.stop()


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    """The listeners a test starts, killed at its end if it did not stop them (a failed assertion)."""
    started: list[Listener] = []
    yield started
    for listener in started:
        if listener.process.poll() is None:
            listener.process.kill()
            listener.process.communicate(timeout=20)


class Listener:
    """A running `claimcheck webhooks listen`: its secret, and its output lines."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.stderr_path = log
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [*CLI, "webhooks", "listen", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                preexec_fn=default_ctrl_c,
            )
        assert self.process.stdout is not None
        first = self.process.stdout.readline().strip()
        assert first.startswith("secret: whsec_"), (first, self.stderr())
        self.secret = first.removeprefix("secret: ")

    def wait_until_listening(self, redis_url: str, tenant_id: str, timeout: float = 20) -> None:
        """The API has marked the tenant as listened to: from now on its events reach the listener."""
        deadline = time.monotonic() + timeout
        with Redis.from_url(redis_url) as redis:
            while not redis.exists(PREFIX + tenant_id):
                assert self.process.poll() is None, self.stderr()
                assert time.monotonic() < deadline, "the listener did not subscribe"
                time.sleep(0.05)

    def interrupt(self) -> tuple[int, list[str]]:
        """Ctrl-C; its exit code and the lines it printed."""
        self.process.send_signal(signal.SIGINT)
        out, _ = self.process.communicate(timeout=20)
        return self.process.returncode, out.splitlines()

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def _events_of(tenant_id: str) -> list[tuple[str, str]]:
    """(id, type) of every webhook event the tenant has, oldest first."""
    from service.db import session_scope
    from service.webhooks.models import WebhookEvent

    with session_scope() as session:
        statement = (
            select(WebhookEvent.id, WebhookEvent.type)
            .where(WebhookEvent.tenant_id == tenant_id)
            .order_by(col(WebhookEvent.id))
        )
        return [(event_id, event_type) for event_id, event_type in session.exec(statement)]


def _job_status(tenant_id: str, job_id: str) -> str:
    from service.db import tenant_session_scope
    from service.jobs.service import find_job

    with tenant_session_scope(tenant_id) as session:
        job = find_job(session, tenant_id, job_id)
        assert job is not None
        return job.status


def _succeeded(job_id: str) -> Callable[[list[Received]], bool]:
    def check(requests: list[Received]) -> bool:
        return any(
            json.loads(r.body)["type"] == "job.succeeded" and job_id in r.body.decode() for r in requests
        )

    return check


def test_listen_forwards_every_event_verified_across_a_dropped_connection(
    env: dict[str, str],
    own_api: ApiProcess,
    worker: ServiceProcess,
    tenant: TenantHandle,
    receiver: Receiver,
    tmp_path: Path,
    listeners: list[Listener],
) -> None:
    listener = Listener(
        ["--forward-to", f"{receiver.url}/hook"],
        tenant_env(env, own_api.url, tenant.api_key),
        tmp_path / "listen.err",
    )
    listeners.append(listener)
    listener.wait_until_listening(env["REDIS_URL"], tenant.id)
    before = start_job(tenant.id, "test-slow", {"seconds": 0.4, "steps": 4})
    receiver.wait_for("/hook", _succeeded(before))

    own_api.kill()  # the listener's connection drops; the job below runs while no API is up
    during = start_job(tenant.id, "test-slow", {"seconds": 0.4, "steps": 4})
    deadline = time.monotonic() + 30
    while _job_status(tenant.id, during) != "SUCCEEDED":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    own_api.start()
    received = receiver.wait_for("/hook", _succeeded(during))

    expected = _events_of(tenant.id)
    assert {"job.queued", "job.started", "job.progress", "job.succeeded"} <= {t for _, t in expected}
    ids = [request.headers["webhook-id"] for request in received]
    assert sorted(ids) == sorted(event_id for event_id, _ in expected)  # each once, none missed
    for request in received:
        body = callbacks.verify(request.body, request.headers, listener.secret)
        assert body == Webhook(listener.secret).verify(request.body, request.headers)
        assert (request.headers["webhook-id"], body["type"]) in expected

    code, lines = listener.interrupt()
    assert code == 130
    assert "reconnecting" in listener.stderr()
    assert f"Resume after the last event: claimcheck webhooks listen --forward-to {receiver.url}/hook" in (
        listener.stderr()
    )
    forwards = [line.split() for line in lines]  # time, type, id, status, duration, "ms"
    assert sorted((fields[2], fields[1]) for fields in forwards) == sorted(expected)
    for fields in forwards:
        assert fields[3] == "200"
        assert fields[4].isdigit()
        assert fields[5] == "ms"


def test_trigger_sends_the_catalogs_sample_to_the_endpoints_and_a_running_listener(
    env: dict[str, str],
    api: ApiProcess,
    worker: ServiceProcess,
    tenant: TenantHandle,
    receiver: Receiver,
    claimcheck: ClaimcheckCommand,
    tmp_path: Path,
    listeners: list[Listener],
) -> None:
    with Claimcheck(api.url, tenant.api_key) as sdk:
        endpoint = sdk.create_webhook_endpoint(
            CreateWebhookEndpointInput(url=f"{receiver.url}/endpoint", eventTypes=["job.succeeded"])
        ).create_webhook_endpoint
    assert endpoint.secret is not None
    listener = Listener(
        ["--forward-to", f"{receiver.url}/listener", "--events", "job.succeeded,job.failed"],
        tenant_env(env, api.url, tenant.api_key),
        tmp_path / "listen.err",
    )
    listeners.append(listener)
    listener.wait_until_listening(env["REDIS_URL"], tenant.id)

    done = claimcheck("webhooks", "trigger", "job.succeeded", "--json")

    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout)
    assert sent["endpoints"] == 1
    at_endpoint = receiver.wait_for("/endpoint", bool)
    at_listener = receiver.wait_for("/listener", bool)
    assert at_endpoint[0].body == at_listener[0].body  # the same event, the same body
    example = CATALOG["job.succeeded"].example_body()
    for request, secret in ((at_endpoint[0], endpoint.secret), (at_listener[0], listener.secret)):
        assert request.headers["webhook-id"] == sent["id"]
        body = callbacks.verify(request.body, request.headers, secret)
        assert body["type"] == "job.succeeded"
        assert body["data"] == example["data"]
    assert listener.interrupt()[0] == 130

    unknown = claimcheck("webhooks", "trigger", "job.nope")
    assert unknown.returncode == 2
    assert "error (VALIDATION): unknown event type 'job.nope'" in unknown.stderr
