"""Signed downloads through the real API process, and the local storage backend on its own."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.storage.local import LocalStorage
from service.storage.tokens import DownloadGrant, DownloadTokens, TokenExpired, TokenInvalid
from tests.conftest import SPEECH_MUTATION, GraphQLClient
from tests.servers import ApiProcess, ServiceProcess

ARTIFACT_QUERY = """
query Artifact($id: ID!, $expiresIn: Int) {
  job(id: $id) { status artifact { filename contentType byteSize sha256 downloadUrl(expiresIn: $expiresIn) } }
}
"""


@pytest.fixture
def artifact(gql: GraphQLClient, worker: ServiceProcess) -> dict[str, Any]:
    """A finished speech job's artifact (with a fresh downloadUrl) and its id."""
    text = "Downloads stream the file. They support ranges."
    payload = gql(SPEECH_MUTATION, {"input": {"text": text}})["generateSpeech"]
    job_id = payload["job"]["id"]
    assert gql.wait_for_job(job_id)["status"] == "SUCCEEDED", worker.log()[-3000:]
    job = gql(ARTIFACT_QUERY, {"id": job_id})["job"]
    result: dict[str, Any] = {**job["artifact"], "jobId": job_id}
    assert result["downloadUrl"].startswith(f"{gql.base_url}/downloads/")
    return result


def _token(url: str) -> str:
    _, token = url.rsplit("/downloads/", 1)
    assert token
    return token


def _grant(env: dict[str, str], url: str) -> DownloadGrant:
    return DownloadTokens(env["SECRET_KEY"]).check(_token(url))


