"""What the webhook tests share: GraphQL documents and helpers that drive endpoints and read deliveries."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlmodel import Session

from service.db import session_scope
from service.principal import Principal
from service.tenants.models import ALL_SCOPES
from service.tenants.service import limits_for
from service.webhooks import service
from service.webhooks.models import SigningScheme, WebhookEndpoint
from tests.conftest import GraphQLClient, TenantHandle

CREATE = """
mutation Create($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) {
    endpoint { id url signing publicKey enabled eventTypes description }
    secret
    userErrors { code field message }
  }
}
"""

ENDPOINT = """
query Endpoint($id: ID!) {
  webhookEndpoint(id: $id) {
    id enabled disabledReason
    deliveries { id eventId eventType status nextAttemptAt
                 attempts { at statusCode durationMs error responseBody trigger } }
  }
}
"""

REDELIVER = """
mutation Redeliver($eventId: ID!, $endpointId: ID!) {
  redeliverWebhook(eventId: $eventId, endpointId: $endpointId) {
    delivery { id status } userErrors { code message }
  }
}
"""

SEND_TEST = """
mutation Test($id: ID!) {
  sendTestWebhook(endpointId: $id) { delivery { id eventId } userErrors { code message } }
}
"""

DELETE = "mutation Delete($id: ID!) { deleteWebhookEndpoint(id: $id) { id userErrors { code message } } }"


def principal_of(tenant: TenantHandle) -> Principal:
    """The tenant calling with its all-scopes key, for tests that call the service in-process."""
    with session_scope() as session:
        limits = limits_for(session, tenant.id)
    return Principal(tenant_id=tenant.id, key_id=tenant.key_id, scopes=frozenset(ALL_SCOPES), limits=limits)


def endpoint_of(
    session: Session, tenant: TenantHandle, url: str, event_types: Sequence[str] = ()
) -> WebhookEndpoint:
    """An endpoint of the tenant's made by the service in the caller's session (V1 signing, no
    description), for tests that call the service in-process."""
    return service.create_endpoint(
        session,
        principal_of(tenant),
        url=service.check_endpoint_url(url),
        event_types=list(event_types),
        description=None,
        signing=SigningScheme.V1,
    ).endpoint


def create_endpoint(gql: GraphQLClient, url: str, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = gql(CREATE, {"input": {"url": url, **fields}})["createWebhookEndpoint"]
    assert payload["userErrors"] == [], payload
    return payload


def send_test(gql: GraphQLClient, endpoint_id: str) -> dict[str, Any]:
    """The pending delivery of a new webhook.test event."""
    payload = gql(SEND_TEST, {"id": endpoint_id})["sendTestWebhook"]
    assert payload["userErrors"] == [], payload
    delivery: dict[str, Any] = payload["delivery"]
    return delivery


def delete_endpoint(gql: GraphQLClient, endpoint_id: str) -> None:
    payload = gql(DELETE, {"id": endpoint_id})["deleteWebhookEndpoint"]
    assert payload["userErrors"] == [], payload


def deliveries(gql: GraphQLClient, endpoint_id: str) -> list[dict[str, Any]]:
    """The endpoint's deliveries, newest first."""
    endpoint = gql(ENDPOINT, {"id": endpoint_id})["webhookEndpoint"]
    result: list[dict[str, Any]] = endpoint["deliveries"]
    return result


def wait_for_delivery(
    gql: GraphQLClient, endpoint_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    """The first delivery of the endpoint (oldest) once done(delivery) holds."""
    deadline = time.monotonic() + timeout
    while True:
        found = deliveries(gql, endpoint_id)
        if found and done(found[-1]):
            return found[-1]
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
