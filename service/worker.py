"""The worker process: RQ jobs (a forked child per job) and/or webhook deliveries (an asyncio loop).

`webhooks` is not an RQ queue: deliveries are claimed from Postgres by the deliverer, which runs
beside the RQ worker in a thread of the same process, or alone with `--queues webhooks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from types import FrameType

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Worker
from rq.job import Job as RQJob

import service.jobs.tasks  # noqa: F401  (imported once here, not in every forked child)
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
from service.db import bounded_session_scope, get_engine
from service.jobs.dispatch import RUN_JOB
from service.jobs.kinds import kind_names, prepare_kinds
from service.jobs.runner import defer_if_tenant_busy, record_run_metrics
from service.outages import describe, is_outage
from service.redis import JOBS_QUEUE, get_queue, get_redis
from service.settings import get_settings
from service.startup import start_process
from service.storage.factory import get_storage
from service.webhooks.deliverer import DelivererThread, run_until
from service.webhooks.delivery import backlog

WEBHOOKS = "webhooks"
DEFAULT_QUEUES = (JOBS_QUEUE, WEBHOOKS)
REDIS_RETRY_SECONDS = 1.0

log = logging.getLogger(__name__)


def run_worker(queues: list[str] | None = None, *, burst: bool = False, name: str | None = None) -> bool:
    """Work until SIGTERM (the current job and in-flight deliveries finish first), or burst until empty."""
    wanted = list(queues or DEFAULT_QUEUES)
    rq_queues = [queue for queue in wanted if queue != WEBHOOKS]
    start_process("claimcheck-worker")
    metrics_port = get_settings().metrics_port
    if metrics_port is not None:
        start_metrics_server(metrics_port)
    get_engine()
    get_storage()
    if WEBHOOKS in wanted:
        register_webhook_backlog(_read_webhook_backlog)
    if not rq_queues:
        register_deliverer(lambda: True)  # this process is the deliverer: it runs while the process does
        asyncio.run(_deliver_until_signalled())
        return True
    prepare_kinds()
    start_job_counters(kind_names())
    deliverer = DelivererThread() if WEBHOOKS in wanted and not burst else None
    if deliverer is not None:
        deliverer.start()
        register_deliverer(deliverer.is_alive)
    try:
        job_queues = [get_queue(queue) for queue in rq_queues]
        register_queue_depth(lambda: {queue.name: queue.count for queue in job_queues})
        register_worker_slots(lambda: (1 if MeasuredWorker.busy else 0, 1))
        return _work_through_redis_outages(job_queues, burst=burst, name=name)
    finally:
        if deliverer is not None:
            deliverer.stop()


def _work_through_redis_outages(queues: list[Queue], *, burst: bool, name: str | None) -> bool:
    """Run the RQ worker; when it quits because Redis went away (RQ's own choice), start a fresh one
    once Redis answers again. Only a stop request (SIGTERM) or the end of a burst ends the loop."""
    worked = False
    while True:
        worker: MeasuredWorker | None = None
        try:
            worker = MeasuredWorker(queues, connection=get_redis(), name=name)  # talks to Redis already
            worked = bool(worker.work(burst=burst, with_scheduler=False, logging_level="INFO")) or worked
        except (RedisConnectionError, RedisTimeoutError) as error:
            log.warning("the RQ worker lost Redis: %s", describe(error))
        if burst or (worker is not None and worker.stop_requested):
            return worked
        log.warning("the RQ worker quit; starting it again once Redis answers")
        _wait_for_redis()


def _wait_for_redis() -> None:
    """Sleep until Redis answers a PING; SIGTERM meanwhile ends the process (nothing is running)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_now)  # RQ's handlers belong to the worker that quit
    while True:
        time.sleep(REDIS_RETRY_SECONDS)
        try:
            get_redis().ping()
            return
        except (RedisConnectionError, RedisTimeoutError):
            continue


def _exit_now(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


class MeasuredWorker(Worker):
    """An RQ worker that records each finished job's metrics here, in the long-lived parent process
    (what a forked work horse records dies with it), and outlives a Redis outage in the middle of a job."""

    stop_requested = False
    busy = False
    """Whether this process is running a job now (its one job slot, in the metrics)."""

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True  # RQ quits on a lost Redis too: this tells the two apart
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        MeasuredWorker.busy = True
        try:
            if job.func_name == RUN_JOB and _deferred(job.id):
                job.delete()  # back in the Postgres outbox until its delay passes; the sweep re-enqueues it
                return
            super().execute_job(job, queue)
        except (RedisConnectionError, RedisTimeoutError) as error:
            # Redis went away mid-job (a restart may have lost the RQ job too). The work horse reports
            # its outcome to Postgres and the sweeps re-enqueue what RQ lost: keep the worker alive.
            log.warning(
                "lost Redis while handling job %s (%s); waiting for its work horse", job.id, describe(error)
            )
            self._reap_horse()
        finally:
            MeasuredWorker.busy = False
        record_run_metrics(job.id)

    def _reap_horse(self) -> None:
        if self._horse_pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._horse_pid, 0)
            self._horse_pid = 0


def _read_webhook_backlog() -> DeliveryBacklog:
    """What the delivery backlog gauges report, read at scrape time."""
    with bounded_session_scope(SCRAPE_READ_SECONDS) as session:
        return backlog(session)


def _deferred(job_id: str) -> bool:
    """Whether the job's tenant is at max_running (the job was deferred); on any doubt, False: the work
    horse's start() decides."""
    try:
        return defer_if_tenant_busy(job_id)
    except Exception as error:
        log.warning(
            "could not check the tenant of job %s before running it: %s",
            job_id,
            error,
            exc_info=not is_outage(error),
        )
        return False


async def _deliver_until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("webhook deliverer started")
    await run_until(stop)
