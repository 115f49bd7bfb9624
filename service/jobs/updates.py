"""Live job changes over Redis pub/sub: workers announce after commit, the API fans them out.

This module also serves the API's waits: a long poll (`wait_for_change`) and a subscription
(`follow`). Pub/sub is only a doorbell: a message says "job X changed". Each API process holds one Redis
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
from typing import TypeVar

import anyio.to_thread
import redis.asyncio
from redis.client import Pipeline
from redis.exceptions import RedisError

from service.db import session_scope, tenant_session_scope
from service.errors import NotFoundError, ValidationError
from service.ids import has_prefix
from service.jobs.models import TERMINAL_STATUSES, Job
from service.jobs.repository import JobRepository, get_by_id
from service.outages import log_failure
from service.redis import get_redis, new_async_redis
from service.settings import get_settings

log = logging.getLogger(__name__)

T = TypeVar("T")

PREFIX = "claimcheck:job-updates:"
NEW_JOBS_PREFIX = "claimcheck:new-jobs:"
RECHECK_SECONDS = 15.0
"""A subscription re-reads its job this often without a message: a lost message costs at most this."""


def channel(job_id: str) -> str:
    return PREFIX + job_id


def announce(job_id: str) -> None:
    """Ring the doorbell for job_id (after its change committed); a Redis outage only delays watchers."""
    try:
        get_redis().publish(channel(job_id), "changed")
    except RedisError as error:
        log.warning("could not announce a change of job %s: %s", job_id, error)


def new_jobs_channel(tenant_id: str) -> str:
    return NEW_JOBS_PREFIX + tenant_id


def announce_new(pipeline: Pipeline, tenant_id: str, job_id: str) -> None:
    """Tell the tenant's watchers (the portal's jobs list) of a job it just created (after commit),
    when the caller executes the pipeline."""
    pipeline.publish(new_jobs_channel(tenant_id), job_id)


def _load(job_id: str) -> Job | None:
    with session_scope() as session:
        return get_by_id(session, job_id)


class JobFeed:
    """This process's watchers of job changes and of tenants' new jobs, served by one Redis subscription."""

    def __init__(self, load: Callable[[str], Job | None] = _load) -> None:
        self._load = load
        self._watchers: dict[str, set[asyncio.Queue[Job | None]]] = defaultdict(set)
        self._new_watchers: dict[str, set[asyncio.Queue[str]]] = defaultdict(set)
        self._pubsub: redis.asyncio.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._refreshing: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscribing = asyncio.Lock()
        """One subscription at a time: watchers arriving together on a fresh feed would otherwise each
        open the pubsub's connection, and every subscription but the last would go down a dropped one."""

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Queue[Job | None]]:
        """A queue receiving the job's row (None once deleted) after each change, while the block runs."""
        async with self._registered(self._watchers, job_id, channel(job_id)) as queue:
            yield queue

    @contextlib.asynccontextmanager
    async def watch_new(self, tenant_id: str) -> AsyncIterator[asyncio.Queue[str]]:
        """A queue receiving the id of each job the tenant creates while the block runs (at most
        once: a message lost while Redis is away is not made up for)."""
        async with self._registered(self._new_watchers, tenant_id, new_jobs_channel(tenant_id)) as queue:
            yield queue

    @contextlib.asynccontextmanager
    async def _registered(
        self, watchers: dict[str, set[asyncio.Queue[T]]], key: str, name: str
    ) -> AsyncIterator[asyncio.Queue[T]]:
        """A new queue among `watchers[key]` while the block runs; the channel `name` is subscribed
        while the key has any queue."""
        queue: asyncio.Queue[T] = asyncio.Queue()
        first = not watchers[key]
        watchers[key].add(queue)
        try:
            if first:
                await self._subscribe(name)
            yield queue
        finally:
            watchers[key].discard(queue)
            if not watchers[key]:
                del watchers[key]
                await self._unsubscribe(name)

    def _channels(self) -> list[str]:
        return [channel(job_id) for job_id in self._watchers] + [
            new_jobs_channel(tenant_id) for tenant_id in self._new_watchers
        ]

    async def _unsubscribe(self, name: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            if self._pubsub is not None:
                await self._pubsub.unsubscribe(name)

    async def _subscribe(self, name: str) -> None:
        try:
            async with self._subscribing:
                if self._pubsub is None:
                    client = new_async_redis()
                    self._pubsub = client.pubsub(ignore_subscribe_messages=True)
                await self._pubsub.subscribe(name)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read())
        except (RedisError, OSError) as error:
            log.warning("job feed cannot subscribe (%s); watchers fall back to re-reading", error)

    async def _read(self) -> None:
        """Turn messages into refreshes; after a lost connection, resubscribe and refresh everything."""
        while self._watchers or self._new_watchers:
            try:
                assert self._pubsub is not None
                async for message in self._pubsub.listen():
                    name = _text(message["channel"])
                    if name.startswith(NEW_JOBS_PREFIX):
                        for queue in list(self._new_watchers.get(name.removeprefix(NEW_JOBS_PREFIX), ())):
                            queue.put_nowait(_text(message["data"]))
                    else:
                        self._refresh(name.removeprefix(PREFIX))
            except (RedisError, OSError) as error:
                log.warning("job feed lost Redis (%s); reconnecting", error)
                await asyncio.sleep(1)
                with contextlib.suppress(RedisError, OSError):
                    if self._pubsub is not None and self._channels():
                        await self._pubsub.subscribe(*self._channels())
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_feeds: dict[asyncio.AbstractEventLoop, JobFeed] = {}


