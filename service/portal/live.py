"""Server-sent events that keep the jobs pages live: each shown job's status and progress as it
changes (from the job feed), and, on the first page of the list, each job made after the page was
rendered, as a row to insert once it matches the page's filters. No polling: one stream per page."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from service.db import tenant_session_scope
from service.errors import ClaimcheckError
from service.ids import has_prefix
from service.jobs import updates
from service.jobs.models import TERMINAL_STATUSES, Job, JobStatus
from service.jobs.service import list_jobs
from service.portal.web import TEMPLATES, Viewer, signed_in
from service.subscription_caps import subscription_caps

router = APIRouter()

MAX_LIVE_JOBS = 50
"""Jobs one stream follows at most (those shown, then new ones)."""
STREAM_SECONDS = 300.0
"""A stream ends after this long (`renew`); the page opens another, and so shows its session still holds."""
KEEPALIVE_SECONDS = 15.0
LIVE_STATUSES = ("QUEUED", "RUNNING", "CANCELING")


@dataclass(frozen=True)
class NewRows:
    """Which new jobs a list page wants as rows: made after `since` (an id), of its kind and status."""

    since: str
    status: str
    kind: str

    def wants(self, job: Job) -> bool:
        return (not self.status or job.status == self.status) and (not self.kind or job.kind == self.kind)


def _new_rows(new: str, since: str, status: str, kind: str) -> NewRows | None:
    if new != "1" or not has_prefix(since, "job"):
        return None
    if status and status not in {value.value for value in JobStatus}:
        return None  # a filter nothing matches
    return NewRows(since=since, status=status, kind=kind)


@router.get("/jobs/live", include_in_schema=False)
async def live(
    viewer: Annotated[Viewer, Depends(signed_in)],
    id: Annotated[list[str] | None, Query()] = None,
    new: str = "",
    since: str = "",
    status: str = "",
    kind: str = "",
) -> StreamingResponse:
    """Server-sent events: `job` with {id, status, progress, message, terminal} when a followed job
    changes; with new=1 (the list's first page), `row` with {id, html} for each job made after `since`
    once it matches the filters, and `renew` when the stream ends; otherwise `done` once every followed
    job has ended. Another tenant's id, or an unknown one, is left out."""
    ids = list(dict.fromkeys(job_id for job_id in id or [] if has_prefix(job_id, "job")))[:MAX_LIVE_JOBS]
    stream = LiveStream(viewer.tenant_id, _new_rows(new, since, status, kind))
    return StreamingResponse(
        stream.events(ids),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _event(name: str, body: object) -> str:
    return f"event: {name}\ndata: {json.dumps(body)}\n\n"


def _snapshot(row: Job) -> str:
    body = {"id": row.id, "status": row.status, "progress": row.progress, "message": row.message}
    return _event("job", body | {"terminal": row.status in TERMINAL_STATUSES})


def row_html(row: Job) -> str:
    """The job's row of the jobs list, as the page renders it."""
    return TEMPLATES.get_template("_job_row.html").render(job=row, live_statuses=LIVE_STATUSES)


class LiveStream:
    """One page's stream: a follower task per job, all writing to one queue of events."""

    def __init__(self, tenant_id: str, new_rows: NewRows | None) -> None:
        self.tenant_id = tenant_id
        self.new_rows = new_rows
        self.changes: asyncio.Queue[str | None] = asyncio.Queue()
        self.followed: set[str] = set()
        self.tasks: list[asyncio.Task[None]] = []
        self.running = 0

    def follow(self, job_id: str, *, shown: bool) -> None:
        """Follow the job (at most MAX_LIVE_JOBS); one not shown yet is sent as a row once it matches."""
        if job_id in self.followed or len(self.followed) >= MAX_LIVE_JOBS:
            return
        self.followed.add(job_id)
        self.running += 1
        self.tasks.append(asyncio.create_task(self._follow(job_id, shown)))

    async def _follow(self, job_id: str, shown: bool) -> None:
        try:
            async with subscription_caps().place(self.tenant_id):
                async for row in updates.follow(self.tenant_id, job_id):
                    if not shown:
                        if self.new_rows is None or not self.new_rows.wants(row):
                            continue
                        shown = True
                        self.changes.put_nowait(_event("row", {"id": row.id, "html": row_html(row)}))
                    self.changes.put_nowait(_snapshot(row))
        except ClaimcheckError:
            pass  # not the tenant's job, or too many open streams: that row just stays still
        finally:
            self.changes.put_nowait(None)

    async def _watch_new(self, new_rows: NewRows) -> None:
        """Follow each job the tenant makes from now on, and those made since the page was rendered."""
        async with updates.job_feed().watch_new(self.tenant_id) as made:
            for job_id in await anyio.to_thread.run_sync(self._made_since, new_rows):
                self.follow(job_id, shown=False)
            while True:
                job_id = await made.get()
                if has_prefix(job_id, "job"):
                    self.follow(job_id, shown=False)

    def _made_since(self, new_rows: NewRows) -> list[str]:
        with tenant_session_scope(self.tenant_id) as session:
            rows, _ = list_jobs(
                session,
                self.tenant_id,
                first=MAX_LIVE_JOBS,
                after_id=None,
                statuses=[],
                kind=new_rows.kind or None,
                newer_than_id=new_rows.since,
            )
        return [row.id for row in reversed(rows)]  # oldest first: rows arrive in the order they were made

    async def events(self, ids: list[str]) -> AsyncIterator[str]:
        for job_id in ids:
            self.follow(job_id, shown=True)
        if self.new_rows is not None:
            self.tasks.append(asyncio.create_task(self._watch_new(self.new_rows)))
        try:
            yield "retry: 2000\n\n"
            async with asyncio.timeout(STREAM_SECONDS):
                while self.running or self.new_rows is not None:
                    try:
                        async with asyncio.timeout(KEEPALIVE_SECONDS):
                            change = await self.changes.get()
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if change is None:
                        self.running -= 1
                    else:
                        yield change
                yield _event("done", {})
        except TimeoutError:
            yield _event("renew", {})
        finally:
            await _cancel(self.tasks)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
