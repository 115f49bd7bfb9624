"""The worker process: jobs (run by work horses that a supervisor forks and watches) and/or webhook
deliveries (an asyncio loop).

`webhooks` is not an RQ queue: deliveries are claimed from Postgres by the deliverer, which runs
beside the supervisor in a thread of the same process, or alone with `--queues webhooks`.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from sqlalchemy.orm import configure_mappers

import service.jobs.tasks  # noqa: F401  (imported before the horses are forked, not in each)
from observability.metrics import (
    SCRAPE_READ_SECONDS,
    DeliveryBacklog,
    register_deliverer,
    register_queue_depth,
    register_webhook_backlog,
    register_worker_slots,
    start_job_counters,
    start_metrics_server,
)
from service import collector
from service.db import bounded_session_scope, get_engine
from service.jobs.kinds import kind_names, prepare_kinds
from service.jobs.priority import JOBS, expand_queues
from service.jobs.supervisor import Supervisor
from service.redis import get_queue
from service.settings import get_settings
from service.startup import start_process
from service.storage.factory import get_storage
from service.webhooks.deliverer import DelivererThread, run_until
from service.webhooks.delivery import backlog

WEBHOOKS = "webhooks"
DEFAULT_QUEUES = (JOBS, WEBHOOKS)

log = logging.getLogger(__name__)


def run_worker(
    queues: list[str] | None = None, *, burst: bool = False, concurrency: int | None = None
) -> None:
    """Work until SIGTERM (current jobs and in-flight deliveries finish first), or burst until empty."""
    settings = get_settings()
    wanted = list(queues or DEFAULT_QUEUES)
    job_queues = expand_queues([queue for queue in wanted if queue != WEBHOOKS])  # `jobs`: every priority
    start_process("claimcheck-worker")
    if settings.metrics_port is not None:
        start_metrics_server(settings.metrics_port)
    get_engine()
    get_storage()
    if WEBHOOKS in wanted:
        register_webhook_backlog(_read_webhook_backlog)
    if not job_queues:
        register_deliverer(lambda: True)  # this process is the deliverer: it runs while the process does
        collector.resume()
        asyncio.run(_deliver_until_signalled())
        return
    prepare_kinds()
    configure_mappers()  # once here, not in each horse at its first job
    start_job_counters(kind_names())
    register_queue_depth(lambda: {name: get_queue(name).count for name in job_queues})
    deliverer = DelivererThread() if WEBHOOKS in wanted and not burst else None
    if deliverer is not None:
        deliverer.start()
        register_deliverer(deliverer.is_alive)
    supervisor = Supervisor(
        job_queues,
        concurrency=concurrency or settings.worker_concurrency,
        burst=burst,
        max_jobs_per_horse=settings.worker_max_jobs_per_horse or None,
        kill_grace_seconds=settings.job_kill_grace_seconds,
    )
    register_worker_slots(
        lambda: (
            sum(horse.job is not None for horse in list(supervisor.horses.values())),
            supervisor.concurrency,
        )
    )
    collector.resume()  # start-up ends: the horses are forked next (service/collector.py)
    try:
        supervisor.run()
    finally:
        if deliverer is not None and not deliverer.stop():
            log.warning(
                "the webhook deliverer did not stop in time; what it had claimed and not recorded "
                "is sent again once the leases lapse"
            )


def _read_webhook_backlog() -> DeliveryBacklog:
    """What the delivery backlog gauges report, read at scrape time."""
    with bounded_session_scope(SCRAPE_READ_SECONDS) as session:
        return backlog(session)


async def _deliver_until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("webhook deliverer started")
    await run_until(stop)
