"""The deliverer claims by endpoint: a backlog at one endpoint is sent no more than
WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT at a time, and does not hold up another endpoint's newer delivery."""

from __future__ import annotations

import asyncio
import time
import uuid

from service.db import session_scope
from service.settings import get_settings
from service.webhooks.deliverer import Deliverer
from service.webhooks.service import publish
from tests.conftest import TenantHandle
from tests.receiver import Answer, Receiver
from tests.webhooks.support import endpoint_of

ANSWER = 0.4  # seconds each request to the busy endpoint takes


def _endpoint(tenant: TenantHandle, url: str) -> str:
    with session_scope() as session:
        return endpoint_of(session, tenant, url).id


def test_a_backlog_at_one_endpoint_is_sent_within_its_cap_and_another_endpoint_is_not_kept_waiting(
    tenant: TenantHandle, receiver: Receiver, only_deliverer: None
) -> None:
    """The cap is per deliverer (README): the session's worker would take its own share of the backlog."""
    cap = get_settings().webhook_max_in_flight_per_endpoint
    backlog = 3 * cap
    busy_path, other_path = f"/{uuid.uuid4().hex}/busy", f"/{uuid.uuid4().hex}/other"
    receiver.script(busy_path, *[Answer(delay=ANSWER)] * backlog)
    busy = _endpoint(tenant, receiver.url + busy_path)
    other = _endpoint(tenant, receiver.url + other_path)
    with session_scope() as session:  # the backlog is older than the other endpoint's delivery
        for index in range(backlog):
            publish(session, tenant.id, "webhook.test", {"n": index}, endpoint_ids=[busy])
        publish(session, tenant.id, "webhook.test", {"n": "other"}, endpoint_ids=[other])

    async def deliver_all() -> None:
        stop = asyncio.Event()
        run = asyncio.create_task(Deliverer(get_settings()).run(stop))
        deadline = time.monotonic() + 30
        while len(receiver.at(busy_path)) < backlog and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await run

    asyncio.run(deliver_all())

    arrivals = sorted(request.at for request in receiver.at(busy_path))
    assert len(arrivals) == backlog
    # A request is in flight for ANSWER seconds after it arrives: count those overlapping each arrival.
    in_flight = max(sum(1 for other_at in arrivals if at - ANSWER < other_at <= at) for at in arrivals)
    assert cap // 2 < in_flight <= cap, in_flight
    [delivered] = receiver.at(other_path)
    assert delivered.at - arrivals[0] < ANSWER, "the other endpoint waited for the backlog"
