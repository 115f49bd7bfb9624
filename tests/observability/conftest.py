"""One in-memory span exporter and one Prometheus-read meter provider for the whole session.

OpenTelemetry's global providers can be installed once per process, so these are session-wide;
each test starts with an empty exporter.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observability.metrics import setup_metrics
from observability.tracing import setup_tracing

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def _tracing() -> InMemorySpanExporter:
    provider = setup_tracing("claimcheck-tests", exporters=[_EXPORTER], environ={})
    assert provider is not None, "another tracer provider was installed before the observability tests"
    return _EXPORTER


@pytest.fixture
def spans(_tracing: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """The finished spans of this test (cleared before and after); each test starts with no context."""
    _tracing.clear()
    token = otel_context.attach(otel_context.Context())
    try:
        yield _tracing
    finally:
        otel_context.detach(token)
        _tracing.clear()


@pytest.fixture(scope="session")
def meter_provider() -> None:
    assert setup_metrics("claimcheck-tests", environ={}) is not None
