"""The job feed: one Redis subscription per API process fans job changes out to every local watcher."""

from __future__ import annotations

import asyncio
import contextlib

from service.jobs.models import Job
from service.jobs.updates import JobFeed, announce, announce_new
from service.redis import get_redis


def _row(job_id: str) -> Job:
    return Job(id=job_id, tenant_id="ten_x", kind="test-slow", input={}, input_hash="x")


async def _close(feed: JobFeed) -> None:
    """Stop the feed's reader and close its connection (an API process just exits instead)."""
    if feed._reader is not None:
        feed._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed._reader
    if feed._pubsub is not None:
        await feed._pubsub.aclose()
        await feed._pubsub.connection_pool.disconnect()


def test_watchers_that_arrive_together_on_a_fresh_feed_all_hear_their_jobs(env: dict[str, str]) -> None:
    """Two watchers subscribing at the same moment used to race to open the pubsub connection: the
    loser's subscription went down a dropped connection and its job went quiet."""
    job_ids = ["job_together_a", "job_together_b", "job_together_c"]

    async def scenario() -> dict[str, str | None]:
        feed = JobFeed(load=_row)
        heard: dict[str, str | None] = {}
        subscribed = asyncio.Event()
        ready = 0

        async def watch(job_id: str) -> None:
            nonlocal ready
            async with feed.watch(job_id) as changes:
                ready += 1
                if ready == len(job_ids):
                    subscribed.set()
                try:
                    async with asyncio.timeout(3):
                        row = await changes.get()
                    heard[job_id] = row.id if row else None
                except TimeoutError:
                    heard[job_id] = None

        watchers = [asyncio.create_task(watch(job_id)) for job_id in job_ids]
        try:
            await subscribed.wait()
            for job_id in job_ids:
                announce(job_id)
            await asyncio.gather(*watchers)
        finally:
            await _close(feed)
        return heard

    assert asyncio.run(scenario()) == {job_id: job_id for job_id in job_ids}


def test_a_tenants_new_jobs_reach_its_watchers_and_no_one_elses(env: dict[str, str]) -> None:
    """The portal's jobs list hears each job its tenant makes, on the same subscription as the changes;
    a job being watched meanwhile still gets its change."""

    async def scenario() -> tuple[list[str], list[str], str | None]:
        feed = JobFeed(load=_row)
        try:
            async with (
                feed.watch_new("ten_new_a") as mine,
                feed.watch_new("ten_new_b") as theirs,
                feed.watch("job_new_watched") as changes,
            ):
                with get_redis().pipeline() as pipeline:
                    announce_new(pipeline, "ten_new_a", "job_new_1")
                    pipeline.execute()
                announce("job_new_watched")
                with get_redis().pipeline() as pipeline:
                    announce_new(pipeline, "ten_new_a", "job_new_2")
                    pipeline.execute()
                async with asyncio.timeout(3):
                    heard = [await mine.get(), await mine.get()]
                    changed = await changes.get()
                await asyncio.sleep(0.2)  # anything for the other tenant would have come by now
                other = [theirs.get_nowait() for _ in range(theirs.qsize())]
            assert not feed._new_watchers  # the last watcher leaving unsubscribes
        finally:
            await _close(feed)
        return heard, other, changed.id if changed else None

    assert asyncio.run(scenario()) == (["job_new_1", "job_new_2"], [], "job_new_watched")
