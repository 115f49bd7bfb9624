"""The scheduler process: periodic sweeps that make Postgres's promises come true."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from service.db import session_scope
from service.jobs.dispatch import sweep_outbox
from service.jobs.recovery import recover_lost_runs
from service.settings import get_settings

log = logging.getLogger(__name__)


def run_once() -> int:
    """One round of every sweep; returns how many jobs it had to re-enqueue."""
    with session_scope() as session:
        recover_lost_runs(session)
    with session_scope() as session:
        return sweep_outbox(session, grace_seconds=get_settings().outbox_grace_seconds)


def run_scheduler(stop: threading.Event | None = None) -> None:
    """Sweep every SCHEDULER_INTERVAL_SECONDS until SIGTERM/SIGINT (or stop is set)."""
    stop = stop or threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("scheduler stopping (signal %d)", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    interval = get_settings().scheduler_interval_seconds
    log.info("scheduler started; sweeping every %.1f s", interval)
    while not stop.is_set():
        try:
            run_once()
        except Exception:
            log.exception("scheduler sweep failed; retrying next round")
        stop.wait(interval)
