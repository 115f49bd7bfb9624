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
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
from cryptography.fernet import InvalidToken
from opentelemetry.trace import SpanKind, Status, StatusCode

from callbacks.errors import MalformedKeyError
from callbacks.signing import build_headers
from observability.metrics import attempt_outcome, record_webhook_attempt, record_webhook_delivered
from observability.tracing import continue_trace, get_tracer, inject
from service.crypto import decrypt
from service.models import utcnow
from service.outages import describe
from service.settings import Settings
from service.storage.factory import get_storage
from service.webhooks.delivery import RESPONSE_BODY_LIMIT, Claimed, Failure, Outcome, clean_body
from service.webhooks.retry import parse_retry_after
from service.webhooks.service import keys_in_use
from service.webhooks.ssrf import UnsafeURLError, check_url, pinned_url, resolve_within_async
from service.webhooks.transport import Transport

log = logging.getLogger(__name__)

MAX_CLIENTS = 256
MAX_RESOLVED = 1024
RESOLVE_TTL_SECONDS = 60.0
SIGNING_THREADS = 16


def active_keys(signing_keys: list[dict[str, Any]], now: datetime) -> list[str]:
    """The decrypted keys that sign now: the newest, and older ones still inside their overlap."""
    return [decrypt(entry["key"]) for entry in keys_in_use(signing_keys, now)]


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
        entry = self._entries.get((host, port))
        if entry is None:
            return None
        if entry[1] <= self.clock():
            del self._entries[(host, port)]
            return None
        self._entries.move_to_end((host, port))
        return entry[0]

    def put(self, host: str, port: int, address: str) -> None:
        self._entries[(host, port)] = (address, self.clock() + self.ttl)
        self._entries.move_to_end((host, port))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class Sender:
    """Sends claimed deliveries; never raises for anything the receiver, the network, or the endpoint's
    stored settings do: each becomes a failed attempt with its reason."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._resolved = AddressCache(MAX_RESOLVED, RESOLVE_TTL_SECONDS)
        self._signing = ThreadPoolExecutor(SIGNING_THREADS, thread_name_prefix="webhook-signing")

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
            target, host_header, sni_hostname = await self._pin(claimed.url)
            body = await self._body(claimed)
            keys = active_keys(claimed.signing_keys, at)
            headers = build_headers(claimed.event_id, int(time.time()), body, keys)
        except UnsafeURLError as error:
            return outcome(error=f"refused: {error}", failure=Failure.REFUSED)
        except Exception as error:
            expected = isinstance(error, InvalidToken | MalformedKeyError)  # a traceback would tell no more
            log.warning(
                "delivery %s not sent: %s", claimed.delivery_id, describe(error), exc_info=not expected
            )
            return outcome(error=unprepared(error), failure=Failure.NOT_SENT)
        headers.update(inject(include_baggage=False))  # traceparent: the receiver continues the trace
        headers["host"] = host_header
        sent = stored_headers(headers.items())
        extensions = {"sni_hostname": sni_hostname} if sni_hostname else {}
        client = self._client(host_header)
        deadline = claimed.timeout_seconds or self.settings.webhook_timeout_seconds
        try:
            async with asyncio.timeout(deadline):
                request = client.build_request(
                    "POST",
                    target,
                    content=body,
                    headers=headers,
                    extensions=extensions,
                    timeout=httpx.Timeout(deadline, connect=min(5.0, deadline)),
                )
                response = await client.send(request, stream=True)
                try:
                    raw = await _read_prefix(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return outcome(
                error=f"no response within {deadline:g} s", failure=Failure.TIMEOUT, request_headers=sent
            )
        except httpx.HTTPError as error:
            return outcome(
                error=f"{type(error).__name__}: {error}" if str(error) else type(error).__name__,
                request_headers=sent,
            )
        redirect = response.headers.get("location", "?") if response.is_redirect else None
        return outcome(
            status_code=response.status_code,
            error=f"redirect to {redirect} not followed" if redirect else None,
            response_body=clean_body(raw),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            request_headers=sent,
            response_headers=stored_headers(response.headers.multi_items()),
        )

    async def _body(self, claimed: Claimed) -> bytes:
        """The body, signed URL and all; signing runs on threads of its own, so the loop never waits
        on it and a slow signer cannot take the threads database work runs on."""
        if not signs_a_download_url(claimed):
            return payload(claimed, self.settings)
        context = contextvars.copy_context()  # the attempt's span is the signing span's parent
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._signing, context.run, payload, claimed, self.settings)

    async def _pin(self, url: str) -> tuple[str, str, str | None]:
        """Check the URL, resolve its host to one public (or allowed) address, and aim at that address."""
        allowed = self.settings.webhook_allowed_networks
        target = check_url(url, allowed_cidrs=allowed, allow_http=self.settings.webhook_allow_http)
        address = self._resolved.get(target.host, target.port)
        if address is None:
            timeout = self.settings.webhook_resolve_timeout_seconds
            addresses = await resolve_within_async(target.host, target.port, allowed, timeout=timeout)
            address = str(addresses[0])
            self._resolved.put(target.host, target.port, address)
        return pinned_url(url, address)

    def _client(self, host: str) -> httpx.AsyncClient:
        client = self._clients.get(host)
        if client is not None:
            self._clients.move_to_end(host)
            return client
        # The deliverer caps requests per endpoint; the pool must never make one wait.
        pool = self.settings.webhook_max_in_flight
        timeout = self.settings.webhook_timeout_seconds
        client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            transport=Transport(httpx.Limits(max_connections=pool, max_keepalive_connections=pool)),
        )
        self._clients[host] = client
        if len(self._clients) > MAX_CLIENTS:
            _, oldest = self._clients.popitem(last=False)
            asyncio.get_running_loop().create_task(oldest.aclose())
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        self._signing.shutdown(wait=False)


async def _read_prefix(response: httpx.Response) -> bytes:
    """Up to the stored limit of the body; the rest is not read."""
    buffer = bytearray()
    async for chunk in response.aiter_raw():
        buffer += chunk
        if len(buffer) >= RESPONSE_BODY_LIMIT:
            break
    return bytes(buffer)
