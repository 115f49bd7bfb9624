"""One behaviour suite, run over both backends: local (downloads through the real API) and gcs (emulator).

Every test talks to real servers: the session's API process serves the local backend's signed URLs,
fake-gcs-server serves the gcs backend's objects and V4 URLs.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.storage.base import MAX_SIGNED_URL_SECONDS, Storage, artifact_key
from service.storage.gcs import GcsStorage
from service.storage.local import LocalStorage
from service.storage.tokens import DownloadTokens
from tests.gcs import ServiceAccountKey, verify_v4_signed_url
from tests.servers import ApiProcess

CHUNK = 256 * 1024  # the gcs backend's chunk size in these tests: payloads below span several


@dataclass
class Backend:
    """A storage backend plus what the suite needs to look behind it."""

    name: str
    storage: Storage
    expiry_of: Callable[[str], datetime.datetime]  # when a signed URL stops working, as it says
    listing: Callable[[str], list[str]]  # every object (or file, partial ones too) under a prefix
    gone: tuple[int, ...]  # statuses a signed URL of a deleted object may answer


def _local(env: dict[str, str], api: ApiProcess) -> Backend:
    tokens = DownloadTokens(env["SECRET_KEY"])
    storage = LocalStorage(Path(env["STORAGE_DIR"]), tokens, api.url)

    def expiry_of(url: str) -> datetime.datetime:
        grant = tokens.check(url.rsplit("/downloads/", 1)[1])
        return datetime.datetime.fromtimestamp(grant.expires_at, datetime.UTC)

    def listing(prefix: str) -> list[str]:
        base = storage.root / prefix
        return sorted(str(p.relative_to(storage.root)) for p in base.rglob("*") if p.is_file())

    return Backend("local", storage, expiry_of, listing, gone=(410,))


def _gcs(storage: GcsStorage, key: ServiceAccountKey) -> Backend:
    def expiry_of(url: str) -> datetime.datetime:
        return verify_v4_signed_url(url, key.public_key).expires_at

    def listing(prefix: str) -> list[str]:
        return sorted(blob.name for blob in storage.client.list_blobs(storage.bucket_name, prefix=prefix))

    return Backend("gcs", storage, expiry_of, listing, gone=(404, 410))


@pytest.fixture(params=["local", "gcs"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "local":
        return _local(request.getfixturevalue("env"), request.getfixturevalue("api"))
    make_gcs: Callable[..., GcsStorage] = request.getfixturevalue("make_gcs")
    return _gcs(make_gcs(chunk_bytes=CHUNK), request.getfixturevalue("gcs_key"))


@pytest.fixture
def prefix() -> str:
    """A tenant of its own per test, so tests never see each other's objects."""
    return f"tenants/ten_{secrets.token_hex(6)}/"


def _key(prefix: str, job: str = "job_1", filename: str = "out.wav") -> str:
    tenant_id = prefix.split("/")[1]
    key = artifact_key(tenant_id, job, filename)
    assert key.startswith(prefix)
    return key


def _pieces(data: bytes, sizes: tuple[int, ...] = (1, 0, 4097, 100_000, CHUNK, 3)) -> Iterator[bytes]:
    """data cut into uneven pieces (an empty one too), the rest in one piece."""
    at = 0
    for size in sizes:
        yield data[at : at + size]
        at += size
    yield data[at:]


def _put(backend: Backend, key: str, data: bytes, filename: str = "out.wav") -> None:
    backend.storage.put_stream(key, _pieces(data), content_type="audio/wav", filename=filename)


def test_upload_then_download_round_trip(backend: Backend, prefix: str) -> None:
    data = os.urandom(3 * CHUNK + 12_345)
    key = _key(prefix)
    stored = backend.storage.put_stream(key, _pieces(data), content_type="audio/wav", filename="out.wav")

    assert (stored.key, stored.byte_size) == (key, len(data))
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert backend.storage.exists(key)
    with backend.storage.open(key) as handle:
        assert handle.read() == data
    assert backend.listing(prefix) == [key]  # nothing partial left beside it


def test_an_empty_artifact(backend: Backend, prefix: str) -> None:
    key = _key(prefix, filename="empty.txt")
    stored = backend.storage.put_stream(key, iter([]), content_type="text/plain", filename="empty.txt")
    assert (stored.byte_size, stored.sha256) == (0, hashlib.sha256(b"").hexdigest())
    with backend.storage.open(key) as handle:
        assert handle.read() == b""


