"""OpenTelemetry tracing: set-up from the standard ``OTEL_*`` variables, and W3C context helpers.

One trace follows a job from the tenant's mutation to the partner's receiver. The context crosses
process boundaries as a small ``dict[str, str]`` carrier (``traceparent``, ``tracestate``,
``baggage``): stored with the job row, put in RQ job meta, and sent as webhook headers.

- ``setup_tracing(service_name)`` once per process. ``OTEL_TRACES_EXPORTER`` is ``none`` (the
  default: no SDK is installed, spans cost nothing, carriers still pass through), ``console`` or
  ``otlp`` (comma-separated for several). The OTLP exporter speaks ``http/protobuf`` unless
  ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` says ``grpc``; it reads ``OTEL_EXPORTER_OTLP_ENDPOINT``
  and friends itself, and is made anew in each forked process (RQ's work horses).
  ``OTEL_SERVICE_NAME`` overrides the name given here; ``OTEL_TRACES_SAMPLER``,
  ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_BSP_*`` work as the SDK documents them.
- ``inject()`` gives the carrier for the current context; ``extract(carrier)`` continues it;
  ``continue_trace(name, carrier, ...)`` does both steps of a consumer (worker, deliverer) at once,
  as a child or, for retries and sweeps, as a new trace linked to the original.
- ``set_ids(job_id=..., tenant_id=...)`` puts ``job.id`` / ``tenant.id`` on the current span and in
  baggage; a span processor copies them onto every span started below, and logs pick them up.
- ``flush()`` before a process leaves through ``os._exit`` (an RQ work horse does): batched spans
  would be lost otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.util import types

from observability.forks import GATE
from observability.redaction import redact

log = logging.getLogger(__name__)

TRACER_NAME = "claimcheck"
JOB_ID = "job.id"
TENANT_ID = "tenant.id"
ID_KEYS = (JOB_ID, TENANT_ID)
EXPORTERS = ("otlp", "console", "none")

_lock = threading.Lock()
_provider: TracerProvider | None = None
_instrumented_engines: weakref.WeakSet[Any] = weakref.WeakSet()


class IdsSpanProcessor(SpanProcessor):
    """Copies ``job.id`` and ``tenant.id`` from baggage onto every span as it starts."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for key in ID_KEYS:
            value = baggage.get_baggage(key, parent_context)
            if value is not None:
                span.set_attribute(key, str(value))


