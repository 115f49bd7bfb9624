"""Failure alerts on a compressed clock: an endpoint failing for 1 h, 24 h and 72 h makes one
`endpoint.failing` each to the tenant's other endpoints, a success then sends `endpoint.recovered`,
and one failing past WEBHOOK_DISABLE_AFTER_SECONDS is disabled (`endpoint.disabled`). The endpoint
shows failingSince, lastSuccessAt and lastError. The clock is compressed by moving the endpoint's
failing streak back in time, then running the scheduler's sweep."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from service.db import session_scope
from service.settings import get_settings
from service.webhooks.service import alert_failing
from tests.conftest import GraphQLClient
from tests.receiver import Answer, Received, Receiver
from tests.servers import ServiceProcess
from tests.webhooks.support import create_endpoint, deliveries, send_test, wait_for_delivery

HEALTH = """
query Health($id: ID!) {
  webhookEndpoint(id: $id) { enabled disabledReason failingSince lastSuccessAt lastError }
}
"""


def _bodies(requests: list[Received]) -> list[dict[str, Any]]:
    return [json.loads(request.body) for request in requests]


def _fail_for(endpoint_id: str, hours: float) -> None:
    """The endpoint's failing streak began `hours` ago."""
    with session_scope() as session:
        session.execute(
            text(
                "UPDATE webhook_endpoints"
                " SET failing_since = now() - make_interval(secs => CAST(:s AS float)) WHERE id = :id"
            ),
            {"s": hours * 3600, "id": endpoint_id},
        )


def _sweep() -> None:
    with session_scope() as session:
        alert_failing(session)


def test_alerts_fire_at_each_threshold_then_recovery_then_disabling(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    watcher_path, broken_path = path + "/watcher", path + "/broken"
    operational = ["endpoint.failing", "endpoint.recovered", "endpoint.disabled"]
    create_endpoint(gql, receiver.url + watcher_path, eventTypes=operational)
    broken = create_endpoint(gql, receiver.url + broken_path, eventTypes=["webhook.test"])["endpoint"]["id"]

    receiver.script(broken_path, Answer(status=200))
    send_test(gql, broken)
    wait_for_delivery(gql, broken, lambda delivery: delivery["status"] == "SUCCEEDED")
    healthy = gql(HEALTH, {"id": broken})["webhookEndpoint"]
    assert healthy["failingSince"] is None
    assert healthy["lastSuccessAt"] is not None

    receiver.script(broken_path, *[Answer(status=503, body=b"maintenance")] * 4)
    send_test(gql, broken)
    _wait_newest_failed(gql, broken)
    failing = gql(HEALTH, {"id": broken})["webhookEndpoint"]
    assert failing["failingSince"] is not None
    assert failing["lastError"] == "HTTP 503"
    assert failing["lastSuccessAt"] == healthy["lastSuccessAt"]

    _sweep()  # failing for seconds only: nothing to say yet
    for hours, threshold in ((1.01, 3600), (24.01, 86400), (72.01, 259200)):
        _fail_for(broken, hours)
        _sweep()
        _sweep()  # once per threshold
        requests = receiver.wait_for(watcher_path, _alerted(threshold))
        alerts = [body for body in _bodies(requests) if body["type"] == "endpoint.failing"]
        assert [alert["data"]["failingForSeconds"] for alert in alerts][-1] == threshold
        latest = alerts[-1]["data"]
        assert latest["endpoint"]["id"] == broken
        assert latest["endpoint"]["lastError"] == "HTTP 503"
        assert latest["endpoint"]["lastSuccessAt"] is not None
    assert [body["data"]["failingForSeconds"] for body in _bodies(receiver.at(watcher_path))] == [
        3600,
        86400,
        259200,
    ]
    assert receiver.at(broken_path)[-1].headers["webhook-id"], "alerts never go to the failing endpoint"
    assert all(json.loads(r.body)["type"] == "webhook.test" for r in receiver.at(broken_path))

    receiver.script(broken_path, Answer(status=200))
    send_test(gql, broken)
    requests = receiver.wait_for(watcher_path, lambda r: "endpoint.recovered" in _types(r))
    recovered = next(body for body in _bodies(requests) if body["type"] == "endpoint.recovered")
    assert recovered["data"]["endpoint"]["id"] == broken
    back = gql(HEALTH, {"id": broken})["webhookEndpoint"]
    assert back["failingSince"] is None
    assert back["lastError"] is None
    assert back["lastSuccessAt"] > healthy["lastSuccessAt"]

    receiver.script(broken_path, *[Answer(status=500)] * 4)
    send_test(gql, broken)
    _wait_newest_failed(gql, broken)
    _fail_for(broken, get_settings().webhook_disable_after_seconds / 3600 + 1)
    _sweep()
    requests = receiver.wait_for(watcher_path, lambda r: "endpoint.disabled" in _types(r))
    assert "endpoint.disabled" in _types(requests)
    gone = gql(HEALTH, {"id": broken})["webhookEndpoint"]
    assert gone["enabled"] is False
    assert gone["disabledReason"] == "no successful delivery for too long"


def _types(requests: list[Received]) -> list[str]:
    return [body["type"] for body in _bodies(requests)]


def _alerted(threshold: int) -> Callable[[list[Received]], bool]:
    return lambda requests: any(
        body["type"] == "endpoint.failing" and body["data"]["failingForSeconds"] == threshold
        for body in _bodies(requests)
    )


def _wait_newest_failed(gql: GraphQLClient, endpoint_id: str) -> None:
    deadline = time.monotonic() + 30
    while deliveries(gql, endpoint_id)[0]["status"] != "FAILED":
        assert time.monotonic() < deadline
        time.sleep(0.1)
