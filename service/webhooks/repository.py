"""All tenant-facing SQL about webhook endpoints, events and deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import col, select

from callbacks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from service.repository import TenantRepository


class EndpointRepository(TenantRepository[WebhookEndpoint]):
    """One tenant's endpoints."""

    model = WebhookEndpoint

    def all(self) -> Sequence[WebhookEndpoint]:
        return self.session.exec(self.base_statement().order_by(col(WebhookEndpoint.id))).all()

    def count(self) -> int:
        return len(self.all())


class EventRepository(TenantRepository[WebhookEvent]):
    """One tenant's webhook events."""

    model = WebhookEvent


class DeliveryRepository(TenantRepository[WebhookDelivery]):
    """One tenant's deliveries and their attempts."""

    model = WebhookDelivery

    def for_event(self, event_id: str, endpoint_id: str) -> WebhookDelivery | None:
        statement = self.base_statement().where(
            WebhookDelivery.event_id == event_id, WebhookDelivery.endpoint_id == endpoint_id
        )
        return self.session.exec(statement.with_for_update()).first()

    def recent(self, endpoint_id: str, *, first: int, status: str | None) -> Sequence[WebhookDelivery]:
        """Newest first."""
        statement = self.base_statement().where(WebhookDelivery.endpoint_id == endpoint_id)
        if status is not None:
            statement = statement.where(WebhookDelivery.status == status)
        return self.session.exec(statement.order_by(col(WebhookDelivery.id).desc()).limit(first)).all()

    def failed_since(self, endpoint_id: str, since: datetime) -> Sequence[WebhookDelivery]:
        statement = self.base_statement().where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status == "FAILED",
            col(WebhookDelivery.created_at) >= since,
        )
        return self.session.exec(statement.with_for_update()).all()

    def attempts(self, delivery_ids: Sequence[str]) -> Sequence[WebhookAttempt]:
        """Oldest first."""
        statement = (
            select(WebhookAttempt)
            .where(
                WebhookAttempt.tenant_id == self.tenant_id, col(WebhookAttempt.delivery_id).in_(delivery_ids)
            )
            .order_by(col(WebhookAttempt.at))
        )
        return self.session.exec(statement).all()

    def event_types(self, event_ids: Sequence[str]) -> dict[str, str]:
        statement = select(WebhookEvent.id, WebhookEvent.type).where(
            WebhookEvent.tenant_id == self.tenant_id, col(WebhookEvent.id).in_(event_ids)
        )
        return dict(self.session.exec(statement).all())
