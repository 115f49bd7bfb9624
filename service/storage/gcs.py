"""The ``gcs`` backend: Google Cloud Storage through google-cloud-storage.

Uploads are resumable sessions fed chunk by chunk from the producer's stream (``ChunkStream``), so a
worker holds one chunk (``GCS_CHUNK_BYTES``) whatever the artifact's size. Only the last chunk
finalizes the object: a producer that fails mid-stream, or GCS failing past the retries, leaves the
session unfinished, so no half-object ever appears and a previous object under the key (a re-run
overwrites it) stays whole. The client checks CRC32C end to end on the last chunk, and the object's
size and CRC32C as GCS reports them are compared with ours; on a mismatch the object is deleted and
the upload fails with ``UploadIntegrityError``.

Downloads are V4 signed GET URLs; the bytes never pass through the API. Signing works two ways:

- **Key file.** ``GOOGLE_APPLICATION_CREDENTIALS`` names a service-account JSON key: URLs are
  signed locally with its private key.
- **IAM signBlob.** Without a key (Cloud Run, GKE workload identity, Compute Engine), the default
  credentials are refreshed and the string to sign is sent to IAM ``signBlob`` for the service
  account (its email from the credentials, or ``GCS_SIGNER_EMAIL``). That account needs
  ``roles/iam.serviceAccountTokenCreator`` on itself.

``STORAGE_EMULATOR_HOST`` (e.g. ``http://127.0.0.1:4443``) points both the API calls and the signed
URLs at an emulator; API calls then go unauthenticated, while URLs are still signed by one of the two
ways above (the emulator accepts any signature, tests check it).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import io
import json
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast
from urllib.parse import quote

import google.auth
import google_crc32c
from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials, Credentials, Signing
from google.auth.transport.requests import Request
from google.cloud.storage import Blob, Bucket, Client
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account

from service.storage.base import HashingReader, StoredObject, signed_url_seconds

GCS_ENDPOINT = "https://storage.googleapis.com"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
CHUNK_MULTIPLE = 256 * 1024  # resumable upload chunks must be multiples of 256 KiB


class UploadIntegrityError(Exception):
    """GCS stored something other than what was sent (checksum or size differ); the object is gone."""


def content_disposition(filename: str) -> str:
    """``attachment`` with the filename: a plain quoted ASCII name, plus RFC 5987 ``filename*`` if needed."""
    ascii_name = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    value = f'attachment; filename="{ascii_name}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def crc32c_base64(crc: int) -> str:
    """The CRC32C as GCS reports it: base64 of the big-endian 4 bytes."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


@dataclass
class _ClientBox:
    pid: int
    client: Client
    bucket: Bucket


class Signer:
    """Gives generate_signed_url what it needs to sign: a key-file credential, or an IAM email and token."""

    def __init__(self, credentials: Credentials, signer_email: str = "") -> None:
        self.credentials = credentials
        self.signer_email = signer_email
        self._lock = threading.Lock()

    @property
    def uses_key(self) -> bool:
        """True when the credentials sign by themselves (a service-account key: no network call)."""
        return isinstance(self.credentials, Signing) and not self.signer_email

    def signing_kwargs(self) -> dict[str, Any]:
        if self.uses_key:
            return {"credentials": self.credentials}
        with self._lock:
            if not self.credentials.valid:
                self.credentials.refresh(Request())  # type: ignore[no-untyped-call]
            token = self.credentials.token
            email = self.signer_email or str(getattr(self.credentials, "service_account_email", "") or "")
        if not email or email == "default":
            raise RuntimeError(
                "cannot sign GCS URLs: the default credentials name no service account; "
                "set GCS_SIGNER_EMAIL or GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
            )
        return {"service_account_email": email, "access_token": token}


def default_signer(*, emulator: bool, signer_email: str = "") -> Signer:
    """The key file from GOOGLE_APPLICATION_CREDENTIALS when it is one, else the default credentials (IAM).

    With an emulator and neither a key file nor a metadata server configured, this refuses rather
    than let google.auth probe the link-local metadata address.
    """
    key_path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
    if key_path and _is_service_account_key(key_path):
        credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            key_path, scopes=SCOPES
        )
        return Signer(credentials, signer_email if signer_email != credentials.service_account_email else "")
    if emulator and not key_path and not os.environ.get("GCE_METADATA_HOST"):
        raise RuntimeError(
            "STORAGE_EMULATOR_HOST is set but nothing can sign URLs: set GOOGLE_APPLICATION_CREDENTIALS "
            "to a service-account key file (any key will do for an emulator)"
        )
    credentials, _ = google.auth.default(scopes=SCOPES)
    return Signer(credentials, signer_email)


