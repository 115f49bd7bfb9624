"""API key scopes: every operation checks its scope; and a key's last use is recorded without a
database write per request."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.db import session_scope
from service.ids import new_id
from service.redis import get_redis
from service.scheduler import run_once
from service.settings import get_settings
from service.tenants.models import ApiKey
from service.tenants.principals import LAST_USED_HASH
from service.tenants.service import create_key
from tests.conftest import GraphQLClient, TenantHandle
from tests.servers import ApiProcess
from tests.tenants.test_isolation import _subscribe

JOB, WHE, EVT = new_id("job"), new_id("whe"), new_id("evt")
# operation -> (scope it needs, document); ids are missing ones: a key with the scope gets NOT_FOUND or null
OPERATIONS: dict[str, tuple[str | None, str]] = {
    "viewer": (None, "{ viewer { id } }"),
    "createPortalSession": (None, "mutation { createPortalSession { url } }"),
    "job": ("jobs:read", f'{{ job(id: "{JOB}") {{ id }} }}'),
    "jobs": ("jobs:read", "{ jobs { edges { cursor } } }"),
    "generateSpeech": ("jobs:write", 'mutation { generateSpeech(input: {text: "hi"}) { job { id } } }'),
    "startExport": ("jobs:write", "mutation { startExport(input: {}) { job { id } } }"),
    "cancelJob": ("jobs:write", f'mutation {{ cancelJob(id: "{JOB}") {{ userErrors {{ code }} }} }}'),
    "deleteJob": ("jobs:write", f'mutation {{ deleteJob(id: "{JOB}") {{ userErrors {{ code }} }} }}'),
    "webhookEndpoints": ("webhooks:manage", "{ webhookEndpoints { id } }"),
    "webhookEndpoint": ("webhooks:manage", f'{{ webhookEndpoint(id: "{WHE}") {{ id }} }}'),
    "createWebhookEndpoint": (
        "webhooks:manage",
        'mutation { createWebhookEndpoint(input: {url: "http://127.0.0.1:9/s"}) { userErrors { code } } }',
    ),
    "updateWebhookEndpoint": (
        "webhooks:manage",
        f'mutation {{ updateWebhookEndpoint(id: "{WHE}", input: {{}}) {{ userErrors {{ code }} }} }}',
    ),
    "deleteWebhookEndpoint": (
        "webhooks:manage",
        f'mutation {{ deleteWebhookEndpoint(id: "{WHE}") {{ userErrors {{ code }} }} }}',
    ),
    "rotateWebhookSecret": (
        "webhooks:manage",
        f'mutation {{ rotateWebhookSecret(id: "{WHE}") {{ userErrors {{ code }} }} }}',
    ),
    "sendTestWebhook": (
        "webhooks:manage",
        f'mutation {{ sendTestWebhook(endpointId: "{WHE}") {{ userErrors {{ code }} }} }}',
    ),
    "redeliverWebhook": (
        "webhooks:manage",
        f'mutation {{ redeliverWebhook(eventId: "{EVT}", endpointId: "{WHE}") {{ userErrors {{ code }} }} }}',
    ),
    "recoverWebhooks": (
        "webhooks:manage",
        f'mutation {{ recoverWebhooks(endpointId: "{WHE}", since: "2000-01-01T00:00:00Z") {{ count }} }}',
    ),
}
SCOPES = ["jobs:read", "jobs:write", "webhooks:manage", "portal"]


@pytest.fixture
def keys_by_scope(tenant: TenantHandle) -> dict[str, str]:
    """One key per single scope, all of one tenant."""
    keys = {}
    with session_scope() as session:
        for scope in SCOPES:
            keys[scope] = create_key(
                session, tenant.id, server_secret=get_settings().secret_key, scopes=[scope]
            ).full_key
    return keys


def _codes(body: dict[str, Any]) -> set[str]:
    return {error.get("extensions", {}).get("code") for error in body.get("errors", [])}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_each_operation_needs_its_scope(
    operation: str, keys_by_scope: dict[str, str], client_for: Callable[[str | None], GraphQLClient]
) -> None:
    needed, document = OPERATIONS[operation]
    for scope, key in keys_by_scope.items():
        body = client_for(key).post(document).json()
        if needed is None or scope == needed:
            assert "errors" not in body, (scope, body)
        else:
            assert _codes(body) == {"FORBIDDEN"}, (scope, body)
            assert not any((body.get("data") or {}).values())


def test_job_updates_needs_jobs_read(api: ApiProcess, keys_by_scope: dict[str, str]) -> None:
    for scope, key in keys_by_scope.items():
        message = _subscribe(api, key, JOB)
        [error] = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
        expected = "NOT_FOUND" if scope == "jobs:read" else "FORBIDDEN"
        assert error["extensions"]["code"] == expected, (scope, message)


def _last_used(key_id: str) -> datetime | None:
    with session_scope() as session:
        key = session.get(ApiKey, key_id)
        assert key is not None
        return key.last_used_at


def test_last_use_is_recorded_once_per_period_and_flushed_by_the_scheduler(
    gql: GraphQLClient, tenant: TenantHandle, env: dict[str, str]
) -> None:
    redis = get_redis()
    assert _last_used(tenant.key_id) is None
    gql("{ viewer { id } }")
    assert redis.hget(LAST_USED_HASH, tenant.key_id) is not None  # in Redis, not yet in Postgres
    assert _last_used(tenant.key_id) is None
    run_once()
    used = _last_used(tenant.key_id)
    assert used is not None
    assert abs(datetime.now(UTC) - used) < timedelta(minutes=1)
    assert redis.hget(LAST_USED_HASH, tenant.key_id) is None
    for _ in range(5):  # within the period: the "seen" marker makes these no writes at all
        gql("{ viewer { id } }")
    assert redis.hget(LAST_USED_HASH, tenant.key_id) is None
    ttl = int(redis.ttl(f"apikeys:seen:{tenant.key_id}"))
    assert 0 < ttl <= get_settings().key_last_used_resolution_seconds
    listed = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "list", "--tenant", tenant.id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    [row] = json.loads(listed.stdout)
    assert row["key_id"] == tenant.key_id
    assert row["last_used_at"] == used.isoformat()
    assert tenant.api_key not in listed.stdout
    assert tenant.api_key.split("_", 2)[2] not in listed.stdout
