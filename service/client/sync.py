"""The sync Claimcheck client: the generated operations over httpx, typed errors, and the waits (by long
poll: subscriptions are the async client's) and downloads built on them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx

from service.client.aio import LONG_POLL_SECONDS, response_data
from service.client.errors import ClaimcheckError, ConnectionFailedError, InvalidStateError, NotFoundError
from service.client.files import CHUNK_BYTES, VerifiedFile
from service.client.generated_sync.base_client import HttpClient, Response
from service.client.generated_sync.client import GeneratedSyncClient
from service.client.generated_sync.fragments import JobFields
from service.client.settings import TERMINAL, ClientSettings


class Claimcheck(GeneratedSyncClient):
    """Every query and mutation of service/client/operations as a typed method, plus `wait` and
    `download`. Failures raise service.client.errors; use it as `with`."""

    def __init__(self, url: str, api_key: str, *, timeout: float = 60.0) -> None:
        self.settings = ClientSettings(url, api_key)
        auth = {"authorization": f"Bearer {api_key}"}
        super().__init__(
            url=self.settings.graphql_url,
            http_client=cast(HttpClient, httpx.Client(headers=auth, timeout=timeout)),
        )
        self.downloads = httpx.Client(timeout=timeout, follow_redirects=False)  # no key: URLs are signed

    @classmethod
    def from_env(cls) -> Claimcheck:
        """Configured by CLAIMCHECK_API_URL (default http://127.0.0.1:8000) and CLAIMCHECK_API_KEY."""
        settings = ClientSettings.from_env()
        return cls(settings.url, settings.api_key)

    def __exit__(self, exc_type: object, exc_val: object, exc_tb: object) -> None:
        self.downloads.close()
        super().__exit__(exc_type, exc_val, exc_tb)

    def execute(
        self,
        query: str,
        operation_name: str | None = None,
        variables: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Response:
        try:
            return super().execute(query, operation_name, variables, **kwargs)
        except httpx.TransportError as error:
            raise ConnectionFailedError(f"cannot reach {self.url}: {error}") from error

    def get_data(self, response: Response) -> dict[str, Any]:
        return response_data(response)

    def job(self, job_id: str) -> JobFields:
        """The job, or NotFoundError."""
        found = self.get_job(job_id).job
        if found is None:
            raise NotFoundError(f"no job {job_id}", field=["id"])
        return found

    def wait(self, job_id: str, on_change: Callable[[JobFields], None] | None = None) -> JobFields:
        """Follow a job by long poll until it ends and return it, calling `on_change` with each state
        (the first is the job as it is now)."""
        last: JobFields | None = None
        while True:
            current = self.get_job(job_id, wait_seconds=LONG_POLL_SECONDS if last else 0).job
            if current is None:
                raise NotFoundError(f"no job {job_id}", field=["id"])
            if on_change is not None and (last is None or _state(current) != _state(last)):
                on_change(current)
            last = current
            if current.status.value in TERMINAL:
                return current

    def download(
        self, job: str | JobFields, path: Path, on_progress: Callable[[int, int], None] | None = None
    ) -> Path:
        """Stream the job's file to `path` (through `<path>.part`), checked against its sha256 and size;
        `on_progress(bytes so far, total)` after each chunk. INVALID_STATE when it has no file."""
        job_id = job if isinstance(job, str) else job.id
        found = self.get_download(job_id).job
        if found is None:
            raise NotFoundError(f"no job {job_id}", field=["id"])
        if found.artifact is None:
            raise InvalidStateError(f"job {job_id} has no file (it is {found.status.value})")
        artifact = found.artifact
        try:
            with self.downloads.stream("GET", artifact.download_url) as response:
                if response.status_code != 200:
                    raise ClaimcheckError(
                        f"the download answered HTTP {response.status_code}",
                        code=f"HTTP_{response.status_code}",
                    )
                with VerifiedFile(path, sha256=artifact.sha_256, byte_size=artifact.byte_size) as file:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        file.write(chunk)
                        if on_progress is not None:
                            on_progress(file.written, artifact.byte_size)
                    return file.finish()
        except httpx.TransportError as error:
            raise ConnectionFailedError(f"the download failed: {error}") from error


def _state(job: JobFields) -> tuple[str, float, str | None]:
    return (job.status.value, job.progress, job.message)