def _is_service_account_key(path: str) -> bool:
    with open(path, encoding="utf-8") as handle:
        info = json.load(handle)
    return isinstance(info, dict) and info.get("type") == "service_account" and "private_key" in info


class GcsStorage:
    """Objects in one bucket; see the module docstring for uploads, checksums and signing."""

    def __init__(
        self,
        bucket: str,
        *,
        project: str = "",
        chunk_bytes: int = 16 * 1024 * 1024,
        retry_seconds: float = 120.0,
        emulator_host: str = "",
        signer_email: str = "",
        signer: Signer | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("GCS_BUCKET must be set for STORAGE_BACKEND=gcs")
        if chunk_bytes < CHUNK_MULTIPLE or chunk_bytes % CHUNK_MULTIPLE:
            raise ValueError(f"GCS_CHUNK_BYTES must be a positive multiple of {CHUNK_MULTIPLE}")
        self.bucket_name = bucket
        self.project = project
        self.chunk_bytes = chunk_bytes
        self.retry = DEFAULT_RETRY.with_timeout(retry_seconds)
        self.emulator_host = _with_scheme(emulator_host) if emulator_host else ""
        self.url_endpoint = self.emulator_host or GCS_ENDPOINT
        self._signer_email = signer_email
        self._signer = signer
        self._signer_lock = threading.Lock()
        self._box: _ClientBox | None = None
        self._box_lock = threading.Lock()

    # Clients are made lazily and again in a forked child: a worker builds its storage before forking.

    def _bucket(self) -> Bucket:
        box = self._box
        if box is None or box.pid != os.getpid():
            with self._box_lock:
                box = self._box
                if box is None or box.pid != os.getpid():
                    client = self._make_client()
                    box = self._box = _ClientBox(os.getpid(), client, client.bucket(self.bucket_name))
        return box.bucket

    def _make_client(self) -> Client:
        if self.emulator_host:
            client = Client(
                project=self.project or "claimcheck-emulator",
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": self.emulator_host},
            )
        else:
            client = Client(project=self.project or None)
        # The upload loop keeps each chunk's response, and requests keeps the chunk as that response's
        # request body: without this hook a worker would hold two chunks instead of one.
        hooks = getattr(getattr(client, "_http", None), "hooks", None)
        if isinstance(hooks, dict):
            hooks.setdefault("response", []).append(_forget_request_body)
        return client

    @property
    def client(self) -> Client:
        """The google-cloud-storage client of this process."""
        self._bucket()
        assert self._box is not None
        return self._box.client

    def signer(self) -> Signer:
        if self._signer is None:
            with self._signer_lock:
                if self._signer is None:
                    self._signer = default_signer(
                        emulator=bool(self.emulator_host), signer_email=self._signer_email
                    )
        return self._signer

    def _blob(self, key: str, generation: int | None = None) -> Blob:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return self._bucket().blob(key, generation=generation)

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, content_type: str, filename: str
    ) -> StoredObject:
        blob = self._blob(key)
        blob.chunk_size = self.chunk_bytes
        blob.content_disposition = content_disposition(filename)
        reader = HashingReader(chunks)
        crc = 0

        def checksummed() -> Iterator[bytes]:
            nonlocal crc
            for chunk in reader:
                crc = google_crc32c.extend(crc, chunk)
                yield chunk

        stream = ChunkStream(checksummed())
        try:
            # A resumable session fed one chunk at a time; it is finalized only by the last chunk, so
            # a producer or network failure before that leaves no object (and any previous one whole).
            blob.upload_from_file(stream, content_type=content_type, checksum="crc32c", retry=self.retry)
        except ProducerFailed as failed:
            raise failed.original from None
        except DataCorruption as exc:  # the library has deleted the object
            raise UploadIntegrityError(f"GCS object {key} failed its CRC32C check; deleted") from exc
        self._verify(blob, key, reader.byte_size, crc32c_base64(crc))
        return StoredObject(key=key, byte_size=reader.byte_size, sha256=reader.sha256)

    def _verify(self, blob: Blob, key: str, byte_size: int, crc32c: str) -> None:
        """Compare what GCS stored (as the upload's answer says) with what was sent; delete on a mismatch."""
        if blob.size == byte_size and blob.crc32c == crc32c:
            return
        self._delete_generation(key, blob.generation)
        raise UploadIntegrityError(
            f"GCS object {key} does not match the upload (size {blob.size} vs {byte_size}, "
            f"crc32c {blob.crc32c} vs {crc32c}); deleted"
        )

    def _delete_generation(self, key: str, generation: int | None) -> None:
        with contextlib.suppress(NotFound):
            self._blob(key).delete(if_generation_match=generation, retry=self.retry)

    def open(self, key: str) -> BinaryIO:
        """A streaming, seekable reader of the current generation (ranged GETs of GCS_CHUNK_BYTES)."""
        blob = self._blob(key)
        try:
            blob.reload(retry=self.retry)
        except NotFound as exc:
            raise FileNotFoundError(f"no object {key}") from exc
        # Every ranged GET names the generation opened: a re-run overwriting the object mid-read
        # makes the read fail instead of splicing two versions together.
        pinned = self._blob(key, generation=blob.generation)
        raw = _RangeReader(pinned, int(blob.size or 0), self.retry, self.chunk_bytes)
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=self.chunk_bytes))

    def exists(self, key: str) -> bool:
        return bool(self._blob(key).exists(retry=self.retry))

    def delete(self, key: str) -> None:
        self._delete_generation(key, None)

    def signed_url(self, key: str, *, filename: str, content_type: str, expires_in: int) -> str:
        """A V4 signed GET URL; expires_in is clamped to GCS's maximum of 7 days, and must be positive."""
        seconds = signed_url_seconds(expires_in)
        url: str = self._blob(key).generate_signed_url(
            version="v4",
            expiration=datetime.timedelta(seconds=seconds),
            method="GET",
            api_access_endpoint=self.url_endpoint,
            response_disposition=content_disposition(filename),
            response_type=content_type,
            **self.signer().signing_kwargs(),
        )
        return url


