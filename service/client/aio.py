"""The async Claimcheck client: the generated operations (httpx, websockets), typed errors, and the
waits and downloads built on them."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from service.client.errors import (
    AuthenticationError,
    ClaimcheckError,
    ConnectionFailedError,
    InvalidStateError,
    NotFoundError,
    check_user_errors,
    from_graphql_errors,
    from_http,
)
from service.client.files import CHUNK_BYTES, VerifiedFile
from service.client.generated_async.async_base_client import HttpClient, Response
from service.client.generated_async.client import GeneratedAsyncClient
from service.client.generated_async.exceptions import GraphQLClientGraphQLMultiError
from service.client.generated_async.fragments import JobFields
from service.client.generated_async.webhook_events import WebhookEventsWebhookEvents
from service.client.settings import TERMINAL, ClientSettings

WS_REVOKED = 4403
LONG_POLL_SECONDS = 25
RECONNECT_SECONDS = (0.5, 1, 2, 5)
REMEMBERED_EVENTS = 10_000

JobCallback = Callable[[JobFields], None]


def response_data(response: Response) -> dict[str, Any]:
    """The data of a GraphQL answer, or the typed error it carries (HTTP status, errors, userErrors)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    headers: Any = getattr(response, "headers", {})
    if not 200 <= response.status_code <= 299:
        raise from_http(response.status_code, headers, body)
    if not isinstance(body, dict):
        raise ClaimcheckError("the API's answer is not GraphQL", code="INVALID_RESPONSE")
    if body.get("errors"):
        raise from_graphql_errors(body["errors"], headers.get("retry-after"))
    data: dict[str, Any] = body.get("data") or {}
    check_user_errors(data)
    return data