def _assert_no_file(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert b"RIFF" not in response.content
    assert b"WAVE" not in response.content
    assert "Traceback" not in response.text
    assert response.headers["content-type"].startswith("application/json")


def test_download_url_serves_the_wav_with_its_name_and_type(artifact: dict[str, Any]) -> None:
    response = httpx.get(artifact["downloadUrl"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav" == artifact["contentType"]
    assert response.headers["content-disposition"] == 'attachment; filename="speech.wav"'
    assert response.headers["accept-ranges"] == "bytes"
    assert "no-store" in response.headers["cache-control"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert int(response.headers["content-length"]) == len(response.content) == artifact["byteSize"]
    assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
    assert response.content[:4] == b"RIFF"
    assert response.content[8:12] == b"WAVE"


def test_a_range_request_gets_exactly_those_bytes(artifact: dict[str, Any]) -> None:
    whole = httpx.get(artifact["downloadUrl"]).content
    assert len(whole) > 100

    part = httpx.get(artifact["downloadUrl"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206
    assert part.content == whole[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(whole)}"
    assert part.headers["content-length"] == "100"

    middle = httpx.get(artifact["downloadUrl"], headers={"Range": "bytes=100-149"})
    assert middle.status_code == 206
    assert middle.content == whole[100:150]


def test_a_range_header_of_thousands_of_ranges_is_answered_at_once(artifact: dict[str, Any]) -> None:
    """CVE-2025-62727: starlette before 0.49.1 merged ranges in quadratic time (seconds per request)."""
    size = artifact["byteSize"]
    count = min(20_000, size // 2)  # 20,000 took 3.9 s in starlette 0.49.0's merge alone
    assert count >= 10_000, size
    ranges = ",".join(f"{start}-{start}" for start in range(size - 2 * count, size, 2))
    started = time.monotonic()
    response = httpx.get(artifact["downloadUrl"], headers={"Range": f"bytes={ranges}"}, timeout=30)
    elapsed = time.monotonic() - started
    assert response.status_code in (200, 206, 416), response.text  # 200: the Range was ignored
    assert elapsed < 1.0


def test_a_tampered_token_is_403_and_never_the_file(
    api: ApiProcess, env: dict[str, str], artifact: dict[str, Any]
) -> None:
    token = _token(artifact["downloadUrl"])
    grant = _grant(env, artifact["downloadUrl"])
    payload, signature = token.rsplit(".", 1)

    forged = DownloadTokens("another-secret-of-sufficient-length").issue(
        grant.key, filename=grant.filename, content_type=grant.content_type, expires_in=900
    )
    other = DownloadTokens(env["SECRET_KEY"]).issue(
        grant.key + ".other", filename="x.wav", content_type="audio/wav", expires_in=900
    )
    flipped = signature[:5] + ("A" if signature[5] != "A" else "B") + signature[6:]
    tampered = [
        forged,  # signed with someone else's secret
        other.rsplit(".", 1)[0] + "." + signature,  # another payload under this signature
        payload + "." + flipped,  # one character of the signature changed
        token[:-3],  # truncated
        "not-a-token",
    ]
    for bad in tampered:
        _assert_no_file(httpx.get(f"{api.url}/downloads/{bad}"), 403)
    assert httpx.get(artifact["downloadUrl"]).status_code == 200  # the genuine token still works


def test_an_expired_token_is_410(
    gql: GraphQLClient, api: ApiProcess, env: dict[str, str], artifact: dict[str, Any]
) -> None:
    grant = _grant(env, artifact["downloadUrl"])
    expired = DownloadTokens(env["SECRET_KEY"]).issue(
        grant.key, filename=grant.filename, content_type=grant.content_type, expires_in=-5
    )
    response = httpx.get(f"{api.url}/downloads/{expired}")
    _assert_no_file(response, 410)
    assert "expired" in response.json()["detail"]

    short = gql(ARTIFACT_QUERY, {"id": artifact["jobId"], "expiresIn": 1})["job"]["artifact"]["downloadUrl"]
    assert httpx.get(short).status_code == 200
    time.sleep(2.1)
    _assert_no_file(httpx.get(short), 410)


def test_a_deleted_file_is_410_not_500(env: dict[str, str], artifact: dict[str, Any]) -> None:
    grant = _grant(env, artifact["downloadUrl"])
    path = Path(env["STORAGE_DIR"]) / grant.key
    assert path.is_file()
    path.unlink()

    response = httpx.get(artifact["downloadUrl"])
    _assert_no_file(response, 410)
    assert "deleted" in response.json()["detail"]
    ranged = httpx.get(artifact["downloadUrl"], headers={"Range": "bytes=0-99"})
    _assert_no_file(ranged, 410)


# The local backend on its own.

SECRET = "unit-test-secret-key-of-some-length"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "root", DownloadTokens(SECRET), "http://files.example/")


def _chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_put_open_delete_round_trip(storage: LocalStorage) -> None:
    key = "tenants/t1/jobs/j1/out.bin"
    stored = storage.put_stream(
        key, _chunks(b"hello ", b"", b"world"), content_type="text/plain", filename="out.bin"
    )
    assert stored.key == key
    assert stored.byte_size == 11
    assert stored.sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert storage.exists(key)
    with storage.open(key) as handle:
        assert handle.read() == b"hello world"
    assert _files(storage.root) == [key]  # no partial files left behind

    storage.delete(key)
    assert not storage.exists(key)
    with pytest.raises(FileNotFoundError):
        storage.open(key)
    storage.delete(key)  # deleting what is gone is not an error


def test_re_put_overwrites(storage: LocalStorage) -> None:
    key = "tenants/t1/jobs/j1/speech.wav"
    storage.put_stream(key, _chunks(b"first run, longer content"), content_type="audio/wav", filename="a")
    second = storage.put_stream(key, _chunks(b"second"), content_type="audio/wav", filename="a")
    with storage.open(key) as handle:
        assert handle.read() == b"second"
    assert second.byte_size == 6
    assert _files(storage.root) == [key]


def test_a_failed_upload_leaves_the_previous_object_and_no_partial_file(storage: LocalStorage) -> None:
    key = "tenants/t1/jobs/j1/speech.wav"
    storage.put_stream(key, _chunks(b"complete"), content_type="audio/wav", filename="a")

    def broken() -> Iterator[bytes]:
        yield b"half of it"
        raise RuntimeError("the producer died")

    with pytest.raises(RuntimeError, match="producer died"):
        storage.put_stream(key, broken(), content_type="audio/wav", filename="a")
    with storage.open(key) as handle:
        assert handle.read() == b"complete"
    assert _files(storage.root) == [key]


@pytest.mark.parametrize(
    "key", ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "", ".", "a/..", "link/escape.txt"]
)
def test_keys_outside_the_root_are_refused(storage: LocalStorage, tmp_path: Path, key: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    storage.root.mkdir(parents=True)
    os.symlink(outside, storage.root / "link")

    with pytest.raises(ValueError, match="invalid storage key"):
        storage.put_stream(key, _chunks(b"x"), content_type="text/plain", filename="x")
    for operation in (storage.open, storage.exists, storage.delete):
        with pytest.raises(ValueError, match="invalid storage key"):
            operation(key)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_signed_url_names_the_object_and_expires(storage: LocalStorage) -> None:
    url = storage.signed_url(
        "tenants/t/jobs/j/a.wav", filename="a.wav", content_type="audio/wav", expires_in=60
    )
    assert url.startswith("http://files.example/downloads/")
    grant = storage.tokens.check(_token(url))
    assert (grant.key, grant.filename, grant.content_type) == ("tenants/t/jobs/j/a.wav", "a.wav", "audio/wav")
    assert time.time() + 55 < grant.expires_at <= time.time() + 60

    stale = storage.tokens.issue("k", filename="a", content_type="b", expires_in=-1)
    with pytest.raises(TokenExpired):
        storage.tokens.check(stale)
    with pytest.raises(TokenInvalid):
        DownloadTokens("a-different-secret-entirely").check(_token(url))
