"""The worker process: an RQ worker on the given queues, warmed up before it forks a child per job."""

from __future__ import annotations

from rq import Worker

import service.jobs.tasks  # noqa: F401  (imported once here, not in every forked child)
from service.db import get_engine
from service.kinds.registry import prepare_kinds
from service.redis import JOBS_QUEUE, get_queue, get_redis
from service.storage.factory import get_storage


def run_worker(queues: list[str] | None = None, *, burst: bool = False, name: str | None = None) -> bool:
    """Work until stopped (SIGTERM finishes the current job first), or until empty with burst."""
    prepare_kinds()
    get_engine()
    get_storage()
    worker = Worker(
        [get_queue(queue) for queue in (queues or [JOBS_QUEUE])],
        connection=get_redis(),
        name=name,
    )
    return bool(worker.work(burst=burst, with_scheduler=False, logging_level="INFO"))
