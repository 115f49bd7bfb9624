"""A worker's deliverer thread stops within its bound, even when Postgres holds it up; what it sent is
recorded as it stops, not sent again."""

from __future__ import annotations

import time

from sqlalchemy import Connection, text

from service.db import get_engine, session_scope
from service.webhooks.deliverer import DelivererThread
from service.webhooks.service import publish
from tests.conftest import TenantHandle
from tests.receiver import Receiver
from tests.webhooks.support import endpoint_of


def _waiting_claims(connection: Connection) -> int:
    """Claims waiting for a row lock."""
    waiting = connection.execute(
        text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND query LIKE '%paced_endpoints%'"
        )
    ).scalar_one()
    connection.rollback()  # a fresh snapshot of the activity next time
    return int(waiting)


def test_a_deliverer_held_up_by_postgres_stops_within_its_bound_then_records_what_it_sent(
    tenant: TenantHandle, receiver: Receiver, path: str, only_deliverer: None
) -> None:
    with session_scope() as session:
        endpoint = endpoint_of(session, tenant, receiver.url + path)
        endpoint.rate_limit_per_second = 10  # claims lock its row to pace it (publishing does not)
        session.add(endpoint)
    with get_engine().connect() as holder, get_engine().connect() as observer:
        lock = text("SELECT 1 FROM webhook_endpoints WHERE id = :e FOR NO KEY UPDATE")
        holder.execute(lock, {"e": endpoint.id})
        with session_scope() as session:
            publish(session, tenant.id, "webhook.test", {"n": 1}, endpoint_ids=[endpoint.id])
        thread = DelivererThread()
        thread.start()
        deadline = time.monotonic() + 10
        while not _waiting_claims(observer):  # its first claim waits for the row
            assert time.monotonic() < deadline, "the deliverer's claim never reached the locked endpoint"
            time.sleep(0.05)

        started = time.monotonic()
        stopped = thread.stop(timeout=1.0)
        took = time.monotonic() - started
        assert not stopped
        assert 0.9 <= took < 3, f"stop() returned after {took:.1f} s"
        assert thread.is_alive()
        holder.rollback()  # Postgres answers again

    thread.join(timeout=30)
    assert not thread.is_alive()
    deadline = time.monotonic() + 20
    while True:
        with session_scope() as session:
            status = session.execute(
                text("SELECT status FROM webhook_deliveries WHERE endpoint_id = :e"), {"e": endpoint.id}
            ).scalar_one()
        if status == "SUCCEEDED":
            break
        assert time.monotonic() < deadline, f"the delivery is {status}: its attempt was not recorded"
        time.sleep(0.1)
    assert len(receiver.at(path)) == 1  # sent once, and its outcome kept: not sent again
