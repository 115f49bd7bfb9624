"""Every domain's tables on one metadata: what the migrations build and what foreign keys resolve
against. Composition roots (the app, the worker, the scheduler, the CLI) and migrations import it;
no domain does."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlmodel import SQLModel

from service.jobs.models import Job, JobEvent, JobOutbox, JobQueueCount
from service.tenants.models import ApiKey, PortalLink, PortalSession, Tenant
from service.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

TABLES: tuple[type[SQLModel], ...] = (
    Tenant,
    ApiKey,
    PortalLink,
    PortalSession,
    Job,
    JobEvent,
    JobOutbox,
    JobQueueCount,
    WebhookEndpoint,
    WebhookEvent,
    WebhookDelivery,
    WebhookAttempt,
)

metadata: MetaData = SQLModel.metadata
