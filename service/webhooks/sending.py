"""Sending one webhook attempt over HTTP: body, Standard Webhooks signature, SSRF check, pinned connection.

Each host name gets its own pooled client (keep-alive, and TLS names never mixed). The address is
resolved and checked here, then connected to directly, so a name cannot be re-pointed at an internal
address between the check and the connection (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import InvalidToken
from opentelemetry.trace import SpanKind, Status, StatusCode

from callbacks.errors import MalformedKeyError
from callbacks.signing import build_headers
from observability.forks import ForkSafeExecutor
from observability.metrics import attempt_outcome, record_webhook_attempt, record_webhook_delivered
from observability.tracing import continue_trace, get_tracer, inject
from service.crypto import decrypt
from service.models import utcnow
from service.outages import describe
from service.settings import Settings
from service.storage.factory import get_storage
from service.webhooks.delivery import Claimed, Failure, Outcome, clean_body
from service.webhooks.retry import parse_retry_after
from service.webhooks.service import keys_in_use
from service.webhooks.ssrf import UnsafeURLError, check_url, pinned_url, resolve_within_async
from service.webhooks.transport import Pool, TransportError, default_ssl_context, request_bytes

log = logging.getLogger(__name__)

MAX_CLIENTS = 256
"""Connection pools kept (one per checked origin), the least recently used closed first."""
MAX_RESOLVED = 1024
MAX_PINS = 4096
"""Checked URLs kept (each at most as long as the address it resolved to)."""
MAX_DECRYPTED = 1024
RESOLVE_TTL_SECONDS = 60.0
SIGNING_THREADS = 16


def active_keys(signing_keys: list[dict[str, Any]], now: datetime) -> list[str]:
    """The decrypted keys that sign now: the newest, and older ones still inside their overlap."""
    return [_decrypted(entry["key"]) for entry in keys_in_use(signing_keys, now)]


@lru_cache(maxsize=MAX_DECRYPTED)
def _decrypted(token: str) -> str:
    """A stored key decrypted, once per stored (encrypted) form: the same ciphertext always decrypts
    to the same key, and a rotated key is a new ciphertext. A failure is not kept."""
    return decrypt(token)


def signs_a_download_url(claimed: Claimed) -> bool:
    """Whether the body carries a download URL signed for this attempt (a job.succeeded with a file)."""
    return carries_download_url(claimed.event_type, claimed.event_data, claimed.artifact_key)


def carries_download_url(event_type: str, data: dict[str, Any], artifact_key: str | None) -> bool:
    """Whether this event's body gets a download URL signed for each attempt."""
    if event_type != "job.succeeded" or not artifact_key:
        return False
    return bool((data.get("job") or {}).get("artifact"))


def payload(claimed: Claimed, settings: Settings) -> bytes:
    """The JSON body; a job.succeeded event gets a download URL fresh for this attempt. Signing it may
    block (an RSA signature, or an IAM signBlob call): call this off the event loop when
    `signs_a_download_url`."""
    return event_body(
        claimed.event_type, claimed.event_created_at, claimed.event_data, claimed.artifact_key, settings
    )


def event_body(
    event_type: str, created_at: datetime, data: dict[str, Any], artifact_key: str | None, settings: Settings
) -> bytes:
    """An event's JSON body as every delivery of it is sent (and the webhookEvents subscription streams
    it); a job.succeeded with a file gets a fresh download URL, which may block to sign."""
    if carries_download_url(event_type, data, artifact_key):
        assert artifact_key is not None
        artifact = data["job"]["artifact"]
        with get_tracer().start_as_current_span("storage.sign_url"):
            url = get_storage().signed_url(
                artifact_key,
                filename=artifact["filename"],
                content_type=artifact["contentType"],
                expires_in=settings.download_url_default_expiry,
            )
        data = {**data, "job": {**data["job"], "artifact": {**artifact, "downloadUrl": url}}}
    body = {"type": event_type, "timestamp": created_at.isoformat(), "data": data}
    return json.dumps(body, separators=(",", ":")).encode()


def unprepared(error: Exception) -> str:
    """Why a request could not be prepared, fit for the attempt's error (no secret in it)."""
    if isinstance(error, InvalidToken):
        return "not sent: the endpoint's signing key cannot be decrypted with ENCRYPTION_KEYS"
    if isinstance(error, MalformedKeyError):
        return "not sent: the endpoint's signing key cannot sign (it is malformed)"
    return f"not sent: preparing the request failed ({type(error).__name__})"


