"""Tracing set-up and W3C context helpers, with an in-memory span exporter."""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi import FastAPI
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis import Redis
from sqlalchemy import create_engine, text

from observability import tracing
from observability.tracing import (
    JOB_ID,
    TENANT_ID,
    PerProcessExporter,
    child_only_provider,
    context_from,
    continue_trace,
    current_ids,
    current_trace_ids,
    exporter_names,
    extract,
    flush,
    get_tracer,
    inject,
    instrument_fastapi,
    instrument_redis,
    instrument_sqlalchemy,
    link_from,
    make_tracer_provider,
    set_ids,
    setup_tracing,
)
from service.downloads import router as downloads_router
from service.storage.tokens import DownloadTokens
from tests.observability.asgi import asgi_get

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def span_id(span: ReadableSpan) -> int:
    return int(span.get_span_context().span_id)  # type: ignore[union-attr]


def parent_id(span: ReadableSpan) -> int | None:
    return int(span.parent.span_id) if span.parent is not None else None


def attributes(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def test_inject_then_continue_trace_makes_one_trace_with_ids_on_every_span(
    spans: InMemorySpanExporter,
) -> None:
    tracer = get_tracer()
    with tracer.start_as_current_span("POST /graphql", kind=SpanKind.SERVER) as request_span:
        set_ids(tenant_id="ten_1")
        with tracer.start_as_current_span("enqueue", kind=SpanKind.PRODUCER), set_ids(job_id="job_1"):
            carrier = inject()  # what the job row and the RQ meta keep
    assert TRACEPARENT.match(carrier["traceparent"])
    assert "job.id=job_1" in carrier["baggage"]
    assert "tenant.id=ten_1" in carrier["baggage"]
    assert current_ids() == {}, "nothing leaks out of the request's context"

    # Other processes: only carriers cross.
    def worker() -> None:
        with continue_trace("job.run", carrier) as run:
            assert run.is_recording()
            with get_tracer().start_as_current_span("storage.upload"):
                pass
            event_carrier = inject()  # stored with the webhook event
        with continue_trace("webhook.attempt", event_carrier, kind=SpanKind.CLIENT):
            headers.update(inject(include_baggage=False))

    headers: dict[str, str] = {}
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert set(headers) == {"traceparent"}, "a partner gets the trace, not our baggage"
    with continue_trace("receiver", headers, kind=SpanKind.SERVER):
        pass

    found = by_name(spans)
    assert set(found) == {
        "POST /graphql",
        "enqueue",
        "job.run",
        "storage.upload",
        "webhook.attempt",
        "receiver",
    }
    assert {trace_id(span) for span in found.values()} == {request_span.get_span_context().trace_id}
    assert parent_id(found["job.run"]) == span_id(found["enqueue"])
    assert parent_id(found["storage.upload"]) == span_id(found["job.run"])
    assert parent_id(found["receiver"]) == span_id(found["webhook.attempt"])
    for name in ("job.run", "storage.upload", "webhook.attempt"):
        assert attributes(found[name])[JOB_ID] == "job_1", name
        assert attributes(found[name])[TENANT_ID] == "ten_1", name
    assert attributes(found["POST /graphql"]) == {TENANT_ID: "ten_1"}
    assert attributes(found["enqueue"]) == {TENANT_ID: "ten_1", JOB_ID: "job_1"}


def test_extract_makes_the_carrier_current(spans: InMemorySpanExporter) -> None:
    with get_tracer().start_as_current_span("origin") as origin, set_ids(job_id="job_2"):
        carrier = inject()
    with extract({key.title(): value for key, value in carrier.items()}) as context:  # header case
        assert baggage.get_baggage(JOB_ID, context) == "job_2"
        assert current_ids() == {"job_id": "job_2"}
        ids = current_trace_ids()
        assert ids["trace_id"] == format(origin.get_span_context().trace_id, "032x")
        with get_tracer().start_as_current_span("child"):
            pass
    assert current_ids() == {}
    child = by_name(spans)["child"]
    assert trace_id(child) == origin.get_span_context().trace_id
    assert child.attributes == {JOB_ID: "job_2"}


def test_link_only_starts_a_new_trace_that_links_back(spans: InMemorySpanExporter) -> None:
    with get_tracer().start_as_current_span("origin") as origin, set_ids(job_id="job_3", tenant_id="ten_3"):
        carrier = inject()
    with continue_trace("webhook.retry", carrier, link_only=True, attributes={"attempt": 3}):
        pass
    retry = by_name(spans)["webhook.retry"]
    assert retry.parent is None
    assert trace_id(retry) != origin.get_span_context().trace_id
    origin_ids = (origin.get_span_context().trace_id, origin.get_span_context().span_id)
    assert [(link.context.trace_id, link.context.span_id) for link in retry.links] == [origin_ids]
    assert retry.attributes == {"attempt": 3, JOB_ID: "job_3", TENANT_ID: "ten_3"}


def test_continue_trace_without_a_carrier_starts_a_root_with_the_given_ids(
    spans: InMemorySpanExporter,
) -> None:
    with (
        continue_trace("sweep", None, kind=SpanKind.INTERNAL, job_id="job_4", tenant_id="ten_4"),
        get_tracer().start_as_current_span("inner"),
    ):
        pass
    found = by_name(spans)
    assert found["sweep"].parent is None
    assert found["inner"].attributes == {JOB_ID: "job_4", TENANT_ID: "ten_4"}
    assert link_from(None) == []
    assert link_from({"traceparent": "garbage"}) == []
    assert inject(context=context_from({})) == {}


def test_set_ids_bare_call_lasts_until_reset(spans: InMemorySpanExporter) -> None:
    scope = set_ids(job_id="job_5")
    try:
        assert current_ids() == {"job_id": "job_5"}
        assert "job.id=job_5" in inject()["baggage"]
    finally:
        scope.reset()
        scope.reset()  # once only
    assert current_ids() == {}


def test_library_spans_only_under_an_existing_span(spans: InMemorySpanExporter) -> None:
    provider = child_only_provider()
    assert provider is not None
    library = provider.get_tracer("some.library")
    with library.start_as_current_span("orphan") as orphan:
        assert not orphan.is_recording()
    assert not library.start_span("orphan too").is_recording()
    with get_tracer().start_as_current_span("work"):
        with library.start_as_current_span("child") as child:
            assert child.is_recording()
        library.start_span("child too").end()
    assert set(by_name(spans)) == {"work", "child", "child too"}


def test_sqlalchemy_statements_become_child_spans_with_the_job_id(spans: InMemorySpanExporter) -> None:
    engine = create_engine("sqlite://")
    try:
        assert instrument_sqlalchemy(engine)
        assert instrument_sqlalchemy(engine)  # twice is harmless
        with engine.connect() as connection:
            connection.execute(text("select 1"))  # polling outside any work: no span
            with get_tracer().start_as_current_span("job.run"), set_ids(job_id="job_6"):
                connection.execute(text("select 2"))
    finally:
        engine.dispose()
    finished = spans.get_finished_spans()
    assert [span.name for span in finished if span.name != "job.run"] == ["select"]
    statement = next(span for span in finished if span.name == "select")
    assert statement.kind == SpanKind.CLIENT
    assert statement.attributes is not None
    assert statement.attributes[JOB_ID] == "job_6"
    assert trace_id(statement) == trace_id(by_name(spans)["job.run"])


def test_fastapi_server_span_continues_an_incoming_traceparent(spans: InMemorySpanExporter) -> None:
    app = FastAPI()

    @app.get("/work")
    def work() -> dict[str, str]:
        set_ids(tenant_id="ten_7")
        return current_trace_ids()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {}

    assert instrument_fastapi(app)
    with get_tracer().start_as_current_span("client") as client_span:
        headers = inject()
    answer = asgi_get(app, "/work", headers).json()
    asgi_get(app, "/healthz")
    expected = format(client_span.get_span_context().trace_id, "032x")
    assert answer["trace_id"] == expected
    servers = [span for span in spans.get_finished_spans() if span.kind == SpanKind.SERVER]
    assert [span.name for span in servers] == ["GET /work"]
    assert servers[0].attributes is not None
    assert servers[0].attributes[TENANT_ID] == "ten_7"
    assert trace_id(servers[0]) == client_span.get_span_context().trace_id


@pytest.mark.parametrize("suffix", ["", "?attempt=2", "/extra"])
def test_server_spans_keep_no_download_token(
    spans: InMemorySpanExporter, env: dict[str, str], suffix: str
) -> None:
    """Logs redact /downloads/<token>; the server spans (name and every attribute) must too."""
    app = FastAPI()
    app.include_router(downloads_router)
    assert instrument_fastapi(app)
    token = DownloadTokens("another-secret-of-sufficient-length").issue(
        "tenants/ten_1/jobs/job_1/speech.wav", filename="speech.wav", content_type="audio/wav", expires_in=900
    )
    response = asgi_get(app, f"/downloads/{token}{suffix}")
    assert response.status_code in (403, 404)
    servers = [span for span in spans.get_finished_spans() if span.kind == SpanKind.SERVER]
    assert servers
    for span in servers:
        recorded = [span.name, *(str(value) for value in (span.attributes or {}).values())]
        assert not [value for value in recorded if token in value or token[:16] in value], recorded
    paths = [
        value
        for span in servers
        for key, value in (span.attributes or {}).items()
        if "target" in key or "path" in key
    ]
    assert paths
    assert all("/downloads/[REDACTED]" in str(path) for path in paths), paths


def test_exporters_from_the_environment() -> None:
    assert exporter_names({}) == []
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert exporter_names({"OTEL_TRACES_EXPORTER": " OTLP, console "}) == ["otlp", "console"]
    with pytest.raises(ValueError, match="zipkin"):
        exporter_names({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert isinstance(tracing._otlp_exporter({}), HttpExporter)
    assert isinstance(tracing._otlp_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}), GrpcExporter)
    traces_only = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http"}
    assert isinstance(tracing._otlp_exporter(traces_only), HttpExporter)
    with pytest.raises(ValueError, match="protocol"):
        tracing._otlp_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"})


def test_setup_is_idempotent(spans: InMemorySpanExporter) -> None:
    installed = trace.get_tracer_provider()
    # Installed already (by the session fixture): a second call adds exporters to the same provider.
    extra = InMemorySpanExporter()
    assert setup_tracing("again", exporters=[extra], environ={}) is installed
    with get_tracer().start_as_current_span("seen twice"):
        pass
    assert [span.name for span in extra.get_finished_spans()] == ["seen twice"]
    assert setup_tracing("later", environ={"OTEL_SDK_DISABLED": "true"}) is installed  # the first call wins
    assert flush()
    extra.shutdown()


def test_ids_survive_a_context_switch_to_a_new_thread_only_through_the_carrier(
    spans: InMemorySpanExporter,
) -> None:
    with set_ids(job_id="job_8"):
        carrier = inject()
        seen: list[dict[str, str]] = []
        thread = threading.Thread(target=lambda: seen.append(current_ids()))
        thread.start()
        thread.join()
    assert seen == [{}]  # threads start with an empty context...
    with extract(carrier):
        assert current_ids() == {"job_id": "job_8"}  # ...and the carrier brings the ids back
    assert otel_context.get_current() == otel_context.Context()


def test_redis_commands_become_child_spans(spans: InMemorySpanExporter, redis_url: str) -> None:
    assert instrument_redis()
    assert instrument_redis()  # twice is harmless
    client = Redis.from_url(redis_url)
    try:
        client.ping()  # a worker's idle polling: no span
        with get_tracer().start_as_current_span("enqueue"), set_ids(job_id="job_9"):
            client.set("observability-test", "1")
    finally:
        client.close()
    commands = [span for span in spans.get_finished_spans() if span.name != "enqueue"]
    assert [span.name for span in commands] == ["SET"]
    assert attributes(commands[0])[JOB_ID] == "job_9"
    assert commands[0].kind == SpanKind.CLIENT


class _FileExporter(SpanExporter):
    """Appends ``pid name`` per span to a file: what a forked child exports is visible to the parent."""

    def __init__(self, path: Path, made: Path) -> None:
        self.path = path
        with made.open("a") as handle:
            handle.write(f"{os.getpid()}\n")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a") as handle:
            handle.writelines(f"{os.getpid()} {span.name}\n" for span in spans)
        return SpanExportResult.SUCCESS


def test_a_forked_child_exports_through_its_own_exporter_once_flushed(tmp_path: Path) -> None:
    exported, made = tmp_path / "exported", tmp_path / "made"
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(PerProcessExporter(lambda: _FileExporter(exported, made))))
    tracer = provider.get_tracer("fork-test")
    try:
        tracer.start_span("in the parent").end()
        assert provider.force_flush()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
            child = os.fork()
        if child == 0:  # the work horse: run, flush, leave without atexit handlers, as RQ's does
            status = 1
            try:
                tracer.start_span("in the child").end()
                status = 0 if provider.force_flush(5000) else 2
            finally:
                os._exit(status)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        provider.shutdown()
    parent = str(os.getpid())
    assert exported.read_text().splitlines() == [f"{parent} in the parent", f"{child} in the child"]
    assert made.read_text().split() == [parent, str(child)], "one exporter per process"