class ProducerFailed(Exception):
    """The artifact's producer raised while the upload read from it (carried past the client's retries)."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


class ChunkStream(io.RawIOBase):
    """A producer's chunks as the readable stream a resumable upload reads one chunk at a time.

    Each ``read(n)`` gathers the next n bytes into one new bytes object (no second copy), which is
    also kept as the window the upload may seek back into to resend a chunk after a failure: memory
    is about one upload chunk whatever the artifact's size.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending: memoryview | None = None  # what is left of the producer's last chunk
        self._window = b""
        self._window_start = 0
        self._pos = 0
        self._exhausted = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        window_end = self._window_start + len(self._window)
        if whence != io.SEEK_SET or not self._window_start <= offset <= window_end:
            raise io.UnsupportedOperation("a chunk stream only seeks back within the last chunk read")
        self._pos = offset
        return offset

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while part := self.read(8 * 1024 * 1024):
                parts.append(part)
            return b"".join(parts)
        offset = self._pos - self._window_start
        reread = self._window[offset : offset + size]  # empty unless the upload seeked back
        if not reread:
            self._window = b""  # let the previous chunk go before gathering the next one
        fresh = self._take(size - len(reread)) if len(reread) < size else b""
        data = reread + fresh if reread else fresh
        self._window, self._window_start = data, self._pos
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _take(self, size: int) -> bytes:
        """The next size bytes from the producer (fewer at its end)."""
        out = io.BytesIO()
        if size > 0:  # one allocation of the whole chunk up front, filled in place (no regrowth)
            out.seek(size - 1)
            out.write(b"\0")
            out.seek(0)
        while out.tell() < size:
            piece = self._pending if self._pending is not None else self._next()
            self._pending = None
            if piece is None:
                break
            need = size - out.tell()
            if len(piece) > need:
                self._pending = piece[need:]
                piece = piece[:need]
            out.write(piece)
        out.truncate(out.tell())
        return out.getvalue()  # BytesIO hands over its buffer without copying it

    def _next(self) -> memoryview | None:
        if self._exhausted:
            return None
        try:
            return memoryview(next(self._chunks))
        except StopIteration:
            self._exhausted = True
            return None
        except Exception as exc:
            raise ProducerFailed(exc) from exc


class _RangeReader(io.RawIOBase):
    """Reads one object generation by ranged GETs; wrapped in a BufferedReader of one chunk."""

    def __init__(self, blob: Blob, size: int, retry: Any, chunk_bytes: int) -> None:
        self._blob = blob
        self._size = size
        self._retry = retry
        self._chunk_bytes = chunk_bytes
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._size - self._pos)
        if wanted <= 0:
            return 0
        data: bytes = self._blob.download_as_bytes(
            start=self._pos, end=self._pos + wanted - 1, checksum=None, retry=self._retry
        )
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while part := self.read(self._chunk_bytes):
            parts.append(part)
        return b"".join(parts)


def _forget_request_body(response: Any, *_args: Any, **_kwargs: Any) -> Any:
    """A requests response hook: drop the sent body once answered (a redirect may still need it)."""
    if not response.is_redirect and response.request is not None:
        response.request.body = None
    return response


def _with_scheme(host: str) -> str:
    return host.rstrip("/") if "://" in host else f"http://{host.rstrip('/')}"
