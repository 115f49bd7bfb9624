"""The Redis connection and the RQ queues (Redis is transport; Postgres is the source of truth).

Redis is REDIS_URL, or, when REDIS_SENTINELS is set, whichever server the Sentinels name master of
REDIS_SENTINEL_MASTER: a client finds the new master by itself after a failover.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any, TypeVar, cast

import redis.asyncio
import redis.asyncio.client
import redis.asyncio.sentinel
from redis import Redis
from redis.client import Pipeline
from redis.connection import parse_url
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import Sentinel
from rq import Queue

from service.loop_io import on_loop, wait_for
from service.settings import Settings, get_settings

T = TypeVar("T")

RedisRead = tuple[Callable[[Pipeline], object], Callable[[Any], None]]
"""A read to send along other commands: what queues it on a pipeline, and what takes its answer."""

JOBS_QUEUE = "jobs"
CONNECT_TIMEOUT_SECONDS = 5
COMMAND_TIMEOUT_SECONDS = 5
"""How long a command may wait for its answer (redis-py's default for a client, kept explicit)."""
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
    """The process-wide Redis client (forked children get fresh connections from its pool); from
    service.loop_io's greenlet its commands go through the loop (LoopFriendlyRedis)."""
    settings = get_settings()
    if settings.redis_sentinels:
        sentinel = Sentinel(settings.sentinel_addresses, sentinel_kwargs=_sentinel_options())
        client: Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            redis_class=LoopFriendlyRedis,
            health_check_interval=30,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            **_master_options(settings),
        )
        return client
    url = settings.required_url("redis_url")
    return LoopFriendlyRedis.from_url(
        url,
        health_check_interval=30,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=COMMAND_TIMEOUT_SECONDS,
    )


def new_async_redis(
    socket_timeout: float | None = None, redis_class: type[redis.asyncio.Redis] = redis.asyncio.Redis
) -> redis.asyncio.Redis:
    """A new asyncio client (of redis_class) on the same Redis as get_redis, for the caller's event loop;
    with socket_timeout, a command that gets no answer for that long fails."""
    settings = get_settings()
    if settings.redis_sentinels:
        sentinel = redis.asyncio.sentinel.Sentinel(
            settings.sentinel_addresses, sentinel_kwargs=_sentinel_options()
        )
        async_client: redis.asyncio.Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            redis_class=redis_class,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=socket_timeout,
            **_master_options(settings),
        )
        return async_client
    return redis_class.from_url(
        settings.required_url("redis_url"),
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=socket_timeout,
    )


def get_queue(name: str = JOBS_QUEUE) -> Queue:
    """An RQ queue on the process-wide connection."""
    return Queue(name, connection=get_redis())


class LoopFriendlyRedis(Redis):
    """A Redis client whose commands, from service.loop_io's greenlet, go through the running loop's
    asyncio client (the same commands, answers and errors), so that the loop serves others while Redis
    answers; anywhere else it uses its own connections, as any client does."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if on_loop():
            return wait_for(loop_redis().execute_command(*args, **options))  # type: ignore[no-untyped-call]
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return LoopFriendlyPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class LoopFriendlyPipeline(Pipeline):
    """LoopFriendlyRedis's pipeline: from service.loop_io's greenlet, its commands are sent by a pipeline
    of the loop's asyncio client."""

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        if not on_loop():
            return super().execute(raise_on_error)
        if self.watching or self.scripts:
            raise RuntimeError("WATCH and registered scripts are not sent from the event loop")
        commands, transaction = list(self.command_stack), cast(bool, self.transaction)  # set in __init__
        self.reset()
        pipeline = loop_redis().pipeline(transaction=transaction)
        for arguments, options in commands:
            pipeline.pipeline_execute_command(*arguments, **options)  # type: ignore[no-untyped-call]
        return wait_for(pipeline.execute(raise_on_error))


_LOOP_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
    weakref.WeakKeyDictionary()
)


def loop_redis() -> redis.asyncio.Redis:
    """The running event loop's asyncio client on the same Redis as get_redis, with the same time for an
    answer (a BoundedRedis, made on first use)."""
    loop = asyncio.get_running_loop()
    client = _LOOP_CLIENTS.get(loop)
    if client is None:
        client = _LOOP_CLIENTS[loop] = new_async_redis(redis_class=BoundedRedis)
    return client


async def _answered(command: Awaitable[T]) -> T:
    """command's answer; redis-py's TimeoutError when Redis gives none within COMMAND_TIMEOUT_SECONDS."""
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
            return await command
    except TimeoutError as error:  # the client dropped the connection it was cancelled on
        raise RedisTimeoutError(f"Redis gave no answer in {COMMAND_TIMEOUT_SECONDS} s") from error


class BoundedRedis(redis.asyncio.Redis):
    """An asyncio client whose every command and pipeline fails with redis-py's TimeoutError when Redis
    gives no answer within COMMAND_TIMEOUT_SECONDS, as get_redis's commands do: one timer on the loop
    per command (a client's socket_timeout runs each send in an asyncio task of its own)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await _answered(super().execute_command(*args, **options))  # type: ignore[no-untyped-call]

    def pipeline(
        self, transaction: bool = True, shard_hint: str | None = None
    ) -> redis.asyncio.client.Pipeline:
        return _BoundedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class _BoundedPipeline(redis.asyncio.client.Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return await _answered(super().execute(raise_on_error))
