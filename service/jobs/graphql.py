"""GraphQL for jobs: the Job type, `job`, `jobs` (Relay), `jobUpdates`, cancel, retry and delete.

Resolvers are thin: they hand the request's session to the service and render what it returns. The
mutations that start jobs belong to the kinds (service/kinds/graphql.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import weakref
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated, cast

import anyio
import anyio.to_thread
import strawberry
from strawberry.scalars import JSON

from service.errors import ClaimcheckError, ValidationError
from service.graphql_base import (
    SNAPSHOT_STREAM,
    DeletePayload,
    GraphQLInfo,
    UserError,
    graphql_error,
    or_graphql_error,
    require,
    run_mutation,
)
from service.graphql_cost import COST
from service.ids import has_prefix
from service.jobs import service, updates
from service.jobs.models import TERMINAL_STATUSES
from service.jobs.models import Job as JobRow
from service.jobs.models import JobStatus as JobStatusValue
from service.jobs.priority import JobPriority as JobPriorityValue
from service.jobs.remediation import remediation
from service.models import utcnow

__all__ = ["Job", "JobPayload", "JobPriority", "JobPriorityValue"]  # what the kinds' mutations use

JobStatus = strawberry.enum(JobStatusValue, name="JobStatus")
JobPriority = strawberry.enum(
    JobPriorityValue, name="JobPriority", description="Workers take HIGH jobs first, then NORMAL, then LOW."
)

POLL_ADVICE_SECONDS = 2
DEFAULT_PAGE = 20
SIGNED_URL_COST = 10
"""A signature (RSA, or an IAM signBlob call for GCS) weighs as much as ten objects read."""
SIGNING_THREADS = 8
"""Download URLs an API process signs at once: a page of them waits its turn in these threads without
taking the ones that database work needs."""
_signing_threads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def signing_threads() -> anyio.CapacityLimiter:
    """The running event loop's limiter of SIGNING_THREADS."""
    loop = asyncio.get_running_loop()
    limiter = _signing_threads.get(loop)
    if limiter is None:
        limiter = _signing_threads[loop] = anyio.CapacityLimiter(SIGNING_THREADS)
    return limiter


@strawberry.type
class JobError:
    code: str
    message: str
    retryable: bool

    @strawberry.field(description="What to do about it, in one line.")
    def remediation(self) -> str:
        return remediation(self.code)


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
    row: strawberry.Private[JobRow]

    @strawberry.field(
        description="A plain HTTP GET URL for the file, valid for expiresIn seconds (clamped).",
        metadata={COST: SIGNED_URL_COST},
    )
    async def download_url(self, expires_in: int = 900) -> str:
        sign = functools.partial(service.download_url, self.row, expires_in)
        try:  # signing blocks (RSA, or an IAM call per URL for gcs): never on the event loop
            return await anyio.to_thread.run_sync(sign, limiter=signing_threads())
        except ClaimcheckError as error:
            raise graphql_error(error) from error


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
    priority: JobPriority  # type: ignore[valid-type]
    deadline: datetime | None = strawberry.field(
        description="Not finished by then, the job ends FAILED with DEADLINE_EXCEEDED."
    )
    dead_lettered_at: datetime | None = strawberry.field(
        description="When it failed for good (retries spent or a permanent error); null unless in the "
        "dead letter. retryJob sends it back to the queue."
    )
    tenant_id: strawberry.Private[str]
    row: strawberry.Private[JobRow]

    @strawberry.field(description="Whether the job is expected to finish past its deadline.")
    def at_risk(self) -> bool:
        return service.at_risk(self.row, utcnow())

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
            row=row,
        )

    @strawberry.field(description="The audit trail, oldest first.")
    async def events(self, info: GraphQLInfo) -> list[JobEvent]:
        rows = await info.context.loader(service.job_events).load(str(self.id))  # one query per page
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
            priority=JobPriorityValue(row.priority),
            deadline=row.deadline_at,
            dead_lettered_at=row.dead_lettered_at,
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
        try:
            row = await updates.find_job(principal.tenant_id, str(id), wait_seconds)
        except ClaimcheckError as error:
            raise graphql_error(error) from error
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
        dead_lettered: Annotated[
            bool | None, strawberry.argument(description="true: only the dead letter; false: none of it.")
        ] = None,
    ) -> JobConnection:
        principal = require(info, "jobs:read")
        rows, more = or_graphql_error(
            lambda: service.list_jobs(
                info.context.session,
                principal.tenant_id,
                first=DEFAULT_PAGE if first is None else first,
                after_id=decode_cursor(after) if after else None,
                statuses=status or [],
                kind=kind,
                dead_lettered=dead_lettered,
            )
        )
        edges = [JobEdge(cursor=encode_cursor(row.id), node=Job.from_row(row)) for row in rows]
        return JobConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=more,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )


@strawberry.type
class JobSubscription:
    @strawberry.subscription(
        description="The job now, then each change of status, progress or message; ends at a terminal"
        " status.",
        metadata={SNAPSHOT_STREAM: True},
    )
    async def job_updates(self, info: GraphQLInfo, id: strawberry.ID) -> AsyncGenerator[Job, None]:
        principal = require(info, "jobs:read")
        try:
            async for row in updates.follow(principal.tenant_id, str(id)):
                yield Job.from_row(row)
        except ClaimcheckError as error:
            raise graphql_error(error) from error


@strawberry.type
class JobMutation:
    @strawberry.mutation(
        description="QUEUED: canceled at once. RUNNING: CANCELING until the worker stops it, then CANCELED."
    )
    def cancel_job(self, info: GraphQLInfo, id: strawberry.ID) -> JobPayload:
        tenant_id = require(info, "jobs:write").tenant_id
        return run_mutation(
            info,
            lambda: JobPayload(
                job=Job.from_row(service.cancel_job(info.context.session, tenant_id, str(id))), user_errors=[]
            ),
            lambda errors: JobPayload(job=None, user_errors=errors),
        )

    @strawberry.mutation(
        description="Send a dead-lettered job back to the queue: same id and audit trail, the next attempt "
        "(within the plan's rate and max_queued; a job.requeued event is sent)."
    )
    def retry_job(self, info: GraphQLInfo, id: strawberry.ID) -> JobPayload:
        principal = require(info, "jobs:write")
        return run_mutation(
            info,
            lambda: JobPayload(
                job=Job.from_row(service.retry_job(info.context.session, principal, str(id))), user_errors=[]
            ),
            lambda errors: JobPayload(job=None, user_errors=errors),
        )

    @strawberry.mutation(description="Delete a finished job with its events and its file.")
    def delete_job(self, info: GraphQLInfo, id: strawberry.ID) -> DeletePayload:
        tenant_id = require(info, "jobs:write").tenant_id

        def delete() -> DeletePayload:
            service.delete_job(info.context.session, tenant_id, str(id))
            return DeletePayload(id=id, user_errors=[])

        return run_mutation(info, delete, lambda errors: DeletePayload(id=None, user_errors=errors))
