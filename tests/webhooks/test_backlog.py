"""What the worker's delivery gauges read: deliveries due that no deliverer holds, and those overdue.
Each test sees only its own deliveries: it runs in a transaction that first empties the pending ones,
and is rolled back (no deliverer ever sees them)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlmodel import Session

from observability.metrics import OVERDUE_SECONDS
from service.webhooks.delivery import backlog
from service.webhooks.models import WebhookDelivery
from service.webhooks.service import publish
from tests.conftest import TenantHandle
from tests.webhooks.support import endpoint_of

# now() is the transaction's start in Postgres: times are set relative to it.
NOW = text("SELECT now()")


def _delivery(
    db: Session, tenant: TenantHandle, endpoint_id: str, *, due_seconds_ago: float
) -> WebhookDelivery:
    published = publish(db, tenant.id, "webhook.test", {}, endpoint_ids=[endpoint_id])
    assert published is not None
    delivery = db.get(WebhookDelivery, published.delivery_ids[0])
    assert delivery is not None
    delivery.next_attempt_at = db.execute(NOW).scalar_one() - timedelta(seconds=due_seconds_ago)
    db.add(delivery)
    db.flush()
    return delivery


def test_due_deliveries_count_until_a_deliverer_leases_them_and_overdue_ones_past_a_minute(
    db: Session, tenant: TenantHandle
) -> None:
    db.execute(text("DELETE FROM webhook_deliveries WHERE status = 'PENDING'"))
    endpoint = endpoint_of(db, tenant, "http://127.0.0.1:9/")
    assert (backlog(db).due, backlog(db).overdue) == (0, 0)

    _delivery(db, tenant, endpoint.id, due_seconds_ago=5)
    late = _delivery(db, tenant, endpoint.id, due_seconds_ago=OVERDUE_SECONDS + 30)
    _delivery(db, tenant, endpoint.id, due_seconds_ago=-60)  # a retry due in a minute: not yet
    assert (backlog(db).due, backlog(db).overdue) == (2, 1)

    late.lease_until = db.execute(NOW).scalar_one() + timedelta(seconds=30)  # a deliverer sends it now
    db.add(late)
    db.flush()
    assert (backlog(db).due, backlog(db).overdue) == (1, 0)

    late.lease_until = db.execute(NOW).scalar_one() - timedelta(seconds=1)  # its deliverer died: due again
    db.add(late)
    db.flush()
    assert (backlog(db).due, backlog(db).overdue) == (2, 1)
