"""What every long-running process does first: tracing, metrics, and spans for its database and
Redis calls."""

from __future__ import annotations

import service.tables  # noqa: F401  (every table registered before the ORM is used)
from observability.metrics import setup_metrics
from observability.tracing import instrument_redis, instrument_sqlalchemy, setup_tracing
from service.db import get_engine
from service.settings import get_settings


def start_process(service_name: str) -> None:
    """Install tracing and metrics for this process as the environment says; when tracing is on and
    TRACE_CLIENT_SPANS asks for them, database and Redis calls made inside traced work get client
    spans too."""
    if setup_tracing(service_name) is not None and get_settings().trace_client_spans:
        instrument_sqlalchemy(get_engine())
        instrument_redis()
    setup_metrics(service_name)
