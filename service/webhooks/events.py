"""The webhook event types and their bodies: one pydantic model per type builds the body it carries,
and the published catalog (a JSON Schema 2020-12 per type, a description, an example) is generated
from those same models, never written twice.

Declaring an event type is one `declare(...)` call here with its data model; publishing it builds
its data through `EventType.build`, so a body that does not fit its model never leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class Payload(BaseModel):
    """A part of a webhook body: camelCase on the wire, and nothing undeclared in it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# --- job events ----------------------------------------------------------------------------------


Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
"""An ISO-8601 time as the job's events have always carried it."""


class JobError(Payload):
    code: str = Field(description="Stable error code, e.g. HANDLER_ERROR or WORKER_LOST.")
    message: str
    retryable: bool
    remediation: str | None = Field(default=None, description="What to do about this code, in one line.")


class JobArtifact(Payload):
    filename: str
    content_type: str | None
    byte_size: int | None
    sha256: str | None
    download_url: str | None = Field(
        default=None,
        description="job.succeeded only: a signed URL for the file, fresh for each attempt (plain HTTP GET).",
    )


class JobSnapshot(Payload):
    """The job as the GraphQL API names its fields, when the event happened."""

    id: str = Field(description="job_...")
    kind: str
    status: str = Field(description="The job's status after the event (QUEUED, RUNNING, SUCCEEDED, ...).")
    progress: float = Field(ge=0, le=1)
    message: str | None
    attempt: int
    idempotency_key: str | None
    priority: Literal["HIGH", "NORMAL", "LOW"]
    deadline: Timestamp | None = Field(description="When the job must have finished, if the caller set one.")
    dead_lettered_at: Timestamp | None = Field(
        description="Set when the job failed for good and waits in the dead letter (retryJob requeues it)."
    )
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    error: JobError | None
    artifact: JobArtifact | None


class JobEventData(Payload):
    job: JobSnapshot


class JobQueuedData(JobEventData):
    kind: str | None = Field(default=None, description="Set when the job was created.")
    attempt: int | None = Field(default=None, description="Set on a retry: the attempt that failed.")
    code: str | None = Field(default=None, description="Set on a retry: why the attempt failed.")
    message: str | None = Field(default=None, description="Set on a retry: what went wrong, shortened.")
    retry_in_seconds: float | None = Field(default=None, description="Set on a retry: when it runs again.")


class JobProgressData(JobEventData):
    progress: float = Field(ge=0, le=1, description="The milestone crossed (PROGRESS_MILESTONES).")


class JobRequeuedData(JobEventData):
    attempt: int = Field(description="The attempt its next run will be.")
    previous_error: str | None = Field(description="The code it had failed with.")
    by: str = Field(description='Who requeued it: "tenant" (retryJob) or "operator" (the CLI).')


class JobDeadlineAtRiskData(JobEventData):
    estimated_completion_at: Timestamp
    deadline: Timestamp


class ArtifactSummary(Payload):
    filename: str
    byte_size: int
    sha256: str


class JobSucceededData(JobEventData):
    artifact: ArtifactSummary | None = Field(description="null when the kind produces no file.")


class JobFailedData(JobEventData):
    code: str
    retryable: bool


# --- endpoint and test events --------------------------------------------------------------------


class EndpointRef(Payload):
    id: str = Field(description="whe_...")
    url: str


class DisabledEndpoint(EndpointRef):
    disabled_reason: str


class EndpointDisabledData(Payload):
    endpoint: DisabledEndpoint


class FailingEndpoint(EndpointRef):
    failing_since: datetime = Field(description="The first failure with no success since.")
    last_success_at: datetime | None
    last_error: str | None = Field(description="What the last failed attempt got.")


class EndpointFailingData(Payload):
    endpoint: FailingEndpoint
    failing_for_seconds: int = Field(description="The threshold crossed: 3600, 86400 or 259200.")
    disables_at: datetime = Field(description="When it is disabled if no delivery succeeds before.")


class RecoveredEndpoint(EndpointRef):
    failing_since: datetime
    recovered_at: datetime


class EndpointRecoveredData(Payload):
    endpoint: RecoveredEndpoint


class WebhookTestData(Payload):
    endpoint: EndpointRef
    message: str


