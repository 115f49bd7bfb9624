"""Live job changes over Redis pub/sub: workers announce after commit, the API fans them out.

Pub/sub is only a doorbell: a message says "job X changed". Each API process holds one Redis
subscription and, per change, reads the job from Postgres once, whatever the number of its local
watchers (subscriptions, long polls). A message lost while Redis was away costs nothing: on
reconnecting the feed re-reads every watched job, and watchers re-read on a timer anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import anyio.to_thread
import redis.asyncio
from redis.exceptions import RedisError

from service.db import session_scope
from service.jobs.models import Job
from service.outages import log_failure
from service.redis import get_redis
from service.settings import get_settings

log = logging.getLogger(__name__)

PREFIX = "claimcheck:job-updates:"


def channel(job_id: str) -> str:
    return PREFIX + job_id


def announce(job_id: str) -> None:
    """Ring the doorbell for job_id (after its change committed); a Redis outage only delays watchers."""
    try:
        get_redis().publish(channel(job_id), "changed")
    except RedisError as error:
        log.warning("could not announce a change of job %s: %s", job_id, error)


def _load(job_id: str) -> Job | None:
    with session_scope() as session:
        return session.get(Job, job_id)


class JobFeed:
    """This process's watchers of job changes, served by one Redis subscription."""

    def __init__(self, load: Callable[[str], Job | None] = _load) -> None:
        self._load = load
        self._watchers: dict[str, set[asyncio.Queue[Job | None]]] = defaultdict(set)
        self._pubsub: redis.asyncio.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._refreshing: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Queue[Job | None]]:
        """A queue receiving the job's row (None once deleted) after each change, while the block runs."""
        queue: asyncio.Queue[Job | None] = asyncio.Queue()
        first = not self._watchers[job_id]
        self._watchers[job_id].add(queue)
        try:
            if first:
                await self._subscribe(job_id)
            yield queue
        finally:
            self._watchers[job_id].discard(queue)
            if not self._watchers[job_id]:
                del self._watchers[job_id]
                with contextlib.suppress(RedisError, OSError):
                    if self._pubsub is not None:
                        await self._pubsub.unsubscribe(channel(job_id))

    async def _subscribe(self, job_id: str) -> None:
        try:
            if self._pubsub is None:
                client = redis.asyncio.Redis.from_url(get_settings().redis_url)
                self._pubsub = client.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(channel(job_id))
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read())
        except (RedisError, OSError) as error:
            log.warning("job feed cannot subscribe (%s); watchers fall back to re-reading", error)

    async def _read(self) -> None:
        """Turn messages into refreshes; after a lost connection, resubscribe and refresh everything."""
        while self._watchers:
            try:
                assert self._pubsub is not None
                async for message in self._pubsub.listen():
                    name = message["channel"]
                    job_id = (name.decode() if isinstance(name, bytes) else str(name)).removeprefix(PREFIX)
                    self._refresh(job_id)
            except (RedisError, OSError) as error:
                log.warning("job feed lost Redis (%s); reconnecting", error)
                await asyncio.sleep(1)
                with contextlib.suppress(RedisError, OSError):
                    if self._pubsub is not None:
                        await self._pubsub.subscribe(*(channel(job_id) for job_id in self._watchers))
                for job_id in list(self._watchers):
                    self._refresh(job_id)

    def _refresh(self, job_id: str) -> None:
        """Read the job once for all its watchers; changes arriving meanwhile cause one more read."""
        if job_id not in self._watchers:
            return
        if job_id in self._refreshing:
            self._refreshing[job_id] = True
            return
        self._refreshing[job_id] = False
        task = asyncio.create_task(self._read_and_send(job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_and_send(self, job_id: str) -> None:
        try:
            while True:
                row = await anyio.to_thread.run_sync(self._load, job_id)
                for queue in list(self._watchers.get(job_id, ())):
                    queue.put_nowait(row)
                if not self._refreshing.get(job_id):
                    return
                self._refreshing[job_id] = False
        except Exception:
            log_failure(log, "job feed could not read job %s", job_id)
        finally:
            self._refreshing.pop(job_id, None)


_feeds: dict[asyncio.AbstractEventLoop, JobFeed] = {}


def job_feed() -> JobFeed:
    """The feed of the running event loop (one per API process)."""
    loop = asyncio.get_running_loop()
    if loop not in _feeds:
        _feeds[loop] = JobFeed()
    return _feeds[loop]
