"""Webhooks end to end: the API, a worker's deliverer and a real receiver on loopback.

Every delivery is checked with the reference `standardwebhooks` package as an independent oracle.
The test settings compress the retry schedule to [0, 1, 1, 1] seconds and the timeout to 2 s.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from redis import Redis
from standardwebhooks.webhooks import Webhook

from callbacks import verify
from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle
from tests.receiver import Answer, Received, Receiver
from tests.servers import ServiceProcess
from tests.webhooks.support import CREATE, ENDPOINT, REDELIVER, create_endpoint, deliveries, wait_for_delivery


def start_job(gql: GraphQLClient, text: str = "Hello there.") -> str:
    payload = gql(SPEECH_MUTATION, {"input": {"text": text}})["generateSpeech"]
    assert payload["userErrors"] == []
    job_id: str = payload["job"]["id"]
    return job_id


def event_types(requests: list[Received]) -> list[str]:
    return [json.loads(request.body)["type"] for request in requests]


def has_type(event_type: str) -> Callable[[list[Received]], bool]:
    return lambda requests: event_type in event_types(requests)


def test_every_job_milestone_arrives_signed_and_verifies_with_the_reference_library(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    created = create_endpoint(gql, receiver.url + path, description="all events")
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert created["endpoint"]["signing"] == "V1"

    job_id = start_job(gql, "One sentence. And then another one, to have some progress.")
    requests = receiver.wait_for(path, has_type("job.succeeded"))
    # Deliveries are sent concurrently, so they may arrive in any order (as with Stripe and Svix);
    # the body's timestamp, the event's creation time, orders them.
    requests.sort(key=lambda request: json.loads(request.body)["timestamp"])
    types = event_types(requests)
    assert types[:2] == ["job.queued", "job.started"], types
    assert types[-1] == "job.succeeded", types
    assert "job.progress" in types

    oracle = Webhook(secret)
    for request in requests:
        payload = oracle.verify(request.body, request.headers)
        assert payload == verify(request.body, request.headers, secret)
        assert payload["data"]["job"]["id"] == job_id
        assert request.headers["webhook-id"].startswith("evt_")
        assert request.headers["content-type"] == "application/json"
        assert "claimcheck" in request.headers["user-agent"].lower()
    assert len({request.headers["webhook-id"] for request in requests}) == len(requests)

    succeeded = json.loads(requests[-1].body)["data"]["job"]
    assert succeeded["status"] == "SUCCEEDED"
    download = httpx.get(succeeded["artifact"]["downloadUrl"])
    assert download.status_code == 200
    assert download.content[:4] == b"RIFF"
    assert len(download.content) == succeeded["artifact"]["byteSize"]


def test_an_event_filter_sends_only_the_chosen_types(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    create_endpoint(gql, receiver.url + path, eventTypes=["job.succeeded"])
    start_job(gql)
    requests = receiver.wait_for(path, has_type("job.succeeded"))
    time.sleep(0.5)  # anything else would have arrived by now
    assert event_types(receiver.at(path)) == ["job.succeeded"], requests


def test_failures_are_retried_with_the_same_webhook_id_and_every_attempt_is_logged(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    receiver.script(
        path,
        Answer(status=500, body=b"boom\x00" + b"x" * 5000),
        Answer(status=503),
        Answer(status=200, body=b"thanks"),
    )
    endpoint = create_endpoint(gql, receiver.url + path, eventTypes=["job.queued"])
    start_job(gql)
    delivery = wait_for_delivery(gql, endpoint["endpoint"]["id"], lambda d: d["status"] == "SUCCEEDED")

    attempts = delivery["attempts"]
    assert [attempt["statusCode"] for attempt in attempts] == [500, 503, 200]
    assert all(attempt["trigger"] == "scheduled" for attempt in attempts)
    assert "\x00" not in attempts[0]["responseBody"]
    assert len(attempts[0]["responseBody"].encode()) <= 4096
    assert attempts[2]["responseBody"] == "thanks"
    requests = receiver.at(path)
    assert len({request.headers["webhook-id"] for request in requests}) == 1
    assert {request.headers["webhook-id"] for request in requests} == {delivery["eventId"]}
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(requests)]
    assert all(0.7 <= gap <= 3.0 for gap in gaps), gaps  # the 1 s schedule step, ±20 % jitter, one poll


def test_timeouts_redirects_and_retry_after_are_recorded_as_specified(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    receiver.script(
        path,
        Answer(delay=3.0),  # past the 2 s timeout
        Answer(status=302, headers={"location": "http://127.0.0.1:1/elsewhere"}),
        Answer(status=429, headers={"retry-after": "2"}),
        Answer(status=200),
    )
    endpoint = create_endpoint(gql, receiver.url + path, eventTypes=["job.queued"])
    start_job(gql)
    delivery = wait_for_delivery(gql, endpoint["endpoint"]["id"], lambda d: d["status"] == "SUCCEEDED")

    timeout, redirect, throttled, ok = delivery["attempts"]
    assert timeout["statusCode"] is None
    assert "no response within 2 s" in timeout["error"]
    assert 1900 <= timeout["durationMs"] < 3000
    assert redirect["statusCode"] == 302
    assert "not followed" in redirect["error"]
    assert throttled["statusCode"] == 429
    assert ok["statusCode"] == 200
    requests = receiver.at(path)
    assert requests[3].at - requests[2].at >= 1.9  # Retry-After: 2 beat the 1 s schedule step
    assert all(request.path == path for request in requests)  # the redirect was not followed


def test_410_disables_the_endpoint_and_the_other_endpoints_hear_of_it(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    gone, watcher = path + "/gone", path + "/watcher"
    receiver.script(gone, Answer(status=410))
    doomed = create_endpoint(gql, receiver.url + gone, eventTypes=["job.queued"])
    watching = create_endpoint(gql, receiver.url + watcher, eventTypes=["endpoint.disabled"])
    start_job(gql)

    notice = receiver.wait_for(watcher, has_type("endpoint.disabled"))
    payload = Webhook(watching["secret"]).verify(notice[0].body, notice[0].headers)
    assert payload["data"]["endpoint"]["id"] == doomed["endpoint"]["id"]
    state = gql(ENDPOINT, {"id": doomed["endpoint"]["id"]})["webhookEndpoint"]
    assert state["enabled"] is False
    assert "410" in state["disabledReason"]
    assert state["deliveries"][0]["status"] == "FAILED"
    assert len(receiver.at(gone)) == 1


def test_an_exhausted_delivery_fails_then_manual_redelivery_keeps_the_webhook_id(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    receiver.script(path, *[Answer(status=500)] * 4)
    endpoint = create_endpoint(gql, receiver.url + path, eventTypes=["job.queued"])
    endpoint_id = endpoint["endpoint"]["id"]
    start_job(gql)
    failed = wait_for_delivery(gql, endpoint_id, lambda d: d["status"] == "FAILED")
    assert len(failed["attempts"]) == 4  # the whole [0, 1, 1, 1] schedule
    assert failed["nextAttemptAt"] is None

    redelivered = gql(REDELIVER, {"eventId": failed["eventId"], "endpointId": endpoint_id})[
        "redeliverWebhook"
    ]
    assert redelivered["userErrors"] == []
    assert redelivered["delivery"]["status"] == "PENDING"
    done = wait_for_delivery(gql, endpoint_id, lambda d: d["status"] == "SUCCEEDED")
    assert done["attempts"][-1]["trigger"] == "manual"
    assert done["attempts"][-1]["statusCode"] == 200
    assert {request.headers["webhook-id"] for request in receiver.at(path)} == {failed["eventId"]}


def test_recover_resends_what_failed_since_a_time(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    receiver.script(path, *[Answer(status=500)] * 8)
    endpoint_id = create_endpoint(gql, receiver.url + path, eventTypes=["job.queued"])["endpoint"]["id"]
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    start_job(gql)
    start_job(gql, "Another one.")
    deadline = time.monotonic() + 30
    while [d["status"] for d in deliveries(gql, endpoint_id)] != ["FAILED", "FAILED"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)

    recover = "mutation R($e: ID!, $s: DateTime!) { recoverWebhooks(endpointId: $e, since: $s) { count } }"
    assert gql(recover, {"e": endpoint_id, "s": since})["recoverWebhooks"]["count"] == 2
    deadline = time.monotonic() + 30
    while [d["status"] for d in deliveries(gql, endpoint_id)] != ["SUCCEEDED", "SUCCEEDED"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_rotation_signs_with_both_keys_until_the_old_one_expires(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    created = create_endpoint(gql, receiver.url + path, eventTypes=["job.queued", "webhook.test"])
    endpoint_id, old_secret = created["endpoint"]["id"], created["secret"]
    rotate = "mutation R($id: ID!) { rotateWebhookSecret(id: $id, keepOldForSeconds: 3600) { secret } }"
    new_secret = gql(rotate, {"id": endpoint_id})["rotateWebhookSecret"]["secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != old_secret

    start_job(gql)
    request = receiver.wait_for(path, has_type("job.queued"))[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(old_secret).verify(request.body, request.headers)
    Webhook(new_secret).verify(request.body, request.headers)

    immediate = "mutation R($id: ID!) { rotateWebhookSecret(id: $id, keepOldForSeconds: 0) { secret } }"
    newest = gql(immediate, {"id": endpoint_id})["rotateWebhookSecret"]["secret"]
    gql("mutation T($id: ID!) { sendTestWebhook(endpointId: $id) { delivery { id } } }", {"id": endpoint_id})
    test_event = receiver.wait_for(path, has_type("webhook.test"))[-1]
    assert test_event.headers["webhook-signature"].count("v1,") == 1
    Webhook(newest).verify(test_event.body, test_event.headers)


def test_v1a_endpoints_sign_with_ed25519(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    created = create_endpoint(gql, receiver.url + path, eventTypes=["job.queued"], signing="V1A")
    public_key = created["endpoint"]["publicKey"]
    assert created["secret"] is None
    assert public_key.startswith("whpk_")
    start_job(gql)
    request = receiver.wait_for(path, has_type("job.queued"))[0]

    assert verify(request.body, request.headers, public_key)["type"] == "job.queued"
    scheme, signature = request.headers["webhook-signature"].split(",", 1)
    assert scheme == "v1a"
    signed = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    )
    raw_key = base64.b64decode(public_key.removeprefix("whpk_"))
    Ed25519PublicKey.from_public_bytes(raw_key).verify(base64.b64decode(signature), signed)


def test_pending_retries_survive_a_redis_flush(
    gql: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess, redis_url: str
) -> None:
    receiver.script(path, Answer(status=500))
    endpoint_id = create_endpoint(gql, receiver.url + path, eventTypes=["job.queued"])["endpoint"]["id"]
    start_job(gql)
    receiver.wait_for(path, lambda requests: len(requests) >= 1)
    Redis.from_url(redis_url).flushall()
    delivery = wait_for_delivery(gql, endpoint_id, lambda d: d["status"] == "SUCCEEDED")
    assert [attempt["statusCode"] for attempt in delivery["attempts"]] == [500, 200]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "https://user:secret@example.com/hook",
        "http://10.0.0.8/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://100.64.0.1/hook",
        "http://0x0a000001/hook",
        "not a url",
    ],
)
def test_unsafe_urls_are_refused_at_creation(gql: GraphQLClient, url: str) -> None:
    payload = gql(CREATE, {"input": {"url": url}})["createWebhookEndpoint"]
    assert payload["endpoint"] is None
    assert payload["secret"] is None
    assert payload["userErrors"][0]["code"] == "VALIDATION"
    assert payload["userErrors"][0]["field"] == ["input", "url"]


def test_another_tenants_endpoints_and_events_are_as_absent_as_missing_ones(
    gql: GraphQLClient,
    receiver: Receiver,
    path: str,
    worker: ServiceProcess,
    make_tenant: Callable[..., TenantHandle],
    client_for: Callable[[str | None], GraphQLClient],
) -> None:
    endpoint_id = create_endpoint(gql, receiver.url + path, eventTypes=["job.queued"])["endpoint"]["id"]
    start_job(gql)
    event_id = wait_for_delivery(gql, endpoint_id, lambda d: d["status"] == "SUCCEEDED")["eventId"]

    other = client_for(make_tenant("intruder").api_key)
    assert other(ENDPOINT, {"id": endpoint_id})["webhookEndpoint"] is None
    assert other("{ webhookEndpoints { id } }")["webhookEndpoints"] == []
    own = create_endpoint(other, receiver.url + path + "/other")["endpoint"]["id"]
    stolen = other(REDELIVER, {"eventId": event_id, "endpointId": own})["redeliverWebhook"]
    missing = other(REDELIVER, {"eventId": "evt_" + "0" * 26, "endpointId": own})["redeliverWebhook"]
    assert stolen["userErrors"] == missing["userErrors"]
    assert stolen["userErrors"][0]["code"] == "NOT_FOUND"
    delete = "mutation D($id: ID!) { deleteWebhookEndpoint(id: $id) { id userErrors { code } } }"
    assert other(delete, {"id": endpoint_id})["deleteWebhookEndpoint"]["userErrors"][0]["code"] == "NOT_FOUND"
    assert gql(ENDPOINT, {"id": endpoint_id})["webhookEndpoint"]["id"] == endpoint_id
