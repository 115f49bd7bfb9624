"""GraphQL for jobs: the Job type, `job`, `jobs` (Relay) and `generateSpeech`; rules live in service.py."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from typing import Any, cast

import anyio.to_thread
import strawberry
from sqlmodel import Session
from strawberry.scalars import JSON

from service.db import tenant_session_scope
from service.errors import NotFoundError, QuotaExceededError, ValidationError
from service.graphql_base import DeletePayload, GraphQLInfo, UserError, graphql_error, require, run_mutation
from service.ids import has_prefix
from service.jobs import service
from service.jobs.models import TERMINAL_STATUSES
from service.jobs.models import Job as JobRow
from service.jobs.models import JobStatus as JobStatusValue
from service.jobs.repository import JobRepository
from service.jobs.updates import job_feed
from service.kinds.export import ExportFormat as ExportFormatValue
from service.kinds.speech import AudioFormat as AudioFormatValue
from service.models import utcnow
from service.settings import get_settings
from service.storage.factory import get_storage
from service.tenants.limits import check_rate

JobStatus = strawberry.enum(JobStatusValue, name="JobStatus")
AudioFormat = strawberry.enum(AudioFormatValue, name="AudioFormat")
ExportFormat = strawberry.enum(ExportFormatValue, name="ExportFormat")

POLL_ADVICE_SECONDS = 2
RECHECK_SECONDS = 15.0
_open_subscriptions: Counter[str] = Counter()  # per tenant, in this API process

MAX_PAGE = 100
DEFAULT_PAGE = 20


@strawberry.type
class JobError:
    code: str
    message: str
    retryable: bool


@strawberry.type
class JobEvent:
    type: str
    at: datetime
    data: JSON | None


@strawberry.type
class Artifact:
    filename: str
    content_type: str
    byte_size: int
    sha256: str
    key: strawberry.Private[str]

    @strawberry.field(description="A plain HTTP GET URL for the file, valid for expiresIn seconds (clamped).")
    def download_url(self, expires_in: int = 900) -> str:
        settings = get_settings()
        if expires_in < 1:
            raise graphql_error(ValidationError("expiresIn must be at least 1 second", field=["expiresIn"]))
        expires_in = min(expires_in, settings.download_url_max_expiry)
        return get_storage().signed_url(
            self.key, filename=self.filename, content_type=self.content_type, expires_in=expires_in
        )


@strawberry.type
class Job:
    id: strawberry.ID
    kind: str
    status: JobStatus  # type: ignore[valid-type]
    progress: float
    message: str | None
    attempt: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    idempotency_key: str | None
    tenant_id: strawberry.Private[str]
    row: strawberry.Private[JobRow]

    @strawberry.field(description="When the job should finish at its progress rate so far; null until known.")
    def estimated_completion_at(self) -> datetime | None:
        return service.estimated_completion(self.row, utcnow())

    @strawberry.field
    def error(self) -> JobError | None:
        if self.row.error_code is None:
            return None
        return JobError(
            code=self.row.error_code,
            message=self.row.error_message or "",
            retryable=bool(self.row.error_retryable),
        )

    @strawberry.field
    def artifact(self) -> Artifact | None:
        row = self.row
        if row.status != JobStatusValue.SUCCEEDED or row.artifact_key is None:
            return None
        return Artifact(
            filename=row.artifact_filename or "",
            content_type=row.artifact_content_type or "",
            byte_size=row.artifact_byte_size or 0,
            sha256=row.artifact_sha256 or "",
            key=row.artifact_key,
        )

    @strawberry.field(description="The audit trail, oldest first.")
    def events(self, info: GraphQLInfo) -> list[JobEvent]:
        rows = JobRepository(info.context.session, self.tenant_id).events(str(self.id))
        return [JobEvent(type=row.type, at=row.at, data=cast(JSON, row.data)) for row in rows]

    @classmethod
    def from_row(cls, row: JobRow) -> Job:
        return cls(
            id=strawberry.ID(row.id),
            kind=row.kind,
            status=JobStatusValue(row.status),
            progress=row.progress,
            message=row.message,
            attempt=row.attempt,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            idempotency_key=row.idempotency_key,
            tenant_id=row.tenant_id,
            row=row,
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class JobEdge:
    cursor: str
    node: Job


@strawberry.type
class JobConnection:
    edges: list[JobEdge]
    page_info: PageInfo

    @strawberry.field
    def nodes(self) -> list[Job]:
        return [edge.node for edge in self.edges]


@strawberry.type
class JobPayload:
    job: Job | None
    user_errors: list[UserError]


@strawberry.input
class GenerateSpeechInput:
    text: str
    voice: str | None = None
    format: AudioFormat | None = None  # type: ignore[valid-type]
    idempotency_key: str | None = None


@strawberry.input
class StartExportInput:
    format: ExportFormat | None = None  # type: ignore[valid-type]
    since: datetime | None = None
    idempotency_key: str | None = None


def encode_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(f"job:{job_id}".encode()).decode()


def decode_cursor(cursor: str) -> str:
    try:
        decoded = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    job_id = decoded.removeprefix("job:")
    if job_id == decoded or not has_prefix(job_id, "job"):
        raise graphql_error(ValidationError("after is not a cursor from this connection", field=["after"]))
    return job_id


@strawberry.type
class JobQuery:
    @strawberry.field(
        description="A job of the caller's, or null (another tenant's id is as absent as any). With "
        "waitSeconds (at most 30), answers as soon as the job changes, or when the wait ends."
    )
    async def job(self, info: GraphQLInfo, id: strawberry.ID, wait_seconds: int | None = None) -> Job | None:
        principal = require(info, "jobs:read")
        limit = get_settings().max_wait_seconds
        if wait_seconds is not None and not 0 <= wait_seconds <= limit:
            raise graphql_error(ValidationError(f"waitSeconds must be 0 to {limit}", field=["waitSeconds"]))
        if not has_prefix(str(id), "job"):
            return None
        load = functools.partial(load_job, principal.tenant_id, str(id))
        row = await anyio.to_thread.run_sync(load)
        if row is not None and wait_seconds and row.status not in TERMINAL_STATUSES:
            row = await wait_for_change(row, load, wait_seconds)
        response = info.context.response
        if row is not None and row.status not in TERMINAL_STATUSES and response is not None:
            response.headers["Retry-After"] = str(POLL_ADVICE_SECONDS)
        return Job.from_row(row) if row else None

    @strawberry.field(description="The caller's jobs, newest first (Relay cursor pagination).")
    def jobs(
        self,
        info: GraphQLInfo,
        first: int | None = None,
        after: str | None = None,
        status: list[JobStatus] | None = None,  # type: ignore[valid-type]
        kind: str | None = None,
    ) -> JobConnection:
        principal = require(info, "jobs:read")
        size = DEFAULT_PAGE if first is None else first
        if not 0 <= size <= MAX_PAGE:
            raise graphql_error(ValidationError(f"first must be between 0 and {MAX_PAGE}", field=["first"]))
        rows = JobRepository(info.context.session, principal.tenant_id).page(
            first=size, after_id=decode_cursor(after) if after else None, statuses=status or [], kind=kind
        )
        edges = [JobEdge(cursor=encode_cursor(row.id), node=Job.from_row(row)) for row in rows[:size]]
        return JobConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=len(rows) > size,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )


def _start_job(
    info: GraphQLInfo, kind: str, raw_input: dict[str, Any], idempotency_key: str | None
) -> JobPayload:
    principal = require(info, "jobs:write")
    session = info.context.session

    def start() -> JobPayload:
        limits = check_rate(session, principal.tenant_id)  # RATE_LIMITED, with Retry-After
        row = service.create_job(
            session, principal.tenant_id, kind, raw_input, idempotency_key, limits=limits
        )
        return JobPayload(job=Job.from_row(row), user_errors=[])

    return run_mutation(info, start, lambda errors: JobPayload(job=None, user_errors=errors))


def load_job(tenant_id: str, job_id: str) -> JobRow | None:
    """The job in a short session of its own (waits and subscriptions must not hold a connection)."""
    with tenant_session_scope(tenant_id) as session:
        return JobRepository(session, tenant_id).get(job_id)


def _snapshot(row: JobRow) -> tuple[str, float, str | None]:
    return (row.status, row.progress, row.message)


async def wait_for_change(row: JobRow, load: Callable[[], JobRow | None], seconds: float) -> JobRow | None:
    """The job once it differs from row, or as it is when `seconds` have passed."""
    async with job_feed().watch(row.id) as changes:
        current = await anyio.to_thread.run_sync(load)  # a change may have come before the watch began
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while current is not None and _snapshot(current) == _snapshot(row):
                    current = await changes.get()
    return current


@strawberry.type
class JobSubscription:
    @strawberry.subscription(
        description="The job now, then each change of status, progress or message; ends at a terminal status."
    )
    async def job_updates(self, info: GraphQLInfo, id: strawberry.ID) -> AsyncGenerator[Job, None]:
        principal = require(info, "jobs:read")
        settings = get_settings()
        context = info.context
        if context.subscriptions >= settings.max_subscriptions_per_connection:
            raise graphql_error(QuotaExceededError("too many subscriptions on this connection"))
        if _open_subscriptions[principal.tenant_id] >= settings.max_subscriptions_per_tenant:
            raise graphql_error(QuotaExceededError("too many open subscriptions for this tenant"))
        load = functools.partial(load_job, principal.tenant_id, str(id))
        context.subscriptions += 1
        _open_subscriptions[principal.tenant_id] += 1
        try:
            async with job_feed().watch(str(id)) as changes:
                row = await anyio.to_thread.run_sync(load) if has_prefix(str(id), "job") else None
                if row is None:
                    raise graphql_error(NotFoundError("no such job", field=["id"]))
                yield Job.from_row(row)
                last = _snapshot(row)
                while row.status not in TERMINAL_STATUSES:
                    current: JobRow | None = None
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RECHECK_SECONDS):  # a lost message costs at most this
                            current = await changes.get()
                    while not changes.empty():
                        current = changes.get_nowait()  # only the newest matters
                    if current is None:
                        current = await anyio.to_thread.run_sync(load)
                    if current is None or current.tenant_id != principal.tenant_id:
                        return
                    row = current
                    if _snapshot(row) != last:
                        last = _snapshot(row)
                        yield Job.from_row(row)
        finally:
            context.subscriptions -= 1
            _open_subscriptions[principal.tenant_id] -= 1


@strawberry.type
class JobMutation:
    @strawberry.mutation(description="Start turning text into speech; answers at once with the QUEUED job.")
    def generate_speech(self, info: GraphQLInfo, input: GenerateSpeechInput) -> JobPayload:
        raw: dict[str, Any] = {"text": input.text}
        if input.voice is not None:
            raw["voice"] = input.voice
        if input.format is not None:
            raw["format"] = input.format.value
        return _start_job(info, "speech", raw, input.idempotency_key)

    @strawberry.mutation(description="Export the caller's job history and webhook delivery log as a file.")
    def start_export(self, info: GraphQLInfo, input: StartExportInput) -> JobPayload:
        raw: dict[str, Any] = {}
        if input.format is not None:
            raw["format"] = input.format.value
        if input.since is not None:
            raw["since"] = input.since.isoformat()
        return _start_job(info, "export", raw, input.idempotency_key)

    @strawberry.mutation(
        description="QUEUED: canceled at once. RUNNING: CANCELING until the worker stops it, then CANCELED."
    )
    def cancel_job(self, info: GraphQLInfo, id: strawberry.ID) -> JobPayload:
        principal = require(info, "jobs:write")
        session = info.context.session

        def cancel() -> JobPayload:
            row = _owned_job(session, principal.tenant_id, str(id))
            service.cancel(session, row)
            return JobPayload(job=Job.from_row(row), user_errors=[])

        return run_mutation(info, cancel, lambda errors: JobPayload(job=None, user_errors=errors))

    @strawberry.mutation(description="Delete a finished job with its events and its file.")
    def delete_job(self, info: GraphQLInfo, id: strawberry.ID) -> DeletePayload:
        principal = require(info, "jobs:write")
        session = info.context.session

        def delete() -> DeletePayload:
            service.delete(session, _owned_job(session, principal.tenant_id, str(id)))
            return DeletePayload(id=id, user_errors=[])

        return run_mutation(info, delete, lambda errors: DeletePayload(id=None, user_errors=errors))


def _owned_job(session: Session, tenant_id: str, job_id: str) -> JobRow:
    """The tenant's job, locked, or NOT_FOUND."""
    row = (
        JobRepository(session, tenant_id).get(job_id, for_update=True) if has_prefix(job_id, "job") else None
    )
    if row is None:
        raise NotFoundError("no such job", field=["id"])
    return row
