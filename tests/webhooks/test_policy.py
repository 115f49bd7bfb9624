"""Policy on webhook mutations: every one draws from the tenant's rate limit, and job data only goes
to a URL chosen by a key that may read jobs (`webhooks:manage` alone manages the other events)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from service.db import session_scope
from service.ids import new_id
from service.settings import get_settings
from service.tenants.service import create_key
from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle
from tests.receiver import Answer, Receiver
from tests.servers import ServiceProcess
from tests.tenants.support import set_limits
from tests.webhooks.support import CREATE, create_endpoint, deliveries, send_test, wait_for_delivery

ERRORS = "userErrors { code field message extensions }"
WHE, EVT = new_id("whe"), new_id("evt")
MUTATIONS = {
    "createWebhookEndpoint": (
        f'mutation {{ createWebhookEndpoint(input: {{url: "http://127.0.0.1:9/limited",'
        f' eventTypes: ["webhook.test"]}}) {{ {ERRORS} }} }}'
    ),
    "updateWebhookEndpoint": f'mutation {{ updateWebhookEndpoint(id: "{WHE}", input: {{}}) {{ {ERRORS} }} }}',
    "deleteWebhookEndpoint": f'mutation {{ deleteWebhookEndpoint(id: "{WHE}") {{ {ERRORS} }} }}',
    "rotateWebhookSecret": f'mutation {{ rotateWebhookSecret(id: "{WHE}") {{ {ERRORS} }} }}',
    "sendTestWebhook": f'mutation {{ sendTestWebhook(endpointId: "{WHE}") {{ {ERRORS} }} }}',
    "redeliverWebhook": (
        f'mutation {{ redeliverWebhook(eventId: "{EVT}", endpointId: "{WHE}") {{ {ERRORS} }} }}'
    ),
    "recoverWebhooks": (
        f'mutation {{ recoverWebhooks(endpointId: "{WHE}", since: "2000-01-01T00:00:00Z") {{ {ERRORS} }} }}'
    ),
}
UPDATE = f"""
mutation Update($id: ID!, $input: UpdateWebhookEndpointInput!) {{
  updateWebhookEndpoint(id: $id, input: $input) {{ endpoint {{ id url eventTypes enabled }} {ERRORS} }}
}}
"""
REDELIVER = f"""
mutation Redeliver($eventId: ID!, $endpointId: ID!) {{
  redeliverWebhook(eventId: $eventId, endpointId: $endpointId) {{ delivery {{ id status }} {ERRORS} }}
}}
"""
RECOVER = f"""
mutation Recover($id: ID!) {{
  recoverWebhooks(endpointId: $id, since: "2000-01-01T00:00:00Z") {{ count {ERRORS} }}
}}
"""


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_each_webhook_mutation_is_rate_limited_with_retry_after(
    mutation: str, gql: GraphQLClient, tenant: TenantHandle
) -> None:
    set_limits(tenant.id, mutations_per_minute=1, burst=1)
    first = gql.post(MUTATIONS[mutation]).json()["data"][mutation]["userErrors"]
    assert [error["code"] for error in first] in ([], ["NOT_FOUND"]), first
    response = gql.post(MUTATIONS[mutation])
    [error] = response.json()["data"][mutation]["userErrors"]
    assert error["code"] == "RATE_LIMITED"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert error["extensions"] == {"retryAfter": retry_after}


@pytest.fixture
def webhooks_only(tenant: TenantHandle, client_for: Any) -> GraphQLClient:
    """The tenant's second key, with only the webhooks:manage scope."""
    with session_scope() as session:
        secret = get_settings().secret_key
        key = create_key(session, tenant.id, server_secret=secret, scopes=["webhooks:manage"])
    client: GraphQLClient = client_for(key.full_key)
    return client


def _forbidden(errors: list[dict[str, Any]]) -> None:
    [error] = errors
    assert error["code"] == "FORBIDDEN", errors
    assert "jobs:read" in error["message"]


