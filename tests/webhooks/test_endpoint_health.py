"""An endpoint that keeps failing is disabled, and the tenant's other endpoints are told."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from service.db import session_scope
from service.models import utcnow
from service.settings import get_settings
from service.webhooks.delivery import Claimed, Outcome, record
from service.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from service.webhooks.service import publish
from tests.conftest import TenantHandle
from tests.webhooks.support import endpoint_of


def _endpoint(tenant: TenantHandle, path: str, event_types: list[str]) -> str:
    with session_scope() as session:
        endpoint = endpoint_of(session, tenant, f"http://127.0.0.1:9/{path}", event_types)
        return endpoint.id


def _answer(tenant: TenantHandle, endpoint_id: str, status_code: int) -> None:
    """One event for the endpoint, answered with status_code (recorded as a deliverer would; no network)."""
    with session_scope() as session:
        published = publish(session, tenant.id, "webhook.test", {}, endpoint_ids=[endpoint_id])
        assert published is not None
        event = session.get(WebhookEvent, published.event_id)
        delivery = session.get(WebhookDelivery, published.delivery_ids[0])
        assert event is not None
        assert delivery is not None
        delivery.next_attempt_at = utcnow() + timedelta(days=1)  # keep running deliverers away from it
        session.flush()
        claimed = Claimed(
            delivery_id=delivery.id,
            tenant_id=tenant.id,
            endpoint_id=endpoint_id,
            attempt_count=0,
            trigger="scheduled",
            event_id=event.id,
            event_type=event.type,
            event_data=event.data,
            event_created_at=event.created_at,
            job_id=None,
            url="http://127.0.0.1:9/",
            endpoint_enabled=True,
            signing_keys=[],
            artifact_key=None,
        )
        record(
            session,
            [Outcome(claimed=claimed, at=utcnow(), duration_ms=1, status_code=status_code)],
            get_settings(),
        )


def test_a_long_failing_streak_disables_the_endpoint_and_notifies_the_others(tenant: TenantHandle) -> None:
    failing = _endpoint(tenant, "failing", ["webhook.test"])
    watcher = _endpoint(tenant, "watcher", ["endpoint.disabled"])

    _answer(tenant, failing, 500)
    with session_scope() as session:
        endpoint = session.get(WebhookEndpoint, failing)
        assert endpoint is not None
        assert endpoint.enabled
        assert endpoint.failing_since is not None
        endpoint.failing_since -= timedelta(seconds=get_settings().webhook_disable_after_seconds + 60)
        session.add(endpoint)

    _answer(tenant, failing, 500)
    with session_scope() as session:
        endpoint = session.get(WebhookEndpoint, failing)
        assert endpoint is not None
        assert not endpoint.enabled
        assert endpoint.disabled_reason == "no successful delivery for too long"
        notices = session.exec(
            select(WebhookEvent, WebhookDelivery)
            .where(WebhookDelivery.event_id == WebhookEvent.id, WebhookEvent.type == "endpoint.disabled")
            .where(WebhookEvent.tenant_id == tenant.id)
        ).all()
        assert [(delivery.endpoint_id, event.data["endpoint"]["id"]) for event, delivery in notices] == [
            (watcher, failing)
        ]


def test_a_success_ends_the_failing_streak(tenant: TenantHandle) -> None:
    endpoint_id = _endpoint(tenant, "flaky", ["webhook.test"])
    _answer(tenant, endpoint_id, 500)
    with session_scope() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None
        assert endpoint.failing_since is not None
    _answer(tenant, endpoint_id, 204)
    with session_scope() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None
        assert endpoint.enabled
        assert endpoint.failing_since is None