# --- the catalog ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventType:
    """One event type: its name, what it means, the model of its `data` and an example of it."""

    name: str
    description: str
    data_model: type[Payload]
    example: Payload

    def build(self, **fields: Any) -> dict[str, Any]:
        """The event's `data`, validated by its model, as JSON (fields by their Python or wire names)."""
        return self.data_model.model_validate(fields).model_dump(
            mode="json", by_alias=True, exclude_unset=True
        )

    @cached_property
    def body_model(self) -> type[BaseModel]:
        """The whole body: `{"type", "timestamp", "data"}`."""
        return create_model(
            "".join(part.title() for part in self.name.replace("_", ".").split(".")) + "Webhook",
            __config__=ConfigDict(extra="forbid"),
            type=(Literal[self.name], ...),  # type: ignore[arg-type]
            timestamp=(datetime, Field(description="When the event happened (ISO-8601).")),
            data=(self.data_model, ...),
        )

    @cached_property
    def schema(self) -> dict[str, Any]:
        """The JSON Schema (2020-12) of the whole body."""
        generated = self.body_model.model_json_schema(by_alias=True, mode="serialization")
        return {
            "$schema": JSON_SCHEMA_DIALECT,
            "title": self.name,
            "description": self.description,
            **generated,
        }

    def example_body(self, timestamp: datetime = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)) -> dict[str, Any]:
        """A body as a receiver gets it, with the example's data."""
        data = self.example.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return {"type": self.name, "timestamp": timestamp.isoformat(), "data": data}


CATALOG: dict[str, EventType] = {}
"""Every event type, by name, in the order declared."""


def declare(name: str, description: str, data_model: type[Payload], example: Payload) -> EventType:
    """Add an event type to the catalog (its example must fit its model)."""
    if name in CATALOG:
        raise ValueError(f"event type {name} is declared twice")
    if not isinstance(example, data_model):
        raise TypeError(f"the example of {name} is not a {data_model.__name__}")
    CATALOG[name] = event_type = EventType(name, description, data_model, example)
    return event_type


_CREATED = "2026-01-01T11:59:58+00:00"
_STARTED = "2026-01-01T11:59:59+00:00"
_FINISHED = "2026-01-01T12:00:00+00:00"


def _example_job(status: str, **fields: Any) -> JobSnapshot:
    defaults: dict[str, Any] = {
        "id": "job_01JGZ5K3Q4W8X9Y0Z1A2B3C4D5",
        "kind": "speech",
        "status": status,
        "progress": 0.0,
        "message": None,
        "attempt": 0,
        "idempotency_key": "order-1234",
        "priority": "NORMAL",
        "deadline": None,
        "dead_lettered_at": None,
        "created_at": _CREATED,
        "started_at": None,
        "finished_at": None,
        "error": None,
        "artifact": None,
    }
    return JobSnapshot.model_validate({**defaults, **fields})


_EXAMPLE_ARTIFACT = {"filename": "speech.wav", "byte_size": 48044, "sha256": "9f2c" * 16}
_EXAMPLE_ENDPOINT = {"id": "whe_01JGZ5K3Q4W8X9Y0Z1A2B3C4D6", "url": "https://partner.example/webhooks"}

