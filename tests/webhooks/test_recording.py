"""Recording attempts: a delivery that vanished mid-attempt, or an outcome the database refuses, is
dropped alone; every other tenant's outcomes are still recorded."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlmodel import col, select

from service.db import session_scope
from service.models import utcnow
from service.settings import get_settings
from service.webhooks.deliverer import store
from service.webhooks.delivery import Claimed, Outcome
from service.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEvent
from service.webhooks.service import publish
from tests.conftest import GraphQLClient, TenantHandle
from tests.receiver import Answer, Receiver
from tests.servers import ServiceProcess
from tests.webhooks.support import create_endpoint, delete_endpoint, deliveries, send_test

SLOW_ANSWER = 0.8  # seconds: under the tests' 2 s timeout, so the attempt ends with a 200


def test_an_endpoint_deleted_mid_attempt_does_not_stop_another_tenants_deliveries_being_recorded(
    receiver: Receiver,
    path: str,
    worker: ServiceProcess,
    make_tenant: Callable[..., TenantHandle],
    client_for: Callable[[str | None], GraphQLClient],
) -> None:
    leaving = client_for(make_tenant("leaving").api_key)
    bystander = client_for(make_tenant("bystander").api_key)
    slow, fast = path + "/slow", path + "/fast"
    receiver.script(slow, Answer(delay=SLOW_ANSWER))
    doomed = create_endpoint(leaving, receiver.url + slow, eventTypes=["webhook.test"])["endpoint"]["id"]
    log_start = len(worker.log())

    send_test(leaving, doomed)
    assert len(receiver.wait_for(slow, lambda requests: len(requests) == 1, timeout=10)) == 1
    delete_endpoint(leaving, doomed)  # while the receiver is still answering
    time.sleep(SLOW_ANSWER + 0.5)  # the attempt has ended and its outcome reached the deliverer

    created = create_endpoint(bystander, receiver.url + fast, eventTypes=["webhook.test"])
    endpoint_id = created["endpoint"]["id"]
    sent = {send_test(bystander, endpoint_id)["id"] for _ in range(3)}
    deadline = time.monotonic() + 10
    while True:
        recorded = [d for d in deliveries(bystander, endpoint_id) if d["id"] in sent]
        if all(d["status"] == "SUCCEEDED" for d in recorded) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [d["status"] for d in recorded] == ["SUCCEEDED"] * 3, worker.log()[log_start:][-3000:]
    assert [[a["statusCode"] for a in d["attempts"]] for d in recorded] == [[200]] * 3
    assert len(receiver.at(slow)) == 1  # the deleted endpoint's delivery is not sent again
    assert "webhook attempts failed" not in worker.log()[log_start:]


def _claimed(tenant: TenantHandle, endpoint_id: str) -> Claimed:
    """A delivery of a new event to the endpoint, as a deliverer holds it (kept from running deliverers)."""
    with session_scope() as session:
        published = publish(session, tenant.id, "webhook.test", {}, endpoint_ids=[endpoint_id])
        assert published is not None
        event = session.get(WebhookEvent, published.event_id)
        delivery = session.get(WebhookDelivery, published.delivery_ids[0])
        assert event is not None
        assert delivery is not None
        delivery.next_attempt_at = utcnow() + timedelta(days=1)
        session.flush()
        return Claimed(
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


def test_an_outcome_the_database_refuses_is_dropped_and_the_rest_of_its_batch_is_recorded(
    gql: GraphQLClient, tenant: TenantHandle, caplog: pytest.LogCaptureFixture
) -> None:
    created = create_endpoint(gql, "http://127.0.0.1:9/never", eventTypes=["webhook.test"])
    endpoint_id = created["endpoint"]["id"]
    good = [_claimed(tenant, endpoint_id) for _ in range(3)]
    bad = _claimed(tenant, endpoint_id)
    outcomes = [Outcome(claimed=c, at=utcnow(), duration_ms=5, status_code=204) for c in good]
    outcomes.insert(1, Outcome(claimed=bad, at=utcnow(), duration_ms=5, status_code=2**40))  # no INTEGER

    store(outcomes, get_settings())

    with session_scope() as session:
        statuses = {c.delivery_id: session.get(WebhookDelivery, c.delivery_id) for c in [*good, bad]}
        attempts = session.exec(
            select(WebhookAttempt.delivery_id).where(
                col(WebhookAttempt.delivery_id).in_([c.delivery_id for c in [*good, bad]])
            )
        ).all()
    assert {d: row.status for d, row in statuses.items() if row} == {
        **{c.delivery_id: "SUCCEEDED" for c in good},
        bad.delivery_id: "PENDING",  # sent again once its lease lapses: nothing is lost
    }
    assert sorted(attempts) == sorted(c.delivery_id for c in good)
    assert f"dropping the outcome of delivery {bad.delivery_id}" in caplog.text
