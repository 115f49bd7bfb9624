"""The scheduler process: periodic sweeps that make Postgres's promises come true."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from sqlmodel import Session

from observability.metrics import (
    SCRAPE_READ_SECONDS,
    OutboxReading,
    note_sweep,
    register_outbox,
    start_metrics_server,
)
from service.db import bounded_session_scope, session_scope
from service.jobs.deadlines import enforce_deadlines
from service.jobs.dispatch import read_outbox, sweep_outbox
from service.jobs.recovery import recover_lost_runs
from service.jobs.retention import delete_old_jobs, expire_artifacts
from service.outages import log_failure
from service.settings import get_settings
from service.startup import start_process
from service.tenants.service import flush_key_last_used, purge_portal_access
from service.webhooks.service import alert_failing, prune_old

log = logging.getLogger(__name__)


RETENTION_EVERY_SECONDS = 60.0
WEBHOOK_PRUNE_BATCHES = 20
"""Webhook retention batches per round, each its own short transaction."""
_last_retention = 0.0


def _sweep(name: str, sweep: Callable[[Session], object]) -> object:
    """Run one sweep in its own transaction; a failing sweep is logged and retried next round.

    Each sweep that completes beats its heartbeat (``claimcheck_scheduler_last_sweep_timestamp_seconds``).
    """
    try:
        with session_scope() as session:
            result = sweep(session)
    except Exception:
        log_failure(log, "the %s sweep failed; retrying next round", name)
        return None
    note_sweep(name.replace(" ", "_").replace("-", "_"))
    return result


def _read_outbox() -> OutboxReading:
    """What the outbox gauges report, read at scrape time."""
    with bounded_session_scope(SCRAPE_READ_SECONDS) as session:
        return read_outbox(session)


def run_once() -> int:
    """One round of every sweep; returns how many jobs the outbox sweep had to re-enqueue."""
    global _last_retention
    _sweep("lost runs", recover_lost_runs)
    _sweep("deadlines", enforce_deadlines)
    _sweep("key last-used", flush_key_last_used)
    if time.monotonic() - _last_retention >= RETENTION_EVERY_SECONDS:  # old rows do not need haste
        _last_retention = time.monotonic()
        _sweep("artifact expiry", expire_artifacts)
        _sweep("retention", delete_old_jobs)
        _sweep("portal sign-ins", purge_portal_access)
        for _ in range(WEBHOOK_PRUNE_BATCHES):
            if _sweep("webhook retention", prune_old) != get_settings().webhook_retention_batch:
                break
    _sweep("failing endpoints", alert_failing)
    grace = get_settings().outbox_grace_seconds
    enqueued = _sweep("outbox", lambda session: sweep_outbox(session, grace_seconds=grace))
    return enqueued if isinstance(enqueued, int) else 0


def run_scheduler(stop: threading.Event | None = None) -> None:
    """Sweep every SCHEDULER_INTERVAL_SECONDS until SIGTERM/SIGINT (or stop is set)."""
    start_process("claimcheck-scheduler")
    stop = stop or threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("scheduler stopping (signal %d)", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    settings = get_settings()
    if settings.metrics_port is not None:
        register_outbox(_read_outbox)
        start_metrics_server(settings.metrics_port)
    interval = settings.scheduler_interval_seconds
    log.info("scheduler started; sweeping every %.1f s", interval)
    while not stop.is_set():
        try:
            run_once()
        except Exception:
            log_failure(log, "scheduler sweep failed; retrying next round")
        stop.wait(interval)
