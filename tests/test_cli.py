"""The operator CLI as an operator runs it: a subprocess with the environment's URLs."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.servers import ApiProcess

VIEWER = {"query": "{ viewer { id name scopes } }"}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_tenants_create_prints_a_working_key_once_and_keys_can_be_added_and_revoked(
    env: dict[str, str], api: ApiProcess
) -> None:
    created = _cli(env, "tenants", "create", "globex", "--json")
    assert created.returncode == 0, created.stderr
    tenant = json.loads(created.stdout)
    assert tenant["tenant_id"].startswith("ten_")
    assert tenant["api_key"].startswith("ck_")
    assert tenant["api_key"] not in created.stderr  # shown once, on stdout only

    viewer = httpx.post(
        f"{api.url}/graphql", json=VIEWER, headers={"authorization": f"Bearer {tenant['api_key']}"}
    )
    assert viewer.json()["data"]["viewer"]["name"] == "globex"

    added = _cli(env, "keys", "create", "--tenant", tenant["tenant_id"], "--scope", "jobs:read", "--json")
    assert added.returncode == 0, added.stderr
    key = json.loads(added.stdout)
    headers = {"authorization": f"Bearer {key['api_key']}"}
    assert httpx.post(f"{api.url}/graphql", json=VIEWER, headers=headers).json()["data"]["viewer"][
        "scopes"
    ] == ["jobs:read"]

    revoked = _cli(env, "keys", "revoke", key["key_id"])
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.post(f"{api.url}/graphql", json=VIEWER, headers=headers).status_code == 401


def test_cli_errors_are_clear(env: dict[str, str]) -> None:
    bad_scope = _cli(env, "keys", "create", "--tenant", "ten_missing", "--scope", "jobs:read")
    assert bad_scope.returncode == 2
    assert "NOT_FOUND" in bad_scope.stderr
    assert "Traceback" not in bad_scope.stderr
    empty = _cli(env, "tenants", "create", "   ")
    assert empty.returncode == 2
    assert "VALIDATION" in empty.stderr
