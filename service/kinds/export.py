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
from sqlmodel import Session

from service.db import session_scope
from service.jobs.kinds import ArtifactOutput, JobContext, Kind, register
from service.jobs.service import count_jobs, job_history
from service.webhooks.service import count_deliveries, delivery_history

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


def _count(session: Session, tenant_id: str, since: datetime | None) -> int:
    return count_jobs(session, tenant_id, since) + count_deliveries(session, tenant_id, since)


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
    yield from job_history(session, tenant_id, since)
    yield from delivery_history(session, tenant_id, since)


EXPORT = register(
    Kind(
        name="export",
        input_model=ExportInput,
        handler=export_history,
        content_type="application/x-ndjson",
        timeout_seconds=3600,
    )
)
