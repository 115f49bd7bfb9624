"""The deliverer's in-flight slots are shared between tenants: one tenant's backlog to slow receivers
does not hold up another tenant's deliveries."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from service.db import session_scope
from service.webhooks.service import publish
from tests.conftest import GraphQLClient, TenantHandle
from tests.receiver import Answer, Receiver
from tests.servers import ServiceProcess
from tests.webhooks.support import create_endpoint, delete_endpoint, send_test

SLOW_ENDPOINTS = 12  # x 20 per endpoint: more than the 200 slots a deliverer has
BACKLOG_PER_ENDPOINT = 30
SLOW_ANSWER = 1.5  # seconds, under the tests' 2 s timeout


@pytest.fixture
def slow_receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def test_a_tenants_backlog_to_slow_receivers_does_not_delay_another_tenants_delivery(
    receiver: Receiver,
    slow_receiver: Receiver,
    path: str,
    worker: ServiceProcess,
    make_tenant: Callable[..., TenantHandle],
    client_for: Callable[[str | None], GraphQLClient],
) -> None:
    busy_tenant = make_tenant("busy")
    busy = client_for(busy_tenant.api_key)
    other = client_for(make_tenant("other").api_key)
    paths = [f"{path}/slow-{n}" for n in range(SLOW_ENDPOINTS)]
    slow_endpoints = []
    for slow_path in paths:
        slow_receiver.script(slow_path, *[Answer(delay=SLOW_ANSWER)] * BACKLOG_PER_ENDPOINT)
        created = create_endpoint(busy, slow_receiver.url + slow_path, eventTypes=["webhook.test"])
        slow_endpoints.append(created["endpoint"]["id"])
    prompt = create_endpoint(other, receiver.url + path, eventTypes=["webhook.test"])["endpoint"]["id"]

    with session_scope() as session:  # the busy tenant's backlog, all due now
        for endpoint_id in slow_endpoints:
            for n in range(BACKLOG_PER_ENDPOINT):
                publish(session, busy_tenant.id, "webhook.test", {"n": n}, endpoint_ids=[endpoint_id])

    def slow_requests() -> list[float]:
        return [request.at for slow_path in paths for request in slow_receiver.at(slow_path)]

    deadline = time.monotonic() + 10
    while len(slow_requests()) < 150 and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        sent_at = time.time()
        send_test(other, prompt)
        # The busy tenant held most of the slots then, with more of its backlog waiting.
        in_flight = [at for at in slow_requests() if sent_at - SLOW_ANSWER < at <= sent_at]
        assert len(in_flight) >= 150, len(in_flight)
        assert len(slow_requests()) < SLOW_ENDPOINTS * BACKLOG_PER_ENDPOINT
        [arrived] = receiver.wait_for(path, lambda requests: len(requests) == 1, timeout=10)
        assert arrived.at - sent_at < 1.0, arrived.at - sent_at
    finally:
        for endpoint_id in slow_endpoints:  # the rest of the backlog goes with them
            delete_endpoint(busy, endpoint_id)
