"""An endpoint URL whose name resolves to an internal address is refused without telling the address."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import GraphQLClient, TenantHandle
from tests.servers import ApiProcess
from tests.webhooks.support import CREATE

UPDATE = """
mutation Update($id: ID!, $input: UpdateWebhookEndpointInput!) {
  updateWebhookEndpoint(id: $id, input: $input) { endpoint { id } userErrors { code field message } }
}
"""


@pytest.fixture(scope="module")
def strict_api(env: dict[str, str], workdir: Path) -> Iterator[ApiProcess]:
    """An API whose SSRF guard lets no private network through, loopback included (as in production)."""
    process = ApiProcess({**env, "WEBHOOK_ALLOWED_CIDRS": ""}, workdir / "api-strict.log")
    process.start()
    yield process
    process.stop()


def test_a_name_resolving_to_an_internal_address_is_refused_without_revealing_it(
    strict_api: ApiProcess, tenant: TenantHandle
) -> None:
    client = GraphQLClient(strict_api.url, tenant.api_key)
    refused = client(CREATE, {"input": {"url": "http://localhost:8080/hook"}})["createWebhookEndpoint"]
    [error] = refused["userErrors"]
    assert error["code"] == "VALIDATION"
    assert error["field"] == ["input", "url"]
    assert "localhost resolves to a non-public address" in error["message"]
    assert "127.0.0.1" not in error["message"]
    assert "loopback" not in error["message"]

    created = client(CREATE, {"input": {"url": "http://8.8.8.8/hook", "eventTypes": ["webhook.test"]}})[
        "createWebhookEndpoint"
    ]
    assert created["userErrors"] == []
    variables = {"id": created["endpoint"]["id"], "input": {"url": "http://localhost/elsewhere"}}
    [error] = client(UPDATE, variables)["updateWebhookEndpoint"]["userErrors"]
    assert "localhost resolves to a non-public address" in error["message"]
    assert "127.0.0.1" not in error["message"]
    client.http.close()
