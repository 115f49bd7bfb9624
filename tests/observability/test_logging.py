"""Log lines: JSON with trace and job ids in production, text in development, secrets never written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observability.logging import json_by_default, redact_value, setup_logging
from observability.redaction import REDACTED, redact
from observability.tracing import get_tracer, set_ids

API_KEY = "ck_0a1b2c3d_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXU"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwzZ+1TQ=="
PRIVATE_KEY = "whsk_9eRqg3S7uYw8zY1p7m6n0sT2r4q5w6e7r8t9y0u1i2o="
DB_PASSWORD = "s3cr3t-db-pass"
SECRETS = (API_KEY, WEBHOOK_SECRET, PRIVATE_KEY, DB_PASSWORD, "hunter2", "opaque-token-value")


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    """setup_logging into a buffer; the root logger's handlers and level come back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    uvicorn = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved_uvicorn = [(list(logger.handlers), logger.propagate) for logger in uvicorn]
    buffer = io.StringIO()
    try:
        yield buffer
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for logger, (handlers, propagate) in zip(uvicorn, saved_uvicorn, strict=True):
            logger.handlers[:] = handlers
            logger.propagate = propagate


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_carry_trace_span_job_and_tenant_ids(
    capture: io.StringIO, spans: InMemorySpanExporter
) -> None:
    setup_logging("INFO", json=True, stream=capture)
    log = logging.getLogger("claimcheck.test")
    log.info("before any span")
    with get_tracer().start_as_current_span("job.run") as span, set_ids(job_id="job_1", tenant_id="ten_1"):
        log.info("uploading %s bytes", 1024, extra={"attempt": 2, "key": "artifacts/job_1.wav"})
    log.debug("below the level")

    before, during = lines(capture)
    assert set(before) == {"ts", "level", "logger", "message"}
    context = span.get_span_context()
    assert during["message"] == "uploading 1024 bytes"
    assert during["level"] == "INFO"
    assert during["logger"] == "claimcheck.test"
    assert during["trace_id"] == format(context.trace_id, "032x")
    assert during["span_id"] == format(context.span_id, "016x")
    assert during["job_id"] == "job_1"
    assert during["tenant_id"] == "ten_1"
    assert during["attempt"] == 2
    assert during["key"] == "artifacts/job_1.wav"
    assert during["ts"].endswith("Z")


def test_secrets_never_reach_the_output(capture: io.StringIO) -> None:
    setup_logging("DEBUG", json=True, stream=capture)
    log = logging.getLogger("claimcheck.test")
    log.info("authenticating with %s", API_KEY)
    log.info("headers %s", {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"})
    log.warning("endpoint secret rotated to %s (signing key %s)", WEBHOOK_SECRET, PRIVATE_KEY)
    log.info("connecting to postgresql+psycopg://claimcheck:%s@db:5432/claimcheck", DB_PASSWORD)
    log.info("login password=hunter2 user=bob")
    log.info(
        "endpoint created",
        extra={
            "secret": WEBHOOK_SECRET,
            "request": {"headers": {"Authorization": "Bearer opaque-token-value"}, "password": "hunter2"},
            "keys": [API_KEY],
        },
    )
    try:
        raise RuntimeError(f"receiver rejected key {API_KEY}")
    except RuntimeError:
        log.exception("delivery failed")
    output = capture.getvalue()
    for secret in SECRETS:
        assert secret not in output, secret
    records = lines(capture)
    assert len(records) == 7
    assert records[0]["message"] == f"authenticating with ck_0a1b2c3d_{REDACTED}"  # the prefix stays
    assert records[5]["secret"] == REDACTED
    assert records[5]["request"] == {"headers": {"Authorization": REDACTED}, "password": REDACTED}
    assert "RuntimeError: receiver rejected key ck_0a1b2c3d_" in records[6]["exception"]


def test_text_lines_in_development(
    capture: io.StringIO, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    setup_logging(stream=capture)
    with get_tracer().start_as_current_span("request") as span, set_ids(job_id="job_2"):
        logging.getLogger("claimcheck.dev").warning("key %s refused", API_KEY, extra={"status": 401})
    (line,) = capture.getvalue().splitlines()
    trace_hex = format(span.get_span_context().trace_id, "032x")
    assert " WARNING claimcheck.dev key ck_0a1b2c3d_[REDACTED] refused " in line
    assert f"[trace={trace_hex} job=job_2]" in line
    assert line.endswith("status=401")
    assert API_KEY not in line


def test_setup_replaces_its_own_handler_and_routes_uvicorn_to_root(capture: io.StringIO) -> None:
    uvicorn = logging.getLogger("uvicorn.error")
    uvicorn.addHandler(logging.NullHandler())
    uvicorn.propagate = False
    setup_logging(json=True, stream=io.StringIO())
    handler = setup_logging(json=True, stream=capture)
    assert logging.getLogger().handlers == [handler]
    assert uvicorn.handlers == []
    assert uvicorn.propagate
    uvicorn.info("Started server process")
    assert lines(capture)[0]["logger"] == "uvicorn.error"


def test_a_bad_format_string_still_logs(capture: io.StringIO) -> None:
    setup_logging(json=True, stream=capture)
    logging.getLogger("claimcheck.test").info("%d items for %s", "not a number", API_KEY)
    (record,) = lines(capture)
    assert "not a number" in record["message"]
    assert API_KEY not in record["message"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, True),
        ({"ENVIRONMENT": "production"}, True),
        ({"ENVIRONMENT": "development"}, False),
        ({"ENVIRONMENT": "test"}, False),
        ({"ENVIRONMENT": "development", "LOG_FORMAT": "json"}, True),
        ({"ENVIRONMENT": "production", "LOG_FORMAT": "text"}, False),
    ],
)
def test_json_by_default(environ: dict[str, str], expected: bool) -> None:
    assert json_by_default(environ) is expected


def test_redaction_rules() -> None:
    assert redact("nothing to see, key_id=key_123 tokens=5") == "nothing to see, key_id=key_123 tokens=5"
    assert redact("Authorization: Basic dXNlcjpwYXNz") == f"Authorization: {REDACTED}"
    assert redact("sent Bearer abc.def-ghi") == f"sent Bearer {REDACTED}"
    assert redact("redis://:pw@redis:6379/0") == f"redis://:{REDACTED}@redis:6379/0"
    assert redact("public key whpk_abcdef==") == "public key whpk_abcdef=="
    signed = "https://storage.example/b/o?X-Goog-Credential=sa&X-Goog-Signature=0badc0ffee"
    assert redact(signed).endswith(f"X-Goog-Signature={REDACTED}")
    assert redact("GET /downloads/eyJqb2IiOiJqb2JfMSJ9.Zx1Ab.c2lnbmF0dXJl") == f"GET /downloads/{REDACTED}"
    assert redact_value({"api_key": None, "SECRET_KEY": "x" * 32, "count": 3}) == {
        "api_key": None,
        "SECRET_KEY": REDACTED,
        "count": 3,
    }
