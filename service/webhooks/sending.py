"""Sending one webhook attempt over HTTP: body, Standard Webhooks signature, SSRF check, pinned connection.

Each host name gets its own pooled client (keep-alive, and TLS names never mixed). The address is
resolved and checked here, then connected to directly, so a name cannot be re-pointed at an internal
address between the check and the connection (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

import anyio.to_thread
import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode

from callbacks.signing import build_headers
from observability.metrics import attempt_outcome, record_webhook_attempt, record_webhook_delivered
from observability.tracing import continue_trace, get_tracer, inject
from service.crypto import decrypt
from service.models import utcnow
from service.settings import Settings
from service.storage.factory import get_storage
from service.webhooks.delivery import RESPONSE_BODY_LIMIT, Claimed, Outcome, clean_body
from service.webhooks.retry import parse_retry_after
from service.webhooks.service import keys_in_use
from service.webhooks.ssrf import UnsafeURLError, check_url, pinned_url, resolve_public

MAX_CLIENTS = 256
RESOLVE_TTL_SECONDS = 60.0


def active_keys(signing_keys: list[dict[str, Any]], now: datetime) -> list[str]:
    """The decrypted keys that sign now: the newest, and older ones still inside their overlap."""
    return [decrypt(entry["key"]) for entry in keys_in_use(signing_keys, now)]


def payload(claimed: Claimed, settings: Settings) -> bytes:
    """The JSON body; a job.succeeded event gets a download URL fresh for this attempt."""
    data = claimed.event_data
    artifact = (data.get("job") or {}).get("artifact") if claimed.event_type == "job.succeeded" else None
    if artifact and claimed.artifact_key:
        with get_tracer().start_as_current_span("storage.sign_url"):
            url = get_storage().signed_url(
                claimed.artifact_key,
                filename=artifact["filename"],
                content_type=artifact["contentType"],
                expires_in=settings.download_url_default_expiry,
            )
        data = {**data, "job": {**data["job"], "artifact": {**artifact, "downloadUrl": url}}}
    body = {"type": claimed.event_type, "timestamp": claimed.event_created_at.isoformat(), "data": data}
    return json.dumps(body, separators=(",", ":")).encode()


class Sender:
    """Sends claimed deliveries; never raises for anything the receiver or the network does."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._resolved: dict[tuple[str, int], tuple[str, float]] = {}

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
            timed_out = bool(result.error and result.error.startswith("no response"))
            refused = bool(result.error and result.error.startswith("refused"))
            outcome = attempt_outcome(result.status_code, timed_out=timed_out, refused=refused)
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
            keys = active_keys(claimed.signing_keys, at)
            body = payload(claimed, self.settings)
            target, host_header, sni_hostname = await self._pin(claimed.url)
        except UnsafeURLError as error:
            return outcome(error=f"refused: {error}")
        headers = build_headers(claimed.event_id, int(time.time()), body, keys)
        headers.update(inject(include_baggage=False))  # traceparent: the receiver continues the trace
        headers["host"] = host_header
        extensions = {"sni_hostname": sni_hostname} if sni_hostname else {}
        client = self._client(host_header)
        try:
            async with asyncio.timeout(self.settings.webhook_timeout_seconds):
                request = client.build_request(
                    "POST", target, content=body, headers=headers, extensions=extensions
                )
                response = await client.send(request, stream=True)
                try:
                    raw = await _read_prefix(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return outcome(error=f"no response within {self.settings.webhook_timeout_seconds:g} s")
        except httpx.HTTPError as error:
            return outcome(error=f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
        redirect = response.headers.get("location", "?") if response.is_redirect else None
        return outcome(
            status_code=response.status_code,
            error=f"redirect to {redirect} not followed" if redirect else None,
            response_body=clean_body(raw),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )

    async def _pin(self, url: str) -> tuple[str, str, str | None]:
        """Check the URL, resolve its host to one public (or allowed) address, and aim at that address."""
        allowed = self.settings.webhook_allowed_networks
        target = check_url(url, allowed_cidrs=allowed, allow_http=self.settings.webhook_allow_http)
        cached = self._resolved.get((target.host, target.port))
        if cached is not None and cached[1] > time.monotonic():
            address = cached[0]
        else:
            addresses = await anyio.to_thread.run_sync(
                lambda: resolve_public(target.host, target.port, allowed)
            )
            address = str(addresses[0])
            self._resolved[(target.host, target.port)] = (address, time.monotonic() + RESOLVE_TTL_SECONDS)
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
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
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


async def _read_prefix(response: httpx.Response) -> bytes:
    """Up to the stored limit of the body; the rest is not read."""
    buffer = bytearray()
    async for chunk in response.aiter_raw():
        buffer += chunk
        if len(buffer) >= RESPONSE_BODY_LIMIT:
            break
    return bytes(buffer)
