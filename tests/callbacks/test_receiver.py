"""The example receiver under real uvicorn: verified deliveries are handled once, bad ones refused."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from callbacks.keys import generate_keypair, generate_secret
from callbacks.signing import build_headers

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Receiver:
    url: str
    signing_key: str
    redis_url: str | None
    log: Path

    def deliver(self, event_id: str, payload: dict[str, Any], timestamp: int | None = None) -> httpx.Response:
        body = json.dumps(payload).encode()
        headers = build_headers(event_id, timestamp or int(time.time()), body, self.signing_key)
        return httpx.post(f"{self.url}/webhooks", content=body, headers=headers)

    def events(self) -> list[dict[str, object]]:
        events: list[dict[str, object]] = httpx.get(f"{self.url}/events").json()
        return events


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module", params=["memory+whsec", "redis+whpk"])
def receiver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """`python -m callbacks.examples.receiver` on a free port, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WEBHOOK_SECRET")}
    if request.param == "memory+whsec":
        signing_key = verifying_key = generate_secret()
        redis_url = None
    else:
        signing_key, verifying_key = generate_keypair()
        redis_url = env["REDIS_URL"] = request.getfixturevalue("redis_url")
    port = free_port()
    log = tmp_path_factory.mktemp("receiver") / "receiver.log"
    env |= {"WEBHOOK_SECRET": f"{generate_secret()},{verifying_key}", "PORT": str(port)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "callbacks.examples.receiver"], cwd=REPO, env=env, stdout=out, stderr=out
        )
    receiver = Receiver(f"http://127.0.0.1:{port}", signing_key, redis_url, log)
    deadline = time.monotonic() + 20
    while True:
        try:
            receiver.events()
            break
        except httpx.TransportError:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    yield receiver
    process.terminate()
    process.wait(10)


def test_a_valid_delivery_is_handled_and_a_redelivery_only_acknowledged(receiver: Receiver) -> None:
    event_id = f"evt_{uuid.uuid4().hex}"
    payload = {"type": "job.succeeded", "timestamp": "2026-01-01T00:00:00Z", "data": {"jobId": "job_1"}}
    first = receiver.deliver(event_id, payload)
    assert first.status_code == 200, first.text
    assert first.json() == {"status": "processed"}
    # A retry carries the same webhook-id with a new timestamp and signature.
    again = receiver.deliver(event_id, payload, timestamp=int(time.time()) - 10)
    assert again.status_code == 200, again.text
    assert again.json() == {"status": "duplicate"}
    assert [e for e in receiver.events() if e["webhook_id"] == event_id] == [
        {"webhook_id": event_id, **payload}
    ]
    if receiver.redis_url:
        with Redis.from_url(receiver.redis_url) as redis:
            assert redis.get(f"webhook-dedupe:{event_id}") == b"done"


def test_a_bad_signature_is_refused_and_not_handled(receiver: Receiver) -> None:
    event_id = f"evt_{uuid.uuid4().hex}"
    body = b'{"type": "webhook.test", "data": {}}'
    headers = build_headers(event_id, int(time.time()), body, receiver.signing_key)
    response = httpx.post(
        f"{receiver.url}/webhooks", content=body.replace(b"{}", b'{"x": 1}'), headers=headers
    )
    assert response.status_code == 400
    assert response.json()["error"] == "NO_MATCHING_SIGNATURE"
    assert all(e["webhook_id"] != event_id for e in receiver.events())


def test_a_stale_delivery_is_refused(receiver: Receiver) -> None:
    response = receiver.deliver(f"evt_{uuid.uuid4().hex}", {"type": "webhook.test"}, int(time.time()) - 3600)
    assert response.status_code == 400
    assert response.json()["error"] == "TIMESTAMP_TOO_OLD"


def test_a_delivery_without_signature_headers_is_refused(receiver: Receiver) -> None:
    response = httpx.post(f"{receiver.url}/webhooks", json={"type": "webhook.test"})
    assert response.status_code == 400
    assert response.json()["error"] == "MISSING_HEADER"


def test_the_receiver_refuses_to_start_with_a_malformed_key() -> None:
    env = {**os.environ, "WEBHOOK_SECRET": "whsec_tooshort"}
    result = subprocess.run(
        [sys.executable, "-m", "callbacks.examples.receiver"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert b"WEBHOOK_SECRET: a webhook secret must decode to 24-64 bytes" in result.stderr


SIGNATURE = b"v1a," + b"A" * 86 + b"=="
HOSTILE_HEADERS: dict[str, dict[str, bytes]] = {
    "a 5,000-digit timestamp": {"webhook-timestamp": b"9" * 5_000},
    "a timestamp in Arabic-Indic digits": {"webhook-timestamp": "\u0661\u0667".encode() * 5},
    "a timestamp in latin-1 superscripts": {"webhook-timestamp": b"\xb9\xb2\xb3"},
    "a thousand signatures": {"webhook-signature": b" ".join([SIGNATURE] * 1_000)},
    "seventeen signatures": {"webhook-signature": b" ".join([SIGNATURE] * 17)},
    "junk schemes": {"webhook-signature": b"v9,abc ,,, v1, v1a,@@@ \tv1,=="},
    "non-ASCII base64": {"webhook-signature": b"v1," + "\u00e9".encode() * 40},
    "an overlong webhook-id": {"webhook-id": b"evt_" + b"x" * 8_000},
    "a webhook-id of non-ASCII bytes": {"webhook-id": b"evt_\xff\xfe"},
    "a webhook-id with inner whitespace": {"webhook-id": b"evt_1\tevt_2"},
}


@pytest.mark.parametrize("hostile", HOSTILE_HEADERS.values(), ids=HOSTILE_HEADERS.keys())
def test_hostile_headers_get_a_4xx_never_a_5xx(receiver: Receiver, hostile: dict[str, bytes]) -> None:
    body = b'{"type": "webhook.test", "data": {}}'
    event_id = f"evt_{uuid.uuid4().hex}"
    genuine = build_headers(event_id, int(time.time()), body, receiver.signing_key)
    headers = {name.encode(): value.encode() for name, value in genuine.items()}
    headers |= {name.encode(): value for name, value in hostile.items()}
    response = httpx.post(f"{receiver.url}/webhooks", content=body, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert all(e["webhook_id"] != event_id for e in receiver.events())
