"""One trace from the tenant's mutation to the partner's receiver.

The API runs in this process (ASGI, with the FastAPI instrumentation), the job runs here with the
context RQ carried in its meta, and a deliverer sends its webhooks to a real receiver on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rq.job import Job as RQJob

from service.app import create_app
from service.jobs.dispatch import TRACE_META
from service.jobs.runner import run_job
from service.redis import get_redis
from service.settings import get_settings
from service.webhooks.deliverer import Deliverer
from tests.conftest import SPEECH_MUTATION, TenantHandle
from tests.receiver import Receiver
from tests.servers import ServiceProcess

CREATE = """
mutation C($url: String!) {
  createWebhookEndpoint(input: {url: $url}) { endpoint { id } userErrors { code } }
}
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def no_worker(worker: ServiceProcess) -> Iterator[None]:
    """The session worker (jobs and deliveries) is stopped, so this process does the work."""
    worker.stop()
    yield
    worker.start()


async def _graphql(app: Any, api_key: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"authorization": f"Bearer {api_key}"},
        )
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def _deliver_until(receiver: Receiver, path: str, event_type: str) -> None:
    stop = asyncio.Event()
    deliverer = asyncio.create_task(Deliverer(get_settings()).run(stop))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(json.loads(r.body)["type"] == event_type for r in receiver.at(path)):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await deliverer


@pytest.fixture
def client_spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """TRACE_CLIENT_SPANS=true for the app this test creates (SQL and Redis spans as well)."""
    monkeypatch.setenv("TRACE_CLIENT_SPANS", "true")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_mutation_enqueue_run_upload_and_webhook_share_one_trace(
    spans: InMemorySpanExporter, tenant: TenantHandle, receiver: Receiver, no_worker: None, client_spans: None
) -> None:
    app = create_app()
    path = f"/{uuid.uuid4().hex}"
    created = asyncio.run(_graphql(app, tenant.api_key, CREATE, {"url": receiver.url + path}))
    assert created["createWebhookEndpoint"]["userErrors"] == []
    spans.clear()

    started = asyncio.run(_graphql(app, tenant.api_key, SPEECH_MUTATION, {"input": {"text": "Trace me."}}))
    job_id = started["generateSpeech"]["job"]["id"]
    rq_job = RQJob.fetch(job_id, connection=get_redis())
    carrier = rq_job.meta[TRACE_META]
    rq_job.delete()  # this process runs it, with the context RQ carried
    run_job(job_id, carrier)
    asyncio.run(_deliver_until(receiver, path, "job.succeeded"))

    finished = spans.get_finished_spans()
    http = [s for s in finished if s.kind.name == "SERVER" and (s.attributes or {}).get("job.id") == job_id]
    assert http, [s.name for s in finished]
    trace_id = http[0].context.trace_id
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    names = {s.name for s in in_trace}
    assert {"job.enqueue", "job.run", "storage.upload", "webhook.attempt"} <= names, names
    # Our spans carry both ids; the database and Redis client spans (TRACE_CLIENT_SPANS=true)
    # carry them from the job's run on. Before the job exists, the request's own lookups (the API
    # key, the rate limit) cannot know its id.
    # The run's Postgres work goes in pipelines (past SQLAlchemy's instrumentation): each round trip
    # gets a client span of its own, with its SQL and no parameters.
    by_id = {s.context.span_id: s for s in in_trace}
    in_run = [s for s in in_trace if _descends_from(s, "job.run", by_id)]
    systems = {(s.attributes or {}).get("db.system") for s in in_run if s.kind.name == "CLIENT"}
    assert {"postgresql", "redis"} <= systems, systems
    pipelines = [s for s in in_run if s.name == "postgresql pipeline"]
    assert pipelines
    statements = [str((s.attributes or {}).get("db.statement")) for s in pipelines]
    assert any("UPDATE jobs" in statement for statement in statements)
    assert not any("Trace me." in statement for statement in statements)  # no parameter values
    for span in in_trace:
        client = (span.attributes or {}).get("db.system") is not None
        if client and span not in in_run:
            continue
        assert (span.attributes or {}).get("job.id") == job_id, (span.name, span.attributes)
        assert (span.attributes or {}).get("tenant.id") == tenant.id, (span.name, span.attributes)

    deliveries = receiver.at(path)
    assert {json.loads(r.body)["type"] for r in deliveries} >= {"job.queued", "job.started", "job.succeeded"}
    for delivery in deliveries:
        _version, trace_hex, span_hex, _flags = delivery.headers["traceparent"].split("-")
        assert int(trace_hex, 16) == trace_id
        attempt = [
            s for s in in_trace if s.name == "webhook.attempt" and s.context.span_id == int(span_hex, 16)
        ]
        assert attempt, "the receiver's parent span is the attempt's client span"
        assert "baggage" not in delivery.headers  # nothing internal leaves for the partner


def _descends_from(span: ReadableSpan, name: str, by_id: dict[int, ReadableSpan]) -> bool:
    """Whether a span named `name` is among the span's ancestors within the trace."""
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        ancestor = by_id[parent.span_id]
        if ancestor.name == name:
            return True
        parent = ancestor.parent
    return False


@pytest.mark.usefixtures("env")
def test_sql_and_redis_spans_only_with_trace_client_spans() -> None:
    # A process of its own for each setting: instrumentation, once installed, stays for the process.
    script = (
        "from sqlalchemy import text\n"
        "from observability.tracing import flush, get_tracer\n"
        "from service.db import session_scope\n"
        "from service.redis import get_redis\n"
        "from service.startup import start_process\n"
        "start_process('claimcheck-test')\n"
        "with get_tracer().start_as_current_span('work'):\n"
        "    with session_scope() as session:\n"
        "        session.execute(text('SELECT 1'))\n"
        "    get_redis().ping()\n"
        "flush()\n"
    )
    names = {}
    for setting in ("false", "true"):
        environ = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "TRACE_CLIENT_SPANS": setting}
        printed = subprocess.run(
            [sys.executable, "-c", script],
            env=environ,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        names[setting] = set(re.findall(r'"name": "([^"]+)"', printed))
    assert names["false"] == {"work"}
    assert {"work", "PING"} <= names["true"]
    assert any(name.startswith("SELECT") for name in names["true"]), names["true"]
