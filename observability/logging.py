"""Logs: JSON lines in production, readable text in development; trace and job ids on every line;
secrets never written.

``setup_logging()`` installs one handler on the root logger (library loggers such as uvicorn's and
RQ's propagate to it). Each line carries ``trace_id`` and ``span_id`` of the current span and
``job_id`` / ``tenant_id`` from the current baggage (``observability.tracing.set_ids``) when known.
Extra fields passed with ``extra={...}`` become JSON keys.

Redaction happens in a handler filter, so it covers every logger: API keys (``ck_<prefix>_...``
keep their prefix), webhook secrets and private keys (``whsec_``, ``whsk_``), bearer and basic
credentials, passwords in URLs, ``password=...``-style pairs in text, signed-URL signatures and
download tokens, and the value of any extra field whose name says it is a secret.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from observability.redaction import REDACTED, redact
from observability.tracing import current_ids, current_trace_ids

SECRET_FIELD = re.compile(
    r"(?i)(authorization|password|passwd|secret|api[_-]?key|access[_-]?token|private[_-]?key|cookie)"
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_CONTEXT = ("trace_id", "span_id", "job_id", "tenant_id")


def redact_value(value: Any, name: str = "") -> Any:
    """A JSON-ready copy of value: secret-named fields blanked, strings redacted, containers walked."""
    if name and SECRET_FIELD.search(name):
        return REDACTED if value is not None else None
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(key): redact_value(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the call passed with ``extra=`` (context ids excluded)."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and key not in _CONTEXT and not key.startswith("_")
    }


class ContextFilter(logging.Filter):
    """Puts ``trace_id``, ``span_id``, ``job_id`` and ``tenant_id`` on the record when known.

    Runs at the logging call, in the caller's context (a handler filter), so it sees the caller's span
    and baggage. Values passed explicitly with ``extra=`` win.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in {**current_trace_ids(), **current_ids()}.items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class RedactingFilter(logging.Filter):
    """Redacts the message, its arguments and the extra fields of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is rather than lose the line
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in extra_fields(record).items():
            setattr(record, key, redact_value(value, key))
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the context ids, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(redact_value(entry), ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [trace=… job=… tenant=…] message key=value…`` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{label}={getattr(record, key)}"
            for key, label in (("trace_id", "trace"), ("job_id", "job"), ("tenant_id", "tenant"))
            if getattr(record, key, None)
        )
        extras = " ".join(f"{key}={value}" for key, value in extra_fields(record).items())
        head, _, rest = line.partition("\n")
        if context:
            head = f"{head} [{context}]"
        if extras:
            head = f"{head} {extras}"
        return redact(f"{head}\n{rest}" if rest else head)


def json_by_default(environ: Mapping[str, str] | None = None) -> bool:
    """``LOG_FORMAT`` (json or text) when set, else JSON exactly when ``ENVIRONMENT`` is production
    (its default, as in the settings)."""
    environ = os.environ if environ is None else environ
    explicit = environ.get("LOG_FORMAT", "").strip().lower()
    if explicit in ("json", "text"):
        return explicit == "json"
    return environ.get("ENVIRONMENT", "production").strip().lower() == "production"


class _ClaimcheckHandler(logging.StreamHandler[TextIO]):
    """The handler ``setup_logging`` installs (recognised when it runs again)."""


def setup_logging(
    level: int | str | None = None,
    *,
    json: bool | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr), JSON or text, with context ids and redaction.

    ``level`` defaults to ``LOG_LEVEL`` (INFO); ``json`` to ``json_by_default()``. Replaces the root
    logger's handlers; uvicorn's loggers are made to propagate here (run uvicorn with
    ``log_config=None`` so it leaves them so). Safe to call again: the last call wins.
    """
    use_json = json_by_default() if json is None else json
    handler = _ClaimcheckHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
        if isinstance(existing, _ClaimcheckHandler):
            existing.close()
    root.addHandler(handler)
    root.setLevel(level if level is not None else os.environ.get("LOG_LEVEL", "INFO").upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    return handler
