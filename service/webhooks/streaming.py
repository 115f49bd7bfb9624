"""A tenant's webhook events as a stream (the webhookEvents subscription behind `webhooks listen`).

Each event comes with the id and the exact body its webhooks carry. Events are read from Postgres, the
source of truth, every POLL_SECONDS. Ids sort by the time they were made, but a transaction may commit
an event a little after a later one is visible: each read looks back LATE_COMMIT_SECONDS and skips
what it already sent, so a late commit is not skipped. Resuming `after` an event id starts that far
before it too: a resuming client may see again events it had (it drops ids it knows, as webhook
receivers do), and misses none.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio.to_thread

from service.db import tenant_session_scope
from service.errors import ForbiddenError, QuotaExceededError, ValidationError
from service.ids import first_id_at, has_prefix, id_time
from service.models import utcnow
from service.principal import Principal
from service.settings import get_settings
from service.webhooks.events import JOB_EVENT_TYPES
from service.webhooks.listeners import RENEW_SECONDS, mark_listening
from service.webhooks.repository import EventRepository
from service.webhooks.sending import event_body
from service.webhooks.service import JOBS_READ, validate_event_types

POLL_SECONDS = 0.5
LATE_COMMIT_SECONDS = 10.0
BATCH = 500
_open_streams: Counter[str] = Counter()  # per tenant, in this API process


@dataclass(frozen=True)
class StreamedEvent:
    """An event as its webhooks carry it: the webhook-id and the exact JSON body."""

    id: str
    type: str
    timestamp: datetime
    body: str


@dataclass(frozen=True)
class _Page:
    """One read: the new events, and how far the read went (the last id, and how many rows)."""

    events: list[StreamedEvent]
    last_id: str | None
    rows: int


def _read(tenant_id: str, first_id: str, types: Sequence[str], known: frozenset[str]) -> _Page:
    """The tenant's events from first_id on; bodies are built (a job.succeeded signs a fresh URL) only
    for those not known already."""
    settings = get_settings()
    with tenant_session_scope(tenant_id) as session:
        rows = EventRepository(session, tenant_id).since(first_id, types, BATCH)
        events = [
            StreamedEvent(
                id=row.id,
                type=row.type,
                timestamp=row.created_at,
                body=event_body(row.type, row.created_at, row.data, row.artifact_key, settings).decode(),
            )
            for row in rows
            if row.id not in known
        ]
    return _Page(events, rows[-1].id if rows else None, len(rows))


def check_access(principal: Principal, event_types: list[str] | None) -> list[str]:
    """The validated filter ([] is every type); job events need jobs:read (as well as webhooks:manage,
    which the caller checked)."""
    chosen = validate_event_types(event_types)
    wants_job_events = not chosen or any(event_type in JOB_EVENT_TYPES for event_type in chosen)
    if wants_job_events and JOBS_READ not in principal.scopes:
        raise ForbiddenError(
            f"job events need the {JOBS_READ} scope as well: they carry job data; choose eventTypes"
            " without job.* for this key",
            field=["eventTypes"],
        )
    return chosen


async def stream(
    principal: Principal, event_types: list[str] | None, after: str | None
) -> AsyncIterator[StreamedEvent]:
    """The tenant's events from now on (or from shortly before `after`), oldest first, never ending.

    FORBIDDEN for job events without jobs:read, VALIDATION for unknown types or a malformed `after`,
    QUOTA_EXCEEDED past the tenant's open subscriptions."""
    tenant_id = principal.tenant_id
    types = check_access(principal, event_types)
    if after is not None and not has_prefix(after, "evt"):
        raise ValidationError("after must be an event id (evt_...)", field=["after"])
    if _open_streams[tenant_id] >= get_settings().max_subscriptions_per_tenant:
        raise QuotaExceededError("too many open subscriptions for this tenant")
    _open_streams[tenant_id] += 1
    try:
        late = timedelta(seconds=LATE_COMMIT_SECONDS)
        floor = id_time(after) - late if after is not None else utcnow()  # nothing older is sent
        await anyio.to_thread.run_sync(mark_listening, tenant_id)
        renewed = time.monotonic()
        position = floor
        sent: dict[str, datetime] = {}  # ids sent inside the look-back window, by creation time
        if after is not None:
            sent[after] = id_time(after)
        while True:
            first_id = first_id_at("evt", max(floor, min(position, utcnow() - late)))
            while True:  # page to the newest event
                page = await anyio.to_thread.run_sync(_read, tenant_id, first_id, types, frozenset(sent))
                for event in page.events:
                    sent[event.id] = event.timestamp
                    position = max(position, event.timestamp)
                    yield event
                if page.rows < BATCH or page.last_id is None:
                    break
                first_id = page.last_id
            horizon = min(position, utcnow() - late)
            sent = {event_id: at for event_id, at in sent.items() if at >= horizon}
            await asyncio.sleep(POLL_SECONDS)
            if time.monotonic() - renewed > RENEW_SECONDS:
                await anyio.to_thread.run_sync(mark_listening, tenant_id)
                renewed = time.monotonic()
    finally:
        _open_streams[tenant_id] -= 1
