"""Several deliverers on one database share the work without sending anything twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

from sqlalchemy import text

from service.db import session_scope
from service.settings import get_settings
from service.webhooks.deliverer import Deliverer
from service.webhooks.service import publish
from tests.conftest import TenantHandle
from tests.receiver import Receiver
from tests.webhooks.support import endpoint_of


def test_concurrent_deliverers_send_each_delivery_exactly_once(
    tenant: TenantHandle, receiver: Receiver
) -> None:
    count = 300
    path = f"/{uuid.uuid4().hex}"
    with session_scope() as session:
        endpoint = endpoint_of(session, tenant, receiver.url + path)
        for index in range(count):
            publish(session, tenant.id, "webhook.test", {"n": index}, endpoint_ids=[endpoint.id])

    async def deliver_all() -> None:
        stop = asyncio.Event()
        runs = [asyncio.create_task(Deliverer(get_settings()).run(stop)) for _ in range(3)]
        deadline = time.monotonic() + 60
        while len(receiver.at(path)) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a duplicate would arrive now
        stop.set()
        await asyncio.gather(*runs)

    asyncio.run(deliver_all())

    ids = Counter(request.headers["webhook-id"] for request in receiver.at(path))
    assert len(ids) == count
    assert set(ids.values()) == {1}
    with session_scope() as session:
        statuses = session.execute(
            text("SELECT status, count(*) FROM webhook_deliveries WHERE endpoint_id = :e GROUP BY status"),
            {"e": endpoint.id},
        ).all()
    assert {status: n for status, n in statuses} == {"SUCCEEDED": count}