def test_without_jobs_read_a_key_cannot_point_an_endpoint_at_job_events(
    gql: GraphQLClient, webhooks_only: GraphQLClient, receiver: Receiver, path: str
) -> None:
    url = receiver.url + path
    for event_types in (["job.succeeded"], ["webhook.test", "job.failed"], None):
        fields = {} if event_types is None else {"eventTypes": event_types}  # none: every type
        payload = webhooks_only(CREATE, {"input": {"url": url, **fields}})["createWebhookEndpoint"]
        assert payload["endpoint"] is None
        _forbidden(payload["userErrors"])
    own = create_endpoint(webhooks_only, url, eventTypes=["webhook.test", "endpoint.disabled"])
    own_id = own["endpoint"]["id"]
    widened = webhooks_only(UPDATE, {"id": own_id, "input": {"eventTypes": ["job.succeeded"]}})
    _forbidden(widened["updateWebhookEndpoint"]["userErrors"])

    jobs_endpoint = create_endpoint(gql, url + "/jobs", eventTypes=["job.succeeded"])["endpoint"]["id"]
    repointed = webhooks_only(UPDATE, {"id": jobs_endpoint, "input": {"url": url + "/mine"}})
    _forbidden(repointed["updateWebhookEndpoint"]["userErrors"])
    for harmless in ({"description": "ours"}, {"enabled": False}, {"enabled": True}):
        changed = webhooks_only(UPDATE, {"id": jobs_endpoint, "input": harmless})["updateWebhookEndpoint"]
        assert changed["userErrors"] == [], (harmless, changed)
    assert changed["endpoint"]["url"] == url + "/jobs"

    widened_by_owner = gql(UPDATE, {"id": own_id, "input": {"eventTypes": ["job.succeeded"]}})
    assert widened_by_owner["updateWebhookEndpoint"]["userErrors"] == []


def test_without_jobs_read_a_key_cannot_redeliver_or_recover_job_events(
    gql: GraphQLClient, webhooks_only: GraphQLClient, receiver: Receiver, path: str, worker: ServiceProcess
) -> None:
    receiver.script(path + "/jobs", *[Answer(status=500)] * 4)
    jobs_endpoint = create_endpoint(gql, receiver.url + path + "/jobs", eventTypes=["job.queued"])
    jobs_endpoint_id = jobs_endpoint["endpoint"]["id"]
    assert gql(SPEECH_MUTATION, {"input": {"text": "Hello."}})["generateSpeech"]["userErrors"] == []
    failed = wait_for_delivery(gql, jobs_endpoint_id, lambda d: d["status"] == "FAILED")
    own_id = create_endpoint(webhooks_only, receiver.url + path + "/mine", eventTypes=["webhook.test"])[
        "endpoint"
    ]["id"]

    for endpoint_id in (own_id, jobs_endpoint_id):
        variables = {"eventId": failed["eventId"], "endpointId": endpoint_id}
        redelivered = webhooks_only(REDELIVER, variables)["redeliverWebhook"]
        assert redelivered["delivery"] is None
        _forbidden(redelivered["userErrors"])
    recovered = webhooks_only(RECOVER, {"id": jobs_endpoint_id})["recoverWebhooks"]
    assert recovered["count"] == 0
    _forbidden(recovered["userErrors"])
    assert deliveries(webhooks_only, own_id) == []
    assert [d["status"] for d in deliveries(gql, jobs_endpoint_id)] == ["FAILED"]

    test_event = send_test(webhooks_only, own_id)["eventId"]  # its own events are its to resend
    again = webhooks_only(REDELIVER, {"eventId": test_event, "endpointId": own_id})["redeliverWebhook"]
    assert again["userErrors"] == []
    assert gql(RECOVER, {"id": jobs_endpoint_id})["recoverWebhooks"]["count"] == 1
    time.sleep(0.5)  # anything sent to the other key's endpoint would have arrived by now
    assert all(b'"job.' not in request.body for request in receiver.at(path + "/mine"))