MAX_STORED_HEADERS = 50
MAX_HEADER_VALUE = 1000


def stored_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers fit to store with an attempt: lower-case names, repeated ones joined, at most
    MAX_STORED_HEADERS, each value cut to MAX_HEADER_VALUE characters, no NUL bytes."""
    headers: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        if key not in headers and len(headers) >= MAX_STORED_HEADERS:
            continue
        joined = f"{headers[key]}, {value}" if key in headers else value
        headers[key] = joined[:MAX_HEADER_VALUE].replace("\x00", "")
    return headers


class AddressCache:
    """Checked addresses by (host, port), each kept `ttl` seconds; at most `size`, the least recently
    used evicted first."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[tuple[str, int], tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, host: str, port: int) -> str | None:
        entry = self.entry(host, port)
        return None if entry is None else entry[0]

    def entry(self, host: str, port: int) -> tuple[str, float] | None:
        """(address, when it expires on this cache's clock), or None."""
        entry = self._entries.get((host, port))
        if entry is None:
            return None
        if entry[1] <= self.clock():
            del self._entries[(host, port)]
            return None
        self._entries.move_to_end((host, port))
        return entry

    def put(self, host: str, port: int, address: str) -> None:
        self._entries[(host, port)] = (address, self.clock() + self.ttl)
        self._entries.move_to_end((host, port))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


@dataclass(frozen=True, slots=True)
class _Pin:
    """A checked URL aimed at its checked address: the pool key, the request target and Host header."""

    origin: tuple[str, str, int, str, str | None]
    """(scheme, address, port, Host header, TLS server name): requests that may share connections."""
    target: str
    host_header: str
    expires: float
    """When the address it was aimed at must be looked up again."""


