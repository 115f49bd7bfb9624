"""The export kind: the tenant's own job history and webhook delivery log, as JSON Lines or CSV.

Rows are read through a server-side cursor and written as they come, so neither the worker's memory
nor the upload grows with the history's size. Progress is the share of the rows counted at the start.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, field_validator
from sqlalchemy import func, select
from sqlmodel import Session, col

from callbacks.models import WebhookDelivery, WebhookEvent
from service.db import session_scope
from service.jobs.models import Job
from service.kinds.base import ArtifactOutput, JobContext, Kind
from service.kinds.registry import register

BATCH_ROWS = 500
CHUNK_BYTES = 64 * 1024
COLUMNS = (
    "record",
    "id",
    "created_at",
    "kind",
    "status",
    "attempt",
    "started_at",
    "finished_at",
    "error_code",
    "artifact_filename",
    "artifact_byte_size",
    "event_id",
    "event_type",
    "endpoint_id",
    "attempts",
)


class ExportFormat(enum.StrEnum):
    JSONL = "JSONL"
    CSV = "CSV"


class ExportInput(BaseModel):
    """What ``startExport`` takes."""

    format: ExportFormat = ExportFormat.JSONL
    since: datetime | None = None

    @field_validator("since")
    @classmethod
    def _not_in_the_future(cls, since: datetime | None) -> datetime | None:
        if since is None:
            return None
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        if since > datetime.now(UTC):
            raise ValueError("since is in the future")
        return since


def _job_rows(session: Session, tenant_id: str, since: datetime | None) -> Iterator[dict[str, Any]]:
    statement = select(Job).where(col(Job.tenant_id) == tenant_id)
    if since is not None:
        statement = statement.where(col(Job.created_at) >= since)
    for job in session.scalars(statement.order_by(col(Job.id)).execution_options(yield_per=BATCH_ROWS)):
        yield {
            "record": "job",
            "id": job.id,
            "created_at": job.created_at.isoformat(),
            "kind": job.kind,
            "status": job.status,
            "attempt": job.attempt,
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "error_code": job.error_code,
            "artifact_filename": job.artifact_filename,
            "artifact_byte_size": job.artifact_byte_size,
        }


def _delivery_rows(session: Session, tenant_id: str, since: datetime | None) -> Iterator[dict[str, Any]]:
    statement = (
        select(WebhookDelivery, col(WebhookEvent.type))
        .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
        .where(col(WebhookDelivery.tenant_id) == tenant_id)
    )
    if since is not None:
        statement = statement.where(col(WebhookDelivery.created_at) >= since)
    rows = session.execute(
        statement.order_by(col(WebhookDelivery.id)).execution_options(yield_per=BATCH_ROWS)
    )
    for delivery, event_type in rows:
        yield {
            "record": "webhook_delivery",
            "id": delivery.id,
            "created_at": delivery.created_at.isoformat(),
            "status": delivery.status,
            "event_id": delivery.event_id,
            "event_type": event_type,
            "endpoint_id": delivery.endpoint_id,
            "attempts": delivery.attempt_count,
        }


def _count(session: Session, tenant_id: str, since: datetime | None) -> int:
    jobs = select(func.count()).select_from(Job).where(col(Job.tenant_id) == tenant_id)
    deliveries = (
        select(func.count()).select_from(WebhookDelivery).where(col(WebhookDelivery.tenant_id) == tenant_id)
    )
    if since is not None:
        jobs = jobs.where(col(Job.created_at) >= since)
        deliveries = deliveries.where(col(WebhookDelivery.created_at) >= since)
    return int(session.execute(jobs).scalar_one()) + int(session.execute(deliveries).scalar_one())


def _encode(rows: Iterator[dict[str, Any]], export_format: ExportFormat) -> Iterator[str]:
    if export_format is ExportFormat.JSONL:
        for row in rows:
            yield json.dumps({key: value for key, value in row.items() if value is not None}) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def export_history(ctx: JobContext, params: ExportInput) -> ArtifactOutput:
    """Count the rows, then stream them out as the upload reads them."""
    with session_scope() as session:
        total = _count(session, ctx.tenant_id, params.since)
    ctx.progress(0.0, f"exporting {total} rows")

    def chunks() -> Iterator[bytes]:
        done = 0
        pending: list[str] = []
        size = 0
        with session_scope() as session:
            rows = _rows(session, ctx.tenant_id, params.since)
            for text in _encode(rows, params.format):
                pending.append(text)
                size += len(text)
                done += 1
                if size >= CHUNK_BYTES:
                    yield "".join(pending).encode()
                    pending, size = [], 0
                    ctx.progress(min(done / max(total, 1), 0.99), "exporting")
        yield "".join(pending).encode()

    extension, content_type = (
        ("jsonl", "application/x-ndjson") if params.format is ExportFormat.JSONL else ("csv", "text/csv")
    )
    return ArtifactOutput(filename=f"export.{extension}", content_type=content_type, chunks=chunks())


def _rows(session: Session, tenant_id: str, since: datetime | None) -> Iterator[dict[str, Any]]:
    yield from _job_rows(session, tenant_id, since)
    yield from _delivery_rows(session, tenant_id, since)


EXPORT = register(
    Kind(
        name="export",
        input_model=ExportInput,
        handler=export_history,
        content_type="application/x-ndjson",
        timeout_seconds=3600,
    )
)