def test_range_reads_through_open(backend: Backend, prefix: str) -> None:
    data = os.urandom(2 * CHUNK + 999)
    key = _key(prefix)
    _put(backend, key, data)
    with backend.storage.open(key) as handle:
        assert handle.read(10) == data[:10]
        handle.seek(CHUNK - 100)  # across a chunk boundary
        assert handle.read(300) == data[CHUNK - 100 : CHUNK + 200]
        handle.seek(len(data) - 5)
        assert handle.read() == data[-5:]
        assert handle.read(10) == b""


def test_signed_url_serves_the_object_with_name_type_and_ranges(backend: Backend, prefix: str) -> None:
    data = os.urandom(CHUNK + 777)
    key = _key(prefix, filename="speech.wav")
    _put(backend, key, data, filename="speech.wav")
    url = backend.storage.signed_url(key, filename="speech.wav", content_type="audio/wav", expires_in=300)

    whole = httpx.get(url)
    assert whole.status_code == 200, whole.text
    assert whole.content == data
    assert whole.headers["content-type"] == "audio/wav"
    assert whole.headers["content-disposition"] == 'attachment; filename="speech.wav"'

    part = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"


def test_a_re_run_overwrites_the_same_key(backend: Backend, prefix: str) -> None:
    key = _key(prefix)
    _put(backend, key, os.urandom(CHUNK + 1))
    second = backend.storage.put_stream(key, iter([b"second run"]), content_type="audio/wav", filename="o")
    assert second.byte_size == 10
    with backend.storage.open(key) as handle:
        assert handle.read() == b"second run"
    assert backend.listing(prefix) == [key]


def test_a_failed_producer_keeps_the_previous_object_and_stores_nothing_new(
    backend: Backend, prefix: str
) -> None:
    key, fresh = _key(prefix), _key(prefix, job="job_2")
    _put(backend, key, b"complete")

    def broken() -> Iterator[bytes]:
        yield os.urandom(2 * CHUNK + 10)  # some chunks are already uploaded when it dies
        raise RuntimeError("the producer died")

    for target in (key, fresh):
        with pytest.raises(RuntimeError, match="producer died"):
            backend.storage.put_stream(target, broken(), content_type="audio/wav", filename="o")
    with backend.storage.open(key) as handle:
        assert handle.read() == b"complete"
    assert not backend.storage.exists(fresh)
    assert backend.listing(prefix) == [key]


def test_delete(backend: Backend, prefix: str) -> None:
    key = _key(prefix)
    data = b"RIFF" + os.urandom(1000)
    _put(backend, key, data)
    url = backend.storage.signed_url(key, filename="out.wav", content_type="audio/wav", expires_in=300)
    assert httpx.get(url).content == data

    backend.storage.delete(key)
    assert not backend.storage.exists(key)
    with pytest.raises(FileNotFoundError):
        backend.storage.open(key)
    backend.storage.delete(key)  # deleting what is gone is not an error
    response = httpx.get(url)
    assert response.status_code in backend.gone
    assert data[4:100] not in response.content
    assert backend.listing(prefix) == []


def test_tenants_never_collide(backend: Backend, prefix: str) -> None:
    other = f"tenants/ten_{secrets.token_hex(6)}/"
    mine, theirs = _key(prefix), _key(other)  # same job id and filename, two tenants
    _put(backend, mine, b"mine")
    _put(backend, theirs, b"theirs")
    with backend.storage.open(mine) as a, backend.storage.open(theirs) as b:
        assert (a.read(), b.read()) == (b"mine", b"theirs")


def test_signed_url_expiry_is_clamped_to_seven_days_and_must_be_in_the_future(
    backend: Backend, prefix: str
) -> None:
    key = _key(prefix)
    _put(backend, key, b"x")
    now = datetime.datetime.now(datetime.UTC)
    slack = datetime.timedelta(seconds=5)

    def url(expires_in: int) -> str:
        return backend.storage.signed_url(key, filename="o", content_type="audio/wav", expires_in=expires_in)

    assert abs(backend.expiry_of(url(60)) - (now + datetime.timedelta(seconds=60))) < slack
    week = now + datetime.timedelta(seconds=MAX_SIGNED_URL_SECONDS)
    for too_long in (MAX_SIGNED_URL_SECONDS + 1, 30 * 24 * 3600, 10**9):
        assert abs(backend.expiry_of(url(too_long)) - week) < slack
        assert httpx.get(url(too_long)).status_code == 200
    for past in (0, -1, -3600):
        with pytest.raises(ValueError, match="must expire in the future"):
            url(past)
