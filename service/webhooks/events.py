"""The webhook event types tenants can subscribe to."""

from __future__ import annotations

JOB_EVENT_TYPES = (
    "job.queued",
    "job.started",
    "job.progress",
    "job.succeeded",
    "job.failed",
    "job.canceled",
)
ENDPOINT_DISABLED = "endpoint.disabled"
WEBHOOK_TEST = "webhook.test"
EVENT_TYPES = (*JOB_EVENT_TYPES, ENDPOINT_DISABLED, WEBHOOK_TEST)