def test_provider_from_the_environment() -> None:
    assert make_tracer_provider("api", environ={}) is None
    assert make_tracer_provider("api", environ={"OTEL_TRACES_EXPORTER": "none"}) is None
    disabled = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}
    assert make_tracer_provider("api", environ=disabled) is None
    bad_protocol = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}
    with pytest.raises(ValueError, match="protocol"):
        make_tracer_provider("api", environ=bad_protocol)
    named = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "claimcheck-worker"}
    provider = make_tracer_provider("claimcheck", environ=named)
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "claimcheck-worker"
        assert trace.get_tracer_provider() is not provider, "made, not installed"
    finally:
        provider.shutdown()  # nothing was recorded: nothing is sent
    default_name = make_tracer_provider("claimcheck-api", environ={"OTEL_TRACES_EXPORTER": "console"})
    assert default_name is not None
    assert default_name.resource.attributes["service.name"] == "claimcheck-api"
    default_name.shutdown()


def test_set_ids_can_tag_a_span_that_is_no_longer_current(spans: InMemorySpanExporter) -> None:
    tracer = get_tracer()
    with tracer.start_as_current_span("POST /graphql") as server:  # kept in the GraphQL context
        resolver = tracer.start_as_current_span("resolver")
        with resolver, set_ids(job_id="job_10", spans=[server]):
            pass
    found = by_name(spans)
    assert attributes(found["POST /graphql"]) == {JOB_ID: "job_10"}
    assert attributes(found["resolver"]) == {JOB_ID: "job_10"}
