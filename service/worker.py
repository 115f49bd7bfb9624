"""The worker process: an RQ worker on the given queues, with the kinds loaded before it forks."""

from __future__ import annotations

from rq import Worker

from service.kinds.registry import load_builtin_kinds
from service.redis import JOBS_QUEUE, get_queue, get_redis


def run_worker(queues: list[str] | None = None, *, burst: bool = False, name: str | None = None) -> bool:
    """Work until stopped (SIGTERM finishes the current job first), or until empty with burst."""
    load_builtin_kinds()
    worker = Worker(
        [get_queue(queue) for queue in (queues or [JOBS_QUEUE])],
        connection=get_redis(),
        name=name,
    )
    return bool(worker.work(burst=burst, with_scheduler=False, logging_level="INFO"))
