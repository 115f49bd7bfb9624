"""The searchable delivery log (`webhookDeliveries`): each filter returns exactly the matching
deliveries, pages by cursor without gaps or repeats, and shows each attempt's request and response.
Retention prunes old events with their deliveries and keeps fresh ones and those still pending."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from service.db import session_scope
from service.settings import get_settings
from service.webhooks.service import prune_old
from tests.conftest import SPEECH_MUTATION, GraphQLClient
from tests.receiver import Answer, Receiver
from tests.servers import ServiceProcess
from tests.webhooks.support import create_endpoint, send_test, wait_for_delivery

LOG = """
query Log($first: Int, $after: String, $endpointId: ID, $status: DeliveryStatus, $eventType: String,
          $jobId: ID, $since: DateTime, $until: DateTime) {
  webhookDeliveries(first: $first, after: $after, endpointId: $endpointId, status: $status,
                    eventType: $eventType, jobId: $jobId, since: $since, until: $until) {
    nodes { id eventId eventType status endpointId jobId createdAt
            attempts { statusCode responseBody requestHeaders responseHeaders } }
    endCursor hasNextPage
  }
}
"""


def log_of(gql: GraphQLClient, page: int = 3, **filters: Any) -> list[dict[str, Any]]:
    """Every delivery the filters match, read page by page through the cursor."""
    found: list[dict[str, Any]] = []
    after = None
    while True:
        result = gql(LOG, {"first": page, "after": after, **filters})["webhookDeliveries"]
        found += result["nodes"]
        if not result["hasNextPage"]:
            assert result["endCursor"] is None
            return found
        assert len(result["nodes"]) == page
        after = result["endCursor"]


def test_each_filter_returns_exactly_the_matching_deliveries_and_pages_cover_them_once(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    ok = create_endpoint(gql, receiver.url + path)["endpoint"]["id"]
    broken_path = path + "/broken"
    receiver.script(broken_path, *[Answer(status=500, body=b"down")] * 4)
    broken = create_endpoint(gql, receiver.url + broken_path, eventTypes=["webhook.test"])["endpoint"]["id"]

    job_ids = []
    for text_ in ("First job.", "Second job."):
        job = gql(SPEECH_MUTATION, {"input": {"text": text_}})["generateSpeech"]["job"]
        job_ids.append(job["id"])
        assert gql.wait_for_job(job["id"])["status"] == "SUCCEEDED"
    send_test(gql, ok)
    send_test(gql, broken)
    wait_for_delivery(gql, broken, lambda delivery: delivery["status"] == "FAILED")
    wait_for_delivery(gql, ok, lambda delivery: delivery["status"] != "PENDING")
    everything = log_of(gql)
    while any(delivery["status"] == "PENDING" for delivery in everything):
        everything = log_of(gql)

    ids = [delivery["id"] for delivery in everything]
    assert len(ids) == len(set(ids)) >= 10
    assert ids == sorted(ids, reverse=True), "newest first"
    assert log_of(gql, page=100) == everything

    def only(keep: Any) -> list[str]:
        return [delivery["id"] for delivery in everything if keep(delivery)]

    def ids_of(**filters: Any) -> list[str]:
        return [delivery["id"] for delivery in log_of(gql, **filters)]

    assert ids_of(jobId=job_ids[0]) == only(lambda d: d["jobId"] == job_ids[0]) != []
    assert ids_of(eventType="webhook.test") == only(lambda d: d["eventType"] == "webhook.test") != []
    assert ids_of(eventType="job.succeeded", jobId=job_ids[1]) == only(
        lambda d: d["eventType"] == "job.succeeded" and d["jobId"] == job_ids[1]
    )
    assert ids_of(status="FAILED") == only(lambda d: d["status"] == "FAILED") != []
    assert ids_of(status="FAILED", endpointId=ok) == []
    assert ids_of(endpointId=broken) == only(lambda d: d["endpointId"] == broken) != []
    middle = sorted(delivery["createdAt"] for delivery in everything)[len(everything) // 2]
    assert ids_of(since=middle) == only(lambda d: d["createdAt"] >= middle) != []
    assert ids_of(until=middle) == only(lambda d: d["createdAt"] < middle) != []
    assert ids_of(jobId="job_01M8V97PC1RTK5DNYRP6Y8ZKJ5") == []

    failed = next(delivery for delivery in everything if delivery["status"] == "FAILED")
    attempt = failed["attempts"][0]
    assert attempt["statusCode"] == 500
    assert attempt["responseBody"] == "down"
    assert attempt["responseHeaders"]["content-length"] == "4"
    sent = attempt["requestHeaders"]
    assert sent["webhook-id"] == failed["eventId"]
    assert sent["webhook-signature"].startswith("v1,")
    assert sent["content-type"] == "application/json"

    refused = gql.post(LOG, {"eventType": "no.such"}).json()
    assert refused["errors"][0]["extensions"]["code"] == "VALIDATION", refused


def test_retention_prunes_old_events_with_their_deliveries_and_keeps_fresh_and_pending_ones(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    healthy = create_endpoint(gql, receiver.url + path, eventTypes=["webhook.test"])["endpoint"]["id"]
    old, fresh, pending = send_test(gql, healthy), send_test(gql, healthy), send_test(gql, healthy)
    # All three delivered first: the deliverer then has none in flight, whose recorded success could
    # overwrite the pending state given below (it did, in one CI run, when the third was sent after).
    deadline = time.monotonic() + 30
    while {d["status"] for d in log_of(gql, endpointId=healthy)} != {"SUCCEEDED"}:
        assert time.monotonic() < deadline, "the three test events were not all delivered"
        time.sleep(0.1)
    days = get_settings().webhook_retention_days
    with session_scope() as session:
        # The clock moves on for two of them: old succeeded, and one still pending (a retry far off).
        for delivery, age in ((old, int(days) + 1), (pending, int(days) + 2)):
            session.execute(
                text(
                    "UPDATE webhook_events SET created_at = now() - make_interval(days => CAST(:age AS int))"
                    " WHERE id = :id"
                ),
                {"age": age, "id": delivery["eventId"]},
            )
        session.execute(
            text(
                "UPDATE webhook_deliveries SET status = 'PENDING', next_attempt_at = now() + interval '1 day'"
                " WHERE id = :id"
            ),
            {"id": pending["id"]},
        )
    with session_scope() as session:
        assert prune_old(session) >= 1
    left = {delivery["id"] for delivery in log_of(gql, endpointId=healthy)}
    assert old["id"] not in left
    assert {fresh["id"], pending["id"]} <= left
    with session_scope() as session:
        orphans = session.execute(
            text("SELECT count(*) FROM webhook_attempts a WHERE a.delivery_id = :id"), {"id": old["id"]}
        ).scalar_one()
    assert orphans == 0