class Sender:
    """Sends claimed deliveries; never raises for anything the receiver, the network, or the endpoint's
    stored settings do: each becomes a failed attempt with its reason."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pools: OrderedDict[tuple[str, str, int, str, str | None], Pool] = OrderedDict()
        self._resolved = AddressCache(MAX_RESOLVED, RESOLVE_TTL_SECONDS)
        self._pins: OrderedDict[str, _Pin] = OrderedDict()
        self._ssl_context = default_ssl_context()
        self._signing = ForkSafeExecutor(SIGNING_THREADS, thread_name_prefix="webhook-signing")

    async def send(self, claimed: Claimed) -> Outcome:
        """One attempt, in a client span continuing the event's trace (its first attempt) or linking
        to it (retries and manual redeliveries); the receiver gets that span's `traceparent`."""
        retry = claimed.attempt_count > 0 or claimed.trigger != "scheduled"
        attributes = {"webhook.event_id": claimed.event_id, "webhook.endpoint_id": claimed.endpoint_id}
        with continue_trace(
            "webhook.attempt",
            claimed.trace_context,
            kind=SpanKind.CLIENT,
            link_only=retry,
            job_id=claimed.job_id,
            tenant_id=claimed.tenant_id,
            attributes={**attributes, "webhook.event_type": claimed.event_type},
        ) as span:
            result = await self._attempt(claimed)
            if result.status_code is not None:
                span.set_attribute("http.response.status_code", result.status_code)
            if result.error:
                span.set_status(Status(StatusCode.ERROR, result.error))
        if result.attempted:
            outcome = attempt_outcome(
                result.status_code,
                timed_out=result.failure is Failure.TIMEOUT,
                refused=result.failure is Failure.REFUSED,
                not_sent=result.failure is Failure.NOT_SENT,
            )
            record_webhook_attempt(
                outcome,
                duration_seconds=result.duration_ms / 1000,
                status_code=result.status_code,
                trigger=claimed.trigger,
                tenant_id=claimed.tenant_id,
            )
            if result.succeeded:
                latency = (utcnow() - claimed.event_created_at).total_seconds()
                record_webhook_delivered(claimed.event_type, latency)
        return result

    async def _attempt(self, claimed: Claimed) -> Outcome:
        started = time.perf_counter()
        at = utcnow()

        def outcome(**fields: Any) -> Outcome:
            duration = int((time.perf_counter() - started) * 1000)
            return Outcome(claimed=claimed, at=at, duration_ms=duration, **fields)

        if not claimed.endpoint_enabled:
            return outcome(error="endpoint disabled", attempted=False)
        try:
            pin = await self._pin(claimed.url)
            body = await self._body(claimed)
            keys = active_keys(claimed.signing_keys, at)
            headers = build_headers(claimed.event_id, int(time.time()), body, keys)
            headers.update(inject(include_baggage=False))  # traceparent: the receiver continues the trace
            headers["host"] = pin.host_header
            request = request_bytes(pin.target, headers.items(), body)
        except UnsafeURLError as error:
            return outcome(error=f"refused: {error}", failure=Failure.REFUSED)
        except Exception as error:
            expected = isinstance(error, InvalidToken | MalformedKeyError)  # a traceback would tell no more
            log.warning(
                "delivery %s not sent: %s", claimed.delivery_id, describe(error), exc_info=not expected
            )
            return outcome(error=unprepared(error), failure=Failure.NOT_SENT)
        sent = stored_headers(headers.items())
        pool = self._pool(pin)
        deadline = claimed.timeout_seconds or self.settings.webhook_timeout_seconds
        try:
            async with asyncio.timeout(deadline):
                response = await pool.send(request, connect_timeout=min(5.0, deadline))
        except TimeoutError:
            return outcome(
                error=f"no response within {deadline:g} s", failure=Failure.TIMEOUT, request_headers=sent
            )
        except TransportError as error:
            return outcome(error=str(error), request_headers=sent)
        redirect = response.header("location") if response.is_redirect else None
        return outcome(
            status_code=response.status_code,
            error=f"redirect to {redirect} not followed" if redirect else None,
            response_body=clean_body(response.body),
            retry_after=parse_retry_after(response.header("retry-after")),
            request_headers=sent,
            response_headers=stored_headers(response.headers),
        )

    async def _body(self, claimed: Claimed) -> bytes:
        """The body, signed URL and all; signing runs on threads of its own, so the loop never waits
        on it and a slow signer cannot take the threads database work runs on."""
        if not signs_a_download_url(claimed):
            return payload(claimed, self.settings)
        context = contextvars.copy_context()  # the attempt's span is the signing span's parent
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._signing, context.run, payload, claimed, self.settings)

    async def _pin(self, url: str) -> _Pin:
        """Check the URL, resolve its host to one public (or allowed) address, and aim at that address.
        The check of a URL is kept as long as the address it resolved to (RESOLVE_TTL_SECONDS at most)."""
        pin = self._pins.get(url)
        if pin is not None:
            if pin.expires > time.monotonic():
                self._pins.move_to_end(url)
                return pin
            del self._pins[url]
        allowed = self.settings.webhook_allowed_networks
        target = check_url(url, allowed_cidrs=allowed, allow_http=self.settings.webhook_allow_http)
        found = self._resolved.entry(target.host, target.port)
        if found is None:
            timeout = self.settings.webhook_resolve_timeout_seconds
            addresses = await resolve_within_async(target.host, target.port, allowed, timeout=timeout)
            self._resolved.put(target.host, target.port, str(addresses[0]))
            found = self._resolved.entry(target.host, target.port)
            assert found is not None
        address, expires = found
        pinned = pinned_url(url, address)
        parts = urlsplit(pinned.url)
        request_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        origin = (target.scheme, address, target.port, pinned.host_header, pinned.sni_hostname)
        pin = _Pin(origin, request_target, pinned.host_header, expires)
        self._pins[url] = pin
        if len(self._pins) > MAX_PINS:
            self._pins.popitem(last=False)
        return pin

    def _pool(self, pin: _Pin) -> Pool:
        pool = self._pools.get(pin.origin)
        if pool is not None:
            self._pools.move_to_end(pin.origin)
            return pool
        scheme, address, port, _, sni_hostname = pin.origin
        # The deliverer caps requests per endpoint; the pool keeps as many idle as may be in flight.
        idle = self.settings.webhook_max_in_flight
        pool = Pool(scheme, address, port, sni_hostname, self._ssl_context, idle)
        self._pools[pin.origin] = pool
        if len(self._pools) > MAX_CLIENTS:
            _, oldest = self._pools.popitem(last=False)
            oldest.close()
        return pool

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._signing.shutdown(wait=False)
