"""The worker process: RQ jobs (a forked child per job) and/or webhook deliveries (an asyncio loop).

`webhooks` is not an RQ queue: deliveries are claimed from Postgres by the deliverer, which runs
beside the RQ worker in a thread of the same process, or alone with `--queues webhooks`.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from rq import Worker

import service.jobs.tasks  # noqa: F401  (imported once here, not in every forked child)
from callbacks.deliverer import DelivererThread, run_until
from service.db import get_engine
from service.kinds.registry import prepare_kinds
from service.redis import JOBS_QUEUE, get_queue, get_redis
from service.storage.factory import get_storage

WEBHOOKS = "webhooks"
DEFAULT_QUEUES = (JOBS_QUEUE, WEBHOOKS)

log = logging.getLogger(__name__)


def run_worker(queues: list[str] | None = None, *, burst: bool = False, name: str | None = None) -> bool:
    """Work until SIGTERM (the current job and in-flight deliveries finish first), or burst until empty."""
    wanted = list(queues or DEFAULT_QUEUES)
    rq_queues = [queue for queue in wanted if queue != WEBHOOKS]
    get_engine()
    get_storage()
    if not rq_queues:
        asyncio.run(_deliver_until_signalled())
        return True
    prepare_kinds()
    deliverer = DelivererThread() if WEBHOOKS in wanted and not burst else None
    if deliverer is not None:
        deliverer.start()
    try:
        worker = Worker([get_queue(queue) for queue in rq_queues], connection=get_redis(), name=name)
        return bool(worker.work(burst=burst, with_scheduler=False, logging_level="INFO"))
    finally:
        if deliverer is not None:
            deliverer.stop()


async def _deliver_until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("webhook deliverer started")
    await run_until(stop)
