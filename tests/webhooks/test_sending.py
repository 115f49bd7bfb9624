"""Sending one attempt: a request that cannot even be prepared is a failed attempt with its reason; the
cache of checked addresses stays bounded; signing a download URL never blocks the event loop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.fernet import Fernet

from callbacks.keys import generate_secret
from service.crypto import encrypt
from service.db import session_scope
from service.ids import new_id
from service.models import utcnow
from service.settings import get_settings
from service.webhooks import sending
from service.webhooks.delivery import Claimed
from service.webhooks.models import WebhookEndpoint
from service.webhooks.sending import AddressCache, Sender
from tests.conftest import GraphQLClient
from tests.receiver import Receiver
from tests.servers import ServiceProcess
from tests.webhooks.support import create_endpoint, delete_endpoint, send_test, wait_for_delivery


def _replace_key(endpoint_id: str, stored: str) -> None:
    with session_scope() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None
        endpoint.signing_keys = [{"key": stored, "expires_at": None}]
        session.add(endpoint)


def _lost_key() -> str:
    """A key encrypted under a key ENCRYPTION_KEYS no longer has."""
    return Fernet(Fernet.generate_key()).encrypt(b"whsec_" + b"A" * 32).decode()


def _malformed_key() -> str:
    """A key that decrypts but is no signing key."""
    return encrypt("not-a-key")


@pytest.mark.parametrize(
    ("stored", "reason"),
    [(_lost_key, "cannot be decrypted"), (_malformed_key, "cannot sign")],
    ids=["undecryptable", "malformed"],
)
def test_a_key_that_cannot_sign_makes_failed_attempts_with_the_reason_on_the_retry_schedule(
    gql: GraphQLClient,
    receiver: Receiver,
    path: str,
    worker: ServiceProcess,
    stored: Callable[[], str],
    reason: str,
) -> None:
    endpoint_id = create_endpoint(gql, receiver.url + path, eventTypes=["webhook.test"])["endpoint"]["id"]
    _replace_key(endpoint_id, stored())
    send_test(gql, endpoint_id)
    try:
        failed = wait_for_delivery(gql, endpoint_id, lambda d: d["status"] == "FAILED", timeout=15)
    finally:
        delete_endpoint(gql, endpoint_id)  # `claimcheck secrets rotate` would stop at its key
    attempts = failed["attempts"]
    assert len(attempts) == 4  # the whole [0, 1, 1, 1] schedule, as for any failure
    assert all(attempt["statusCode"] is None for attempt in attempts)
    assert all(reason in attempt["error"] for attempt in attempts), attempts
    assert receiver.at(path) == []  # nothing unsigned ever leaves


def test_the_address_cache_forgets_the_least_recently_used_and_the_expired() -> None:
    now = [0.0]
    cache = AddressCache(size=3, ttl=60, clock=lambda: now[0])
    for n in range(3):
        cache.put(f"host{n}.example", 443, f"8.8.8.{n}")
    assert cache.get("host0.example", 443) == "8.8.8.0"  # now the most recently used
    cache.put("host3.example", 443, "8.8.8.3")
    assert len(cache) == 3
    assert cache.get("host1.example", 443) is None  # the least recently used went
    assert cache.get("host0.example", 443) == "8.8.8.0"
    assert cache.get("host0.example", 8443) is None  # the port is part of the key
    now[0] = 60.0
    assert cache.get("host0.example", 443) is None
    assert len(cache) == 2  # an expired entry is dropped when met
    for n in range(10_000):
        cache.put(f"many{n}.example", 443, "8.8.4.4")
    assert len(cache) == 3


class SlowSigner:
    """Storage whose URL signing blocks, as an IAM signBlob call under load does."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def signed_url(self, key: str, *, filename: str, content_type: str, expires_in: int) -> str:
        time.sleep(self.seconds)
        return f"https://storage.example/{key}?filename={filename}&type={content_type}&expires={expires_in}"


def _claimed(url: str, event_type: str, data: dict[str, Any], artifact_key: str | None) -> Claimed:
    return Claimed(
        delivery_id=new_id("whd"),
        tenant_id=new_id("ten"),
        endpoint_id=new_id("whe"),
        attempt_count=0,
        trigger="scheduled",
        event_id=new_id("evt"),
        event_type=event_type,
        event_data=data,
        event_created_at=utcnow(),
        job_id=None,
        url=url,
        endpoint_enabled=True,
        signing_keys=[{"key": encrypt(generate_secret()), "expires_at": None}],
        artifact_key=artifact_key,
    )


def test_a_slow_url_signature_holds_up_neither_the_event_loop_nor_other_deliveries(
    env: dict[str, str], receiver: Receiver, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    signing_seconds = 1.0
    monkeypatch.setattr(sending, "get_storage", lambda: SlowSigner(signing_seconds))
    artifact = {"filename": "out.wav", "contentType": "audio/wav"}
    succeeded = _claimed(
        receiver.url + path + "/succeeded",
        "job.succeeded",
        {"job": {"id": "job_1", "artifact": artifact}},
        "tenants/t/jobs/j/out.wav",
    )
    test_event = _claimed(receiver.url + path + "/test", "webhook.test", {}, None)

    async def send_both() -> tuple[float, float, float]:
        sender = Sender(get_settings())
        lags: list[float] = []

        async def heartbeat() -> None:
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(time.perf_counter() - before - 0.01)

        beating = asyncio.create_task(heartbeat())
        started = time.perf_counter()
        slow = asyncio.create_task(sender.send(succeeded))
        await asyncio.sleep(0.05)  # the signature is under way
        fast = await sender.send(test_event)
        fast_done = time.perf_counter() - started
        assert fast.status_code == 200
        assert (await slow).status_code == 200
        slow_done = time.perf_counter() - started
        beating.cancel()
        await sender.aclose()
        return fast_done, slow_done, max(lags)

    fast_done, slow_done, worst_lag = asyncio.run(send_both())
    assert slow_done >= signing_seconds
    assert fast_done < signing_seconds / 2, fast_done
    assert worst_lag < signing_seconds / 4, worst_lag
    [received] = receiver.at(path + "/succeeded")
    assert json.loads(received.body)["data"]["job"]["artifact"]["downloadUrl"].startswith(
        "https://storage.example/tenants/t/jobs/j/out.wav"
    )
