"""The webhook event types tenants can subscribe to."""

from __future__ import annotations

JOB_EVENT_TYPES = (
    "job.queued",
    "job.started",
    "job.progress",
    "job.succeeded",
    "job.failed",
    "job.canceled",
    "job.requeued",
    "job.deadline_at_risk",
)
JOB_REQUEUED = "job.requeued"
"""A dead-lettered job went back to the queue (same id; its data says the attempt to come and by whom)."""
DEADLINE_AT_RISK = "job.deadline_at_risk"
"""Sent once per job: its estimated completion passed its deadline."""
ENDPOINT_DISABLED = "endpoint.disabled"
WEBHOOK_TEST = "webhook.test"
EVENT_TYPES = (*JOB_EVENT_TYPES, ENDPOINT_DISABLED, WEBHOOK_TEST)
