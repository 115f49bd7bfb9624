"""GraphQL for the built-in kinds: the mutations that start speech and export jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from service.graphql_base import GraphQLInfo, on_event_loop, require, run_mutation
from service.jobs import service
from service.jobs.graphql import Job, JobPayload, JobPriority, JobPriorityValue
from service.kinds.export import ExportFormat as ExportFormatValue
from service.kinds.speech import AudioFormat as AudioFormatValue

AudioFormat = strawberry.enum(AudioFormatValue, name="AudioFormat")
ExportFormat = strawberry.enum(ExportFormatValue, name="ExportFormat")


@strawberry.input
class GenerateSpeechInput:
    text: str
    voice: str | None = None
    format: AudioFormat | None = None  # type: ignore[valid-type]
    idempotency_key: str | None = None
    priority: JobPriority = JobPriorityValue.NORMAL  # type: ignore[valid-type]
    deadline: datetime | None = None


@strawberry.input
class StartExportInput:
    format: ExportFormat | None = None  # type: ignore[valid-type]
    since: datetime | None = None
    idempotency_key: str | None = None
    priority: JobPriority = JobPriorityValue.NORMAL  # type: ignore[valid-type]
    deadline: datetime | None = None


def start_job(
    info: GraphQLInfo,
    kind: str,
    raw_input: dict[str, Any],
    idempotency_key: str | None,
    *,
    priority: JobPriorityValue = JobPriorityValue.NORMAL,
    deadline: datetime | None = None,
) -> JobPayload:
    """Create a job of this kind for the caller (its plan's rate, quotas, priority cap and idempotency
    apply)."""
    principal = require(info, "jobs:write")
    return run_mutation(
        info,
        lambda: JobPayload(
            job=Job.from_row(
                service.create_job(
                    info.context.session,
                    principal,
                    kind,
                    raw_input,
                    idempotency_key,
                    priority=priority,
                    deadline=deadline,
                )
            ),
            user_errors=[],
        ),
        lambda errors: JobPayload(job=None, user_errors=errors),
    )


@strawberry.type
class KindMutation:
    @strawberry.mutation(description="Start turning text into speech; answers at once with the QUEUED job.")
    @on_event_loop  # create_job waits only on the session and Redis
    def generate_speech(self, info: GraphQLInfo, input: GenerateSpeechInput) -> JobPayload:
        raw: dict[str, Any] = {"text": input.text}
        if input.voice is not None:
            raw["voice"] = input.voice
        if input.format is not None:
            raw["format"] = input.format.value
        return start_job(
            info, "speech", raw, input.idempotency_key, priority=input.priority, deadline=input.deadline
        )

    @strawberry.mutation(description="Export the caller's job history and webhook delivery log as a file.")
    @on_event_loop  # create_job waits only on the session and Redis
    def start_export(self, info: GraphQLInfo, input: StartExportInput) -> JobPayload:
        raw: dict[str, Any] = {}
        if input.format is not None:
            raw["format"] = input.format.value
        if input.since is not None:
            raw["since"] = input.since.isoformat()
        return start_job(
            info, "export", raw, input.idempotency_key, priority=input.priority, deadline=input.deadline
        )
