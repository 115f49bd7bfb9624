"""The Redis connection and the RQ queues (Redis is transport; Postgres is the source of truth).

Redis is REDIS_URL, or, when REDIS_SENTINELS is set, whichever server the Sentinels name master of
REDIS_SENTINEL_MASTER: a client finds the new master by itself after a failover.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import redis.asyncio
import redis.asyncio.sentinel
from redis import Redis
from redis.client import Pipeline
from redis.connection import parse_url
from redis.sentinel import Sentinel
from rq import Queue

from service.settings import Settings, get_settings

RedisRead = tuple[Callable[[Pipeline], object], Callable[[Any], None]]
"""A read to send along other commands: what queues it on a pipeline, and what takes its answer."""

JOBS_QUEUE = "jobs"
CONNECT_TIMEOUT_SECONDS = 5
SENTINEL_TIMEOUT_SECONDS = 2
"""How long a Sentinel may take to answer which server is master before the next one is asked."""


def _master_options(settings: Settings) -> dict[str, Any]:
    """The database number and credentials REDIS_URL gives the Sentinels' master (its host is ignored)."""
    if not settings.redis_url:
        return {}
    options = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    return {name: options[name] for name in ("db", "username", "password") if name in options}


def _sentinel_options() -> dict[str, Any]:
    return {"socket_timeout": SENTINEL_TIMEOUT_SECONDS, "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS}


@lru_cache(maxsize=1)
def get_redis() -> Redis:
    """The process-wide Redis client (forked children get fresh connections from its pool)."""
    settings = get_settings()
    if settings.redis_sentinels:
        sentinel = Sentinel(settings.sentinel_addresses, sentinel_kwargs=_sentinel_options())
        client: Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            health_check_interval=30,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            **_master_options(settings),
        )
        return client
    url = settings.required_url("redis_url")
    return Redis.from_url(url, health_check_interval=30, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS)


def new_async_redis(socket_timeout: float | None = None) -> redis.asyncio.Redis:
    """A new asyncio client on the same Redis as get_redis (for the caller's event loop); with
    socket_timeout, a command that gets no answer for that long fails."""
    settings = get_settings()
    if settings.redis_sentinels:
        sentinel = redis.asyncio.sentinel.Sentinel(
            settings.sentinel_addresses, sentinel_kwargs=_sentinel_options()
        )
        async_client: redis.asyncio.Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=socket_timeout,
            **_master_options(settings),
        )
        return async_client
    return redis.asyncio.Redis.from_url(
        settings.required_url("redis_url"),
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=socket_timeout,
    )


def get_queue(name: str = JOBS_QUEUE) -> Queue:
    """An RQ queue on the process-wide connection."""
    return Queue(name, connection=get_redis())
