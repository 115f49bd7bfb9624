"""The Redis connection and the RQ queues (Redis is transport; Postgres is the source of truth)."""

from __future__ import annotations

from functools import lru_cache

from redis import Redis
from rq import Queue

from service.settings import get_settings

JOBS_QUEUE = "jobs"


@lru_cache(maxsize=1)
def get_redis() -> Redis:
    """The process-wide Redis client for REDIS_URL."""
    url = get_settings().required_url("redis_url")
    return Redis.from_url(url, health_check_interval=30, socket_connect_timeout=5)


def get_queue(name: str = JOBS_QUEUE) -> Queue:
    """An RQ queue on the process-wide connection."""
    return Queue(name, connection=get_redis())
