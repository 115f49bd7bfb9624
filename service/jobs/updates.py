"""Live job changes over Redis pub/sub: workers announce after commit, the API waits and streams.

Pub/sub is only a doorbell: a message says "job X changed", and the reader loads the job from
Postgres. A message lost while nobody listened costs nothing, since readers always start from (and
fall back to) the current row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio
from redis.exceptions import RedisError

from service.redis import get_redis
from service.settings import get_settings

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0


def channel(job_id: str) -> str:
    return f"claimcheck:job-updates:{job_id}"


def announce(job_id: str) -> None:
    """Ring the doorbell for job_id (after its change committed); a Redis outage only delays readers."""
    try:
        get_redis().publish(channel(job_id), "changed")
    except RedisError as error:
        log.warning("could not announce a change of job %s: %s", job_id, error)


@contextlib.asynccontextmanager
async def doorbell(job_id: str) -> AsyncIterator[asyncio.Queue[None]]:
    """A queue that receives an item each time job_id is announced, while the block runs."""
    client = redis.asyncio.Redis.from_url(get_settings().redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    rings: asyncio.Queue[None] = asyncio.Queue()

    async def listen() -> None:
        while True:
            try:
                await pubsub.subscribe(channel(job_id))
                async for _ in pubsub.listen():
                    rings.put_nowait(None)
            except (RedisError, OSError) as error:
                log.warning("job update listener lost Redis (%s); retrying", error)
                rings.put_nowait(None)  # readers re-check the row
                await asyncio.sleep(1)

    task = asyncio.create_task(listen())
    try:
        yield rings
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError, RedisError, OSError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await task
        with contextlib.suppress(TimeoutError, RedisError, OSError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await client.aclose()
