"""Webhook events: written once, in the transaction of the change they report, fanned out to endpoints."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, or_, select

from callbacks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from observability.tracing import inject
from service.jobs.models import Job

JOB_EVENT_TYPES = (
    "job.queued",
    "job.started",
    "job.progress",
    "job.succeeded",
    "job.failed",
    "job.canceled",
)
EVENT_TYPES = (*JOB_EVENT_TYPES, "endpoint.disabled", "webhook.test")
NOTIFY_CHANNEL = "webhook_deliveries"


def job_data(job: Job) -> dict[str, Any]:
    """The job as webhooks show it (the GraphQL field names); the downloadUrl is added at each send."""
    error = (
        {"code": job.error_code, "message": job.error_message, "retryable": bool(job.error_retryable)}
        if job.error_code
        else None
    )
    artifact = (
        {
            "filename": job.artifact_filename,
            "contentType": job.artifact_content_type,
            "byteSize": job.artifact_byte_size,
            "sha256": job.artifact_sha256,
        }
        if job.artifact_key
        else None
    )
    return {
        "job": {
            "id": job.id,
            "kind": job.kind,
            "status": job.status,
            "progress": job.progress,
            "message": job.message,
            "attempt": job.attempt,
            "idempotencyKey": job.idempotency_key,
            "createdAt": job.created_at.isoformat(),
            "startedAt": job.started_at.isoformat() if job.started_at else None,
            "finishedAt": job.finished_at.isoformat() if job.finished_at else None,
            "error": error,
            "artifact": artifact,
        }
    }


def subscribers(
    session: Session, tenant_id: str, event_type: str, endpoint_ids: list[str] | None = None
) -> list[str]:
    """Ids of the tenant's enabled endpoints that want this event type (or of the given ones)."""
    endpoints = select(WebhookEndpoint.id).where(
        WebhookEndpoint.tenant_id == tenant_id, col(WebhookEndpoint.enabled).is_(True)
    )
    if endpoint_ids is not None:
        endpoints = endpoints.where(col(WebhookEndpoint.id).in_(endpoint_ids))
    else:
        subscribed = or_(
            text("webhook_endpoints.event_types = '[]'::jsonb"),
            text("webhook_endpoints.event_types ? :event_type").bindparams(event_type=event_type),
        )
        endpoints = endpoints.where(subscribed)
    with session.no_autoflush:  # a lookup; the caller's pending rows are flushed with its own writes
        return list(session.exec(endpoints).all())


def publish(
    session: Session,
    tenant_id: str,
    event_type: str,
    data: dict[str, Any],
    *,
    job_id: str | None = None,
    endpoint_ids: list[str] | None = None,
) -> tuple[WebhookEvent | None, list[WebhookDelivery]]:
    """Write the event and one pending delivery per enabled endpoint that wants it (or the given ones);
    nothing when no endpoint wants it.

    Deliverers are woken by a NOTIFY that Postgres sends only if this transaction commits.
    """
    targets = subscribers(session, tenant_id, event_type, endpoint_ids)
    if not targets:
        return None, []
    event = WebhookEvent(
        tenant_id=tenant_id, type=event_type, data=data, job_id=job_id, trace_context=inject()
    )
    session.add(event)
    session.flush()  # the deliveries refer to it (and unit-of-work order follows relationships, not keys)
    deliveries = [
        WebhookDelivery(tenant_id=tenant_id, event_id=event.id, endpoint_id=endpoint_id)
        for endpoint_id in targets
    ]
    session.add_all(deliveries)
    wake_deliverers(session)
    return event, deliveries


def wake_deliverers(session: Session) -> None:
    """Ask the deliverers to look for due deliveries once this transaction commits."""
    session.execute(text("SELECT pg_notify(:channel, '')").bindparams(channel=NOTIFY_CHANNEL))


def publish_job_event(session: Session, job: Job, event_type: str, extra: dict[str, Any] | None) -> None:
    """The webhook event of a job event, if it is one tenants subscribe to."""
    if event_type in JOB_EVENT_TYPES:
        publish(session, job.tenant_id, event_type, {**job_data(job), **(extra or {})}, job_id=job.id)