JOB_QUEUED = declare(
    "job.queued",
    "A job was accepted and waits for a worker; sent again (with the failed attempt's code) when a"
    " run fails with a retryable error and the job is queued to run once more.",
    JobQueuedData,
    JobQueuedData(job=_example_job("QUEUED"), kind="speech"),
)
JOB_STARTED = declare(
    "job.started",
    "A worker started running the job (each attempt sends one).",
    JobEventData,
    JobEventData(
        job=_example_job("RUNNING", attempt=1, message="starting", started_at=_STARTED),
    ),
)
JOB_PROGRESS = declare(
    "job.progress",
    "The job crossed a progress milestone (PROGRESS_MILESTONES, by default 25, 50 and 75 %).",
    JobProgressData,
    JobProgressData(
        job=_example_job("RUNNING", attempt=1, progress=0.5, message="synthesizing", started_at=_STARTED),
        progress=0.5,
    ),
)
JOB_SUCCEEDED = declare(
    "job.succeeded",
    "The job finished; `data.job.artifact.downloadUrl` is a signed URL for its file, fresh for each attempt.",
    JobSucceededData,
    JobSucceededData(
        job=_example_job(
            "SUCCEEDED",
            attempt=1,
            progress=1.0,
            message="done",
            started_at=_STARTED,
            finished_at=_FINISHED,
            artifact={
                **_EXAMPLE_ARTIFACT,
                "content_type": "audio/wav",
                "download_url": "https://api.example/downloads/eyJrIjoidGVuYW50cy8uLi4ifQ",
            },
        ),
        artifact=ArtifactSummary.model_validate(_EXAMPLE_ARTIFACT),
    ),
)
JOB_FAILED = declare(
    "job.failed",
    "The job failed for good; `data.job.error` says why.",
    JobFailedData,
    JobFailedData(
        job=_example_job(
            "FAILED",
            attempt=1,
            message="failed",
            started_at=_STARTED,
            finished_at=_FINISHED,
            error={"code": "INVALID_INPUT", "message": "the voice is unknown", "retryable": False},
        ),
        code="INVALID_INPUT",
        retryable=False,
    ),
)
JOB_REQUEUED = declare(
    "job.requeued",
    "A job from the dead letter went back to the queue, with the same id and audit trail.",
    JobRequeuedData,
    JobRequeuedData(
        job=_example_job("QUEUED", attempt=1, message="requeued"),
        attempt=2,
        previous_error="UNAVAILABLE",
        by="tenant",
    ),
)
DEADLINE_AT_RISK = declare(
    "job.deadline_at_risk",
    "Sent once: the running job's estimated completion passed its deadline.",
    JobDeadlineAtRiskData,
    JobDeadlineAtRiskData(
        job=_example_job(
            "RUNNING",
            attempt=1,
            progress=0.2,
            message="synthesizing",
            started_at=_STARTED,
            deadline=_FINISHED,
        ),
        estimated_completion_at="2026-01-01T12:00:04+00:00",
        deadline=_FINISHED,
    ),
)
JOB_CANCELED = declare(
    "job.canceled",
    "The job was canceled before it finished.",
    JobEventData,
    JobEventData(job=_example_job("CANCELED", message="canceled", finished_at=_FINISHED)),
)
ENDPOINT_FAILING = declare(
    "endpoint.failing",
    "Sent to a tenant's other endpoints when one of its endpoints has had no successful delivery for"
    " 1 hour, 24 hours and 72 hours (one event at each).",
    EndpointFailingData,
    EndpointFailingData.model_validate(
        {
            "endpoint": {
                **_EXAMPLE_ENDPOINT,
                "failing_since": "2026-01-01T11:00:00+00:00",
                "last_success_at": "2026-01-01T10:58:00+00:00",
                "last_error": "HTTP 503",
            },
            "failing_for_seconds": 3600,
            "disables_at": "2026-01-06T11:00:00+00:00",
        }
    ),
)
ENDPOINT_DISABLED = declare(
    "endpoint.disabled",
    "Sent to a tenant's other endpoints when one is disabled: it answered 410 Gone, or had no"
    " successful delivery for WEBHOOK_DISABLE_AFTER_SECONDS.",
    EndpointDisabledData,
    EndpointDisabledData(
        endpoint=DisabledEndpoint.model_validate(
            {**_EXAMPLE_ENDPOINT, "disabled_reason": "the endpoint answered 410 Gone"}
        )
    ),
)
ENDPOINT_RECOVERED = declare(
    "endpoint.recovered",
    "Sent to a tenant's other endpoints when an endpoint that was reported failing gets a successful"
    " delivery again.",
    EndpointRecoveredData,
    EndpointRecoveredData(
        endpoint=RecoveredEndpoint.model_validate(
            {
                **_EXAMPLE_ENDPOINT,
                "failing_since": "2026-01-01T11:00:00+00:00",
                "recovered_at": "2026-01-01T12:00:00+00:00",
            }
        )
    ),
)
WEBHOOK_TEST = declare(
    "webhook.test",
    "A test event, sent to one endpoint by `sendTestWebhook`.",
    WebhookTestData,
    WebhookTestData(
        endpoint=EndpointRef.model_validate(_EXAMPLE_ENDPOINT), message="a test event from Claimcheck"
    ),
)

JOB_EVENT_TYPES = tuple(name for name in CATALOG if name.startswith("job."))
"""Event types that carry job data (an endpoint getting them needs a key with jobs:read)."""


def event_types() -> tuple[str, ...]:
    """Every declared event type's name."""
    return tuple(CATALOG)


EVENT_TYPES = event_types()