def job_feed() -> JobFeed:
    """The feed of the running event loop (one per API process)."""
    loop = asyncio.get_running_loop()
    if loop not in _feeds:
        _feeds[loop] = JobFeed()
    return _feeds[loop]


# --- the API's waits -------------------------------------------------------------------------------


def load_job(tenant_id: str, job_id: str) -> Job | None:
    """The tenant's job in a short session of its own (waits must not hold a connection)."""
    if not has_prefix(job_id, "job"):
        return None
    with tenant_session_scope(tenant_id) as session:
        return JobRepository(session, tenant_id).get(job_id)


def _snapshot(row: Job) -> tuple[str, float, str | None]:
    return (row.status, row.progress, row.message)


async def find_job(tenant_id: str, job_id: str, wait_seconds: int | None) -> Job | None:
    """The tenant's job; with wait_seconds (at most MAX_WAIT_SECONDS), once it changes from how it is
    now, or as it is when the wait ends."""
    limit = get_settings().max_wait_seconds
    if wait_seconds is not None and not 0 <= wait_seconds <= limit:
        raise ValidationError(f"waitSeconds must be 0 to {limit}", field=["waitSeconds"])
    row = await anyio.to_thread.run_sync(load_job, tenant_id, job_id)
    if row is None or not wait_seconds or row.status in TERMINAL_STATUSES:
        return row
    async with job_feed().watch(row.id) as changes:
        current = await anyio.to_thread.run_sync(load_job, tenant_id, job_id)  # it may have changed already
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_seconds):
                while current is not None and _snapshot(current) == _snapshot(row):
                    current = await changes.get()
    return current


async def follow(tenant_id: str, job_id: str) -> AsyncIterator[Job]:
    """The job now, then each change of status, progress or message, until a terminal status.

    NOT_FOUND for a job the tenant does not have. The caller holds the tenant's subscription place
    (service.subscription_caps): a GraphQL subscription holds one per subscriber, while its execution
    (this) is shared by the subscribers asking the same (service.shared_subscriptions).
    """
    async with job_feed().watch(job_id) as changes:
        row = await anyio.to_thread.run_sync(load_job, tenant_id, job_id)
        if row is None:
            raise NotFoundError("no such job", field=["id"])
        yield row
        last = _snapshot(row)
        while row.status not in TERMINAL_STATUSES:
            current: Job | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECHECK_SECONDS):
                    current = await changes.get()
            while not changes.empty():
                current = changes.get_nowait()  # only the newest matters
            if current is None:
                current = await anyio.to_thread.run_sync(load_job, tenant_id, job_id)
            if current is None or current.tenant_id != tenant_id:
                return
            row = current
            if _snapshot(row) != last:
                last = _snapshot(row)
                yield row