def exporter_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` asks for (``none`` and empty mean no tracing)."""
    environ = os.environ if environ is None else environ
    raw = environ.get("OTEL_TRACES_EXPORTER", "none")
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        supported = ", ".join(EXPORTERS)
        raise ValueError(f"OTEL_TRACES_EXPORTER: unsupported exporter(s) {unknown}; use {supported}")
    return [name for name in names if name != "none"]


def _otlp_protocol(environ: Mapping[str, str]) -> str:
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol not in ("grpc", "http/protobuf", "http"):
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol {protocol!r}")
    return protocol


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    if _otlp_protocol(environ) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


class PerProcessExporter(SpanExporter):
    """Makes its exporter anew in each process: a forked child (an RQ work horse) must not share the
    parent's HTTP connections or gRPC channel, which the parent's own threads (the webhook
    deliverer) keep using."""

    def __init__(self, factory: Callable[[], SpanExporter]) -> None:
        self._factory = factory
        self._pid: int | None = None
        self._exporter: SpanExporter | None = None

    def _current(self) -> SpanExporter:
        if self._exporter is None or self._pid != os.getpid():
            self._exporter = self._factory()
            self._pid = os.getpid()
        return self._exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with GATE.shared():  # an export may hold TLS locks: no fork meanwhile (observability/forks.py)
            return self._current().export(spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with GATE.shared():
            return self._current().force_flush(timeout_millis)

    def shutdown(self) -> None:
        if self._exporter is not None and self._pid == os.getpid():
            self._exporter.shutdown()


def _disabled(environ: Mapping[str, str]) -> bool:
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def make_tracer_provider(
    service_name: str,
    *,
    exporters: Sequence[SpanExporter] = (),
    environ: Mapping[str, str] | None = None,
) -> TracerProvider | None:
    """A tracer provider as the environment says (not installed); None when tracing is off."""
    environ = os.environ if environ is None else environ
    if _disabled(environ) and not exporters:
        return None
    names = exporter_names(environ)
    if not names and not exporters:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or service_name})
    )
    provider.add_span_processor(IdsSpanProcessor())
    for name in names:
        if name == "otlp":
            _otlp_protocol(environ)  # a bad protocol fails here, at start-up
            otlp = PerProcessExporter(lambda: _otlp_exporter(environ))
            provider.add_span_processor(BatchSpanProcessor(otlp))
        elif name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    for exporter in exporters:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def setup_tracing(
    service_name: str,
    *,
    exporters: Sequence[SpanExporter] = (),
    environ: Mapping[str, str] | None = None,
) -> TracerProvider | None:
    """Install the process's tracer provider as the environment says; None when tracing is off.

    ``exporters`` are added beside the configured ones, each behind a synchronous processor (tests
    pass an ``InMemorySpanExporter``). Calling again adds those exporters to the installed provider.
    """
    global _provider
    with _lock:
        if _provider is not None:
            for exporter in exporters:
                _provider.add_span_processor(SimpleSpanProcessor(exporter))
            return _provider
        provider = make_tracer_provider(service_name, exporters=exporters, environ=environ)
        if provider is None:
            return None
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            log.warning("another tracer provider was installed first; claimcheck's tracing setup is unused")
            return None
        _provider = provider
        log.info("tracing on as %s", provider.resource.attributes["service.name"])
        return provider


def get_tracer(name: str = TRACER_NAME) -> trace.Tracer:
    """A tracer (a no-op one while tracing is off)."""
    return trace.get_tracer(name)


def flush(timeout_millis: int = 5000) -> bool:
    """Export what is buffered now: call before ``os._exit`` (an RQ work horse's end) or a hard stop."""
    if _provider is None:
        return True
    return _provider.force_flush(timeout_millis)


# --- carrying the context ----------------------------------------------------------------------


def inject(*, include_baggage: bool = True, context: Context | None = None) -> dict[str, str]:
    """The W3C carrier for the current (or given) context: ``traceparent``, ``tracestate``, ``baggage``.

    Store it with the job row and in RQ job meta. For headers leaving to a partner, pass
    ``include_baggage=False``: the receiver needs ``traceparent`` only.
    """
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    if not include_baggage:
        carrier.pop("baggage", None)
    return carrier


def context_from(carrier: Mapping[str, str] | None) -> Context:
    """The context a carrier describes (header names in any case); empty when there is none."""
    normalized = {str(key).lower(): str(value) for key, value in (carrier or {}).items()}
    return propagate.extract(normalized, context=Context())


@contextlib.contextmanager
def extract(carrier: Mapping[str, str] | None) -> Iterator[Context]:
    """Make the carrier's context (trace and baggage) current for the block."""
    context = context_from(carrier)
    token = otel_context.attach(context)
    try:
        yield context
    finally:
        otel_context.detach(token)


def link_from(carrier: Mapping[str, str] | None, attributes: types.Attributes = None) -> list[Link]:
    """A link to the span a carrier names (empty when it names none), for a span that is not its child."""
    span_context = trace.get_current_span(context_from(carrier)).get_span_context()
    return [Link(span_context, attributes)] if span_context.is_valid else []


@contextlib.contextmanager
def continue_trace(
    name: str,
    carrier: Mapping[str, str] | None,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    link_only: bool = False,
    job_id: str | None = None,
    tenant_id: str | None = None,
    attributes: types.Attributes = None,
) -> Iterator[Span]:
    """A current span continuing the carrier's trace, with ``job.id`` / ``tenant.id`` set.

    The span is the carrier's child by default (the worker's run of a job enqueued by a request).
    With ``link_only`` it starts a new trace that links to the carrier's span: retries and
    periodic sweeps, which should point at the original trace rather than grow it for days. The
    carrier's baggage (job and tenant ids) is kept either way.
    """
    parent = context_from(carrier)
    links: list[Link] = []
    if link_only:
        links = link_from(carrier)
        parent = trace.set_span_in_context(trace.INVALID_SPAN, parent)
    parent = _with_ids(parent, job_id, tenant_id)
    token = otel_context.attach(parent)
    try:
        with get_tracer().start_as_current_span(name, kind=kind, attributes=attributes, links=links) as span:
            yield span
    finally:
        otel_context.detach(token)


# --- job and tenant ids ------------------------------------------------------------------------


def _with_ids(context: Context, job_id: str | None, tenant_id: str | None) -> Context:
    for key, value in ((JOB_ID, job_id), (TENANT_ID, tenant_id)):
        if value:
            context = baggage.set_baggage(key, value, context)
    return context


class IdsScope(contextlib.AbstractContextManager["IdsScope"]):
    """What ``set_ids`` returns: the ids are set already; leaving a ``with`` block restores the context."""

    def __init__(self, token: object) -> None:
        self._token = token

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.reset()

    def reset(self) -> None:
        """Restore the context from before ``set_ids`` (once)."""
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None


def set_ids(
    job_id: str | None = None, tenant_id: str | None = None, *, spans: Sequence[Span] = ()
) -> IdsScope:
    """Tag the current span and everything below it with ``job.id`` / ``tenant.id``.

    Sets the attributes on the current span (and on ``spans``: e.g. the request's server span, kept
    in the GraphQL context, which is no longer current inside a resolver) and the baggage in the
    current context, so child spans, carriers from ``inject()`` and log lines carry them. A bare
    call lasts for the rest of the current context (the request's task, the job's process);
    ``with set_ids(...):`` scopes it.
    """
    for span in (trace.get_current_span(), *spans):
        for key, value in ((JOB_ID, job_id), (TENANT_ID, tenant_id)):
            if value:
                span.set_attribute(key, value)
    token = otel_context.attach(_with_ids(otel_context.get_current(), job_id, tenant_id))
    return IdsScope(token)


def current_ids() -> dict[str, str]:
    """``{"job_id": ..., "tenant_id": ...}`` from the current baggage, for those that are known."""
    ids: dict[str, str] = {}
    for key, field in ((JOB_ID, "job_id"), (TENANT_ID, "tenant_id")):
        value = baggage.get_baggage(key)
        if value is not None:
            ids[field] = str(value)
    return ids


def current_trace_ids() -> dict[str, str]:
    """``{"trace_id": <32 hex>, "span_id": <16 hex>}`` of the current span, or {} without one."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {
        "trace_id": format(span_context.trace_id, "032x"),
        "span_id": format(span_context.span_id, "016x"),
    }


# --- library instrumentation -------------------------------------------------------------------


class _ChildOnlyTracer(trace.Tracer):
    """Starts spans only below an existing span: a library call outside any traced work (RQ's polling,
    the deliverer's claim query, a sweep's idle check) makes no orphan one-span trace."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(self, name: str, context: Context | None = None, *args: Any, **kwargs: Any) -> Span:
        if not trace.get_current_span(context).get_span_context().is_valid:
            return trace.INVALID_SPAN
        return self._tracer.start_span(name, context, *args, **kwargs)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: Context | None = None, *args: Any, **kwargs: Any
    ) -> Iterator[Span]:
        if not trace.get_current_span(context).get_span_context().is_valid:
            yield trace.INVALID_SPAN
            return
        with self._tracer.start_as_current_span(name, context, *args, **kwargs) as span:
            yield span


class _ChildOnlyTracerProvider(trace.TracerProvider):
    def __init__(self, provider: trace.TracerProvider) -> None:
        self._provider = provider

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _ChildOnlyTracer(self._provider.get_tracer(*args, **kwargs))


def child_only_provider() -> trace.TracerProvider | None:
    """The installed provider, wrapped so that it makes spans only under an existing span."""
    return _ChildOnlyTracerProvider(_provider) if _provider is not None else None


def instrument_fastapi(app: Any, excluded_urls: str = "/healthz") -> bool:
    """HTTP server spans (and the trace context of incoming ``traceparent``) for a FastAPI app.

    A no-op returning False while tracing is off. Call on the app before it serves. The spans are
    redacted as logs are: a download token in the path (``url.path``, ``http.target``, ``http.url``...)
    never reaches the exporter. Spans only: the instrumentation's own HTTP metrics (duration and size
    histograms per request) would duplicate observability.asgi's, which exist with tracing off too.
    """
    if _provider is None:
        return False
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_provider,
        meter_provider=NoOpMeterProvider(),
        excluded_urls=excluded_urls,
        exclude_spans=["receive", "send"],
        server_request_hook=_redact_server_span,
    )
    return True


def _redact_server_span(span: Span, _scope: Mapping[str, Any]) -> None:
    """Redact the request's span as it starts: its name and string attributes are final by then (the
    response adds only its status)."""
    if not isinstance(span, ReadableSpan):
        return
    if (name := redact(span.name)) != span.name:
        span.update_name(name)
    for key, value in (span.attributes or {}).items():
        if isinstance(value, str) and (redacted := redact(value)) != value:
            span.set_attribute(key, redacted)


_SQLALCHEMY_SCOPE = "opentelemetry.instrumentation.sqlalchemy"


@functools.cache
def _connections_usage() -> Any:
    from opentelemetry import metrics

    return metrics.get_meter(_SQLALCHEMY_SCOPE).create_up_down_counter(
        "db.client.connections.usage", unit="connections", description="Pooled connections by state"
    )


def instrument_sqlalchemy(engine: Any) -> bool:
    """Client spans for this engine's statements, only under an existing span; False while tracing is off.

    Per engine (tests and forked processes make new ones); instrumenting an engine twice is a no-op.
    """
    provider = child_only_provider()
    if provider is None:
        return False
    if engine in _instrumented_engines:
        return True
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    EngineTracer(provider.get_tracer(_SQLALCHEMY_SCOPE), engine, _connections_usage())  # type: ignore[no-untyped-call]
    _instrumented_engines.add(engine)
    return True


_PIPELINE_SCOPE = "claimcheck.db.pipeline"
MAX_PIPELINE_STATEMENT_CHARS = 4000


def pipeline_span(engine: Any, statements: Iterable[str]) -> contextlib.AbstractContextManager[object]:
    """A client span for one round trip of pipelined statements (psycopg's pipeline mode, which goes
    past SQLAlchemy's events and so past its instrumentation) on an engine whose statements get client
    spans (instrument_sqlalchemy); only under an existing span, and nothing otherwise. The SQL is
    recorded without its parameters."""
    provider = child_only_provider() if engine in _instrumented_engines else None
    if provider is None:
        return contextlib.nullcontext()
    sql = list(statements)
    attributes: types.Attributes = {
        "db.system": "postgresql",
        "db.operation.batch.size": len(sql),
        "db.statement": "; ".join(sql)[:MAX_PIPELINE_STATEMENT_CHARS],
    }
    tracer = provider.get_tracer(_PIPELINE_SCOPE)
    return tracer.start_as_current_span("postgresql pipeline", kind=SpanKind.CLIENT, attributes=attributes)


def instrument_redis() -> bool:
    """Client spans for redis-py commands (every client), only under an existing span."""
    provider = child_only_provider()
    if provider is None:
        return False
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
    return True
