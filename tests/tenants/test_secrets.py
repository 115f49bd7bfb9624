"""Secrets at rest and in logs: webhook secrets re-encrypted under a new ENCRYPTION_KEYS key by
`claimcheck secrets rotate`; and no API key or webhook secret in any log line of a full flow."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet, InvalidToken

from service.crypto import derived_key
from service.db import session_scope
from service.webhooks.models import WebhookEndpoint
from tests.conftest import JOB_QUERY, SPEECH_MUTATION, GraphQLClient
from tests.receiver import Receiver
from tests.servers import ApiProcess, ServiceProcess

CREATE = """
mutation C($url: String!) {
  createWebhookEndpoint(input: {url: $url}) { endpoint { id } secret userErrors { code } }
}
"""
ROTATE = """
mutation R($id: ID!) { rotateWebhookSecret(id: $id, keepOldForSeconds: 60) { secret userErrors { code } } }
"""
TEST = "mutation T($id: ID!) { sendTestWebhook(endpointId: $id) { delivery { id } userErrors { code } } }"


def _cli(env: dict[str, str], *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        check=True,
    )


def _stored_tokens(endpoint_id: str) -> list[str]:
    with session_scope() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None
        return [entry["key"] for entry in endpoint.signing_keys]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def test_secrets_rotate_reencrypts_every_endpoint_with_the_newest_key(
    gql: GraphQLClient, env: dict[str, str]
) -> None:
    created = gql(CREATE, {"url": "http://127.0.0.1:9/rotate"})["createWebhookEndpoint"]
    endpoint_id, secret = created["endpoint"]["id"], created["secret"]
    old = derived_key(env["SECRET_KEY"])  # the processes run without ENCRYPTION_KEYS: the derived key
    new = Fernet.generate_key()
    [token] = _stored_tokens(endpoint_id)
    assert secret not in token
    assert Fernet(old).decrypt(token.encode()).decode() == secret
    try:
        out = _cli(env, "secrets", "rotate", ENCRYPTION_KEYS=f"{new.decode()},{old.decode()}").stdout
        assert "re-encrypted" in out
        assert int(out.split()[0]) >= 1
        [rotated] = _stored_tokens(endpoint_id)
        assert rotated != token
        assert Fernet(new).decrypt(rotated.encode()).decode() == secret
        with pytest.raises(InvalidToken):
            Fernet(old).decrypt(rotated.encode())
    finally:  # back to the key the running API and worker hold
        _cli(env, "secrets", "rotate", ENCRYPTION_KEYS=f"{old.decode()},{new.decode()}")
    [restored] = _stored_tokens(endpoint_id)
    assert Fernet(old).decrypt(restored.encode()).decode() == secret


def test_no_key_or_secret_appears_in_any_log_line_of_a_full_flow(
    api: ApiProcess, worker: ServiceProcess, env: dict[str, str], receiver: Receiver
) -> None:
    created = _cli(env, "tenants", "create", "leak-check", "--json")
    api_key = json.loads(created.stdout)["api_key"]
    secrets = [api_key, api_key.split("_", 2)[2]]
    cli_logs = created.stderr
    client = GraphQLClient(api.url, api_key)
    try:
        endpoint = client(CREATE, {"url": f"{receiver.url}/leak"})["createWebhookEndpoint"]
        endpoint_id = endpoint["endpoint"]["id"]
        secrets.append(endpoint["secret"])
        job_id = client(SPEECH_MUTATION, {"input": {"text": "Nothing to see here."}})["generateSpeech"][
            "job"
        ]["id"]
        assert client.wait_for_job(job_id)["status"] == "SUCCEEDED"
        client(JOB_QUERY, {"id": job_id})  # with its download URL
        secrets.append(client(ROTATE, {"id": endpoint_id})["rotateWebhookSecret"]["secret"])
        assert client(TEST, {"id": endpoint_id})["sendTestWebhook"]["userErrors"] == []
        deadline = time.monotonic() + 30
        while not any(b"webhook.test" in r.body for r in receiver.at("/leak")):
            assert time.monotonic() < deadline, "the test webhook never arrived"
            time.sleep(0.1)
    finally:
        client.http.close()
    for whsec in [s for s in secrets if s.startswith("whsec_")]:
        raw = whsec.removeprefix("whsec_")
        secrets += [raw, base64.b64decode(raw).hex()]
    logs = {"api": api.log(), "worker": worker.log(), "cli": cli_logs}
    assert len(logs["api"]) > 0
    assert len(logs["worker"]) > 0
    for name, text in logs.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:8]}...) appears in the {name} log"