class AsyncClaimcheck(GeneratedAsyncClient):
    """Every operation of service/client/operations as a typed method, plus `wait`, `download` and
    `webhook_event_stream`. Failures raise service.client.errors; use it as `async with`."""

    def __init__(self, url: str, api_key: str, *, timeout: float = 60.0) -> None:
        self.settings = ClientSettings(url, api_key)
        auth = {"authorization": f"Bearer {api_key}"}
        super().__init__(
            url=self.settings.graphql_url,
            http_client=cast(HttpClient, httpx.AsyncClient(headers=auth, timeout=timeout)),
            ws_url=self.settings.websocket_url,
            ws_connection_init_payload=auth,
        )
        self.downloads = httpx.AsyncClient(timeout=timeout, follow_redirects=False)  # no key: URLs are signed

    @classmethod
    def from_env(cls) -> AsyncClaimcheck:
        """Configured by CLAIMCHECK_API_URL (default http://127.0.0.1:8000) and CLAIMCHECK_API_KEY."""
        settings = ClientSettings.from_env()
        return cls(settings.url, settings.api_key)

    async def __aexit__(self, exc_type: object, exc_val: object, exc_tb: object) -> None:
        await self.downloads.aclose()
        await super().__aexit__(exc_type, exc_val, exc_tb)

    async def execute(
        self,
        query: str,
        operation_name: str | None = None,
        variables: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Response:
        try:
            return await super().execute(query, operation_name, variables, **kwargs)
        except httpx.TransportError as error:
            raise ConnectionFailedError(f"cannot reach {self.url}: {error}") from error

    def get_data(self, response: Response) -> dict[str, Any]:
        return response_data(response)

    async def execute_ws(
        self,
        query: str,
        operation_name: str | None = None,
        variables: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        try:
            async for data in super().execute_ws(query, operation_name, variables, **kwargs):
                yield data
        except GraphQLClientGraphQLMultiError as error:
            raise from_graphql_errors([e.original or {"message": e.message} for e in error.errors]) from error
        except ConnectionClosed as error:
            if error.rcvd is not None and error.rcvd.code == WS_REVOKED:
                raise AuthenticationError(f"the API refused the key: {error.rcvd.reason}") from error
            raise ConnectionFailedError(f"the subscription's connection dropped: {error}") from error
        except (OSError, InvalidHandshake, TimeoutError) as error:
            raise ConnectionFailedError(f"cannot subscribe at {self.ws_url}: {error}") from error

    async def _handle_ws_message(self, message: Any, websocket: Any, expected_type: Any = None) -> Any:
        """A `next` that carries errors (a subscription's resolver refused) raises them typed."""
        parsed = json.loads(message)
        if isinstance(parsed, dict) and parsed.get("type") == "next":
            errors = (parsed.get("payload") or {}).get("errors")
            if errors:
                raise from_graphql_errors(errors)
        return await super()._handle_ws_message(message, websocket, expected_type)

    async def job(self, job_id: str) -> JobFields:
        """The job, or NotFoundError."""
        found = (await self.get_job(job_id)).job
        if found is None:
            raise NotFoundError(f"no job {job_id}", field=["id"])
        return found

    async def wait(self, job_id: str, on_change: JobCallback | None = None) -> JobFields:
        """Follow a job until it ends and return it, calling `on_change` with each state (the first is
        the job as it is now). Over the jobUpdates subscription; when the WebSocket cannot be had or
        drops, by long poll (`job(id, waitSeconds)`)."""
        notify = on_change or (lambda _job: None)
        last: JobFields | None = None
        try:
            async for update in self.job_updates(job_id):  # the server completes it at the end
                last = update.job_updates
                notify(last)
        except ConnectionFailedError:
            pass
        if last is not None and last.status.value in TERMINAL:
            return last
        return await self._long_poll(job_id, notify, last)

    async def _long_poll(self, job_id: str, notify: JobCallback, last: JobFields | None) -> JobFields:
        while True:
            current = (await self.get_job(job_id, wait_seconds=LONG_POLL_SECONDS if last else 0)).job
            if current is None:
                raise NotFoundError(f"no job {job_id}", field=["id"])
            if last is None or _state(current) != _state(last):
                notify(current)
            last = current
            if current.status.value in TERMINAL:
                return current

    async def download(
        self, job: str | JobFields, path: Path, on_progress: Callable[[int, int], None] | None = None
    ) -> Path:
        """Stream the job's file to `path` (through `<path>.part`), checked against its sha256 and size;
        `on_progress(bytes so far, total)` after each chunk. INVALID_STATE when it has no file."""
        job_id = job if isinstance(job, str) else job.id
        found = (await self.get_download(job_id)).job
        if found is None:
            raise NotFoundError(f"no job {job_id}", field=["id"])
        if found.artifact is None:
            raise InvalidStateError(f"job {job_id} has no file (it is {found.status.value})")
        artifact = found.artifact
        try:
            async with self.downloads.stream("GET", artifact.download_url) as response:
                if response.status_code != 200:
                    raise ClaimcheckError(
                        f"the download answered HTTP {response.status_code}",
                        code=f"HTTP_{response.status_code}",
                    )
                with VerifiedFile(path, sha256=artifact.sha_256, byte_size=artifact.byte_size) as file:
                    async for chunk in response.aiter_bytes(CHUNK_BYTES):
                        file.write(chunk)
                        if on_progress is not None:
                            on_progress(file.written, artifact.byte_size)
                    return file.finish()
        except httpx.TransportError as error:
            raise ConnectionFailedError(f"the download failed: {error}") from error

    async def webhook_event_stream(
        self,
        event_types: list[str] | None = None,
        after: str | None = None,
        on_reconnect: Callable[[ClaimcheckError, float], None] | None = None,
    ) -> AsyncIterator[WebhookEventsWebhookEvents]:
        """The tenant's webhook events, each once, for as long as the caller reads: a dropped connection
        is reopened `after` the last event received, so none is missed (`on_reconnect(error, delay)`
        before each retry). Authentication and other refusals are raised."""
        seen: OrderedDict[str, None] = OrderedDict()
        failures = 0
        while True:
            try:
                async for message in self.webhook_events(event_types=event_types, after=after):
                    event = message.webhook_events
                    failures = 0
                    if event.id in seen:
                        continue
                    seen[event.id] = None
                    if len(seen) > REMEMBERED_EVENTS:
                        seen.popitem(last=False)
                    after = event.id
                    yield event
                error: ClaimcheckError = ConnectionFailedError("the server ended the subscription")
            except ConnectionFailedError as dropped:
                error = dropped
            delay = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
            failures += 1
            if on_reconnect is not None:
                on_reconnect(error, delay)
            await asyncio.sleep(delay)


def _state(job: JobFields) -> tuple[str, float, str | None]:
    return (job.status.value, job.progress, job.message)
