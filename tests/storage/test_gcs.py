"""The gcs backend against fake-gcs-server: metadata, checksums, V4 signatures, and a GCS that breaks."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import google_crc32c
import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from google.api_core.exceptions import GoogleAPICallError

from service.settings import Settings
from service.storage.factory import make_storage
from service.storage.gcs import (
    ChunkStream,
    GcsStorage,
    ProducerFailed,
    UploadIntegrityError,
    content_disposition,
)
from tests.gcs import (
    FaultProxy,
    GcsEmulator,
    ProxyRequest,
    ServiceAccountKey,
    make_service_account_key,
    verify_v4_signed_url,
)

KEY = "tenants/ten_1/jobs/job_1/speech.wav"
CHUNK = 256 * 1024
SECRET_KEY = "gcs-test-secret-key-" + "x" * 20


def _chunks(data: bytes, size: int = 100_000) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def test_object_carries_type_disposition_and_checksums(gcs: GcsStorage) -> None:
    data = os.urandom(3 * CHUNK + 5)
    stored = gcs.put_stream(KEY, _chunks(data), content_type="audio/wav", filename="speech.wav")

    blob = gcs.client.bucket(gcs.bucket_name).get_blob(KEY)
    assert blob is not None
    assert blob.size == stored.byte_size == len(data)
    assert blob.content_type == "audio/wav"
    assert blob.content_disposition == 'attachment; filename="speech.wav"'
    assert blob.crc32c == base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
    assert blob.md5_hash == base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
    assert stored.sha256 == hashlib.sha256(data).hexdigest()


def test_content_disposition_keeps_odd_filenames_safe() -> None:
    assert content_disposition("a.wav") == 'attachment; filename="a.wav"'
    assert content_disposition('we"ird\\.csv') == (
        "attachment; filename=\"we_ird_.csv\"; filename*=UTF-8''we%22ird%5C.csv"
    )
    assert (
        content_disposition("a\r\nb.txt")
        == "attachment; filename=\"a__b.txt\"; filename*=UTF-8''a%0D%0Ab.txt"
    )
    assert content_disposition("résumé.wav") == (
        "attachment; filename=\"r_sum_.wav\"; filename*=UTF-8''r%C3%A9sum%C3%A9.wav"
    )


def test_chunk_stream_hands_out_chunks_and_can_resend_only_the_last() -> None:
    data = os.urandom(1000)
    stream = ChunkStream(iter([data[:7], b"", data[7:500], data[500:]]))
    assert stream.read(300) == data[:300]
    assert stream.read(300) == data[300:600]
    assert stream.tell() == 600
    stream.seek(450)  # the upload resends from what the server acknowledged
    assert stream.read(300) == data[450:750]
    with pytest.raises(io.UnsupportedOperation):
        stream.seek(449)  # older bytes are gone: memory stays at one chunk
    assert stream.read(300) == data[750:]
    assert stream.read(300) == b""

    def broken() -> Iterator[bytes]:
        yield b"x" * 10
        raise OSError("the producer's disk failed")

    failing = ChunkStream(broken())
    with pytest.raises(ProducerFailed) as failure:
        failing.read(100)
    assert isinstance(failure.value.original, OSError)


def test_upload_is_resumable_in_chunks_of_the_configured_size(
    make_gcs: Callable[..., GcsStorage], gcs_emulator: GcsEmulator
) -> None:
    with FaultProxy(gcs_emulator.url) as proxy:
        storage = make_gcs(proxy.url, chunk_bytes=CHUNK)
        data = os.urandom(4 * CHUNK + 10)
        storage.put_stream(KEY, _chunks(data, 70_000), content_type="audio/wav", filename="a.wav")
    assert any("uploadType=resumable" in r.path for r in proxy.requests if r.method == "POST")
    sizes = [len(r.body) for r in proxy.uploads()]
    assert sizes == [CHUNK] * 4 + [10]


def test_signed_url_is_a_v4_url_signed_by_the_service_account_key(
    gcs: GcsStorage, gcs_key: ServiceAccountKey, gcs_emulator: GcsEmulator
) -> None:
    gcs.put_stream(KEY, iter([b"RIFF....WAVE"]), content_type="audio/wav", filename="speech.wav")
    url = gcs.signed_url(KEY, filename="speech.wav", content_type="audio/wav", expires_in=900)

    assert url.startswith(f"{gcs_emulator.url}/{gcs.bucket_name}/{KEY}?")
    claims = verify_v4_signed_url(url, gcs_key.public_key)
    assert claims.email == gcs_key.email
    assert claims.expires_in == 900
    assert abs(claims.signed_at - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(seconds=5)
    assert claims.params["response-content-disposition"] == 'attachment; filename="speech.wav"'
    assert claims.params["response-content-type"] == "audio/wav"
    assert httpx.get(url).content == b"RIFF....WAVE"

    # The checker is not a rubber stamp: any change to what was signed, or another key, fails.
    tampered = [
        url.replace("speech.wav?", "other.wav?"),
        url.replace("X-Goog-Expires=900", "X-Goog-Expires=604800"),
        url.replace(gcs.bucket_name, gcs.bucket_name + "x"),
        url.replace("response-content-type=audio%2Fwav", "response-content-type=text%2Fhtml"),
        url.replace(gcs_emulator.url, "http://127.0.0.1:1"),
    ]
    for bad in tampered:
        assert bad != url
        with pytest.raises(InvalidSignature):
            verify_v4_signed_url(bad, gcs_key.public_key)
    stranger = make_service_account_key(Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"]).parent, "stranger")
    with pytest.raises(InvalidSignature):
        verify_v4_signed_url(url, stranger.public_key)


def test_signed_url_expiry_clamp_and_refusal(gcs: GcsStorage, gcs_key: ServiceAccountKey) -> None:
    gcs.put_stream(KEY, iter([b"x"]), content_type="audio/wav", filename="speech.wav")

    def expires(expires_in: int) -> int:
        url = gcs.signed_url(KEY, filename="speech.wav", content_type="audio/wav", expires_in=expires_in)
        return verify_v4_signed_url(url, gcs_key.public_key).expires_in

    assert expires(1) == 1
    assert expires(604_800) == 604_800
    assert expires(604_801) == 604_800  # GCS refuses longer; we clamp rather than fail
    assert expires(365 * 24 * 3600) == 604_800
    for past in (0, -60):
        with pytest.raises(ValueError, match="must expire in the future"):
            gcs.signed_url(KEY, filename="a", content_type="audio/wav", expires_in=past)


def test_an_open_reader_never_mixes_two_generations(gcs: GcsStorage) -> None:
    first, second = os.urandom(3 * CHUNK), os.urandom(3 * CHUNK)
    gcs.put_stream(KEY, _chunks(first), content_type="audio/wav", filename="a")
    with gcs.open(KEY) as reader:
        head = reader.read(CHUNK)
        gcs.put_stream(KEY, _chunks(second), content_type="audio/wav", filename="a")  # a re-run lands
        try:
            rest = reader.read()
        except GoogleAPICallError:
            rest = None  # the generation read is gone: an error, never the new bytes
    assert head == first[:CHUNK]
    assert rest is None or rest == first[CHUNK:]


def test_keys_are_checked(gcs: GcsStorage) -> None:
    for bad in ("", "/abs/key", "tenants/../other", "a/../../b"):
        with pytest.raises(ValueError, match="invalid storage key"):
            gcs.put_stream(bad, iter([b"x"]), content_type="text/plain", filename="x")
        with pytest.raises(ValueError, match="invalid storage key"):
            gcs.exists(bad)


# A GCS that misbehaves: a real proxy in front of the emulator corrupts or refuses chunk uploads.


def test_a_corrupted_upload_is_detected_and_the_object_deleted(
    make_gcs: Callable[..., GcsStorage], gcs_emulator: GcsEmulator
) -> None:
    with FaultProxy(gcs_emulator.url) as proxy:
        storage = make_gcs(proxy.url)

        def flip_one_byte(request: ProxyRequest) -> bytes | None:
            if request.method == "PUT" and len(request.body) > 10:
                proxy.fault = None  # once
                return request.body[:10] + bytes([request.body[10] ^ 0xFF]) + request.body[11:]
            return None

        proxy.fault = flip_one_byte
        with pytest.raises(UploadIntegrityError, match="deleted"):
            storage.put_stream(KEY, _chunks(os.urandom(2 * CHUNK)), content_type="audio/wav", filename="a")
    assert not storage.exists(KEY)


def test_a_transient_5xx_mid_upload_is_retried_and_the_object_is_whole(
    make_gcs: Callable[..., GcsStorage], gcs_emulator: GcsEmulator
) -> None:
    with FaultProxy(gcs_emulator.url) as proxy:
        storage = make_gcs(proxy.url)
        puts = 0

        def fail_second_chunk_once(request: ProxyRequest) -> tuple[int, bytes] | None:
            nonlocal puts
            if request.method == "PUT" and request.body:
                puts += 1
                if puts == 2:
                    return 503, b'{"error": {"code": 503, "message": "backend unavailable"}}'
            return None

        proxy.fault = fail_second_chunk_once
        data = os.urandom(3 * CHUNK + 99)
        stored = storage.put_stream(KEY, _chunks(data), content_type="audio/wav", filename="a")
    assert stored.byte_size == len(data)
    with storage.open(KEY) as handle:
        assert handle.read() == data


def test_gcs_down_mid_upload_fails_and_serves_no_half_object(
    make_gcs: Callable[..., GcsStorage], gcs_emulator: GcsEmulator
) -> None:
    with FaultProxy(gcs_emulator.url) as proxy:
        storage = make_gcs(proxy.url, retry_seconds=1.5)
        storage.put_stream(KEY, iter([b"the previous run"]), content_type="audio/wav", filename="a")
        fresh = KEY.replace("job_1", "job_2")
        puts = 0

        def down_after_first_chunk(request: ProxyRequest) -> tuple[int, bytes] | None:
            nonlocal puts
            puts += request.method == "PUT"
            return (503, b"{}") if puts > 1 else None

        for key in (KEY, fresh):
            puts = 0
            proxy.fault = down_after_first_chunk
            with pytest.raises(Exception) as failure:  # noqa: PT011 - whatever the client raises
                storage.put_stream(
                    key, _chunks(os.urandom(3 * CHUNK)), content_type="audio/wav", filename="a"
                )
            assert not isinstance(failure.value, AssertionError)
        proxy.fault = None
        with storage.open(KEY) as handle:
            assert handle.read() == b"the previous run"
        assert not storage.exists(fresh)


def test_settings_select_the_gcs_backend(gcs_emulator: GcsEmulator, gcs_key: ServiceAccountKey) -> None:
    settings = Settings(
        environment="test",
        secret_key=SECRET_KEY,
        storage_backend="gcs",
        gcs_bucket="from-settings",
        gcs_chunk_bytes=512 * 1024,
        storage_emulator_host=gcs_emulator.url.removeprefix("http://"),
    )
    storage = make_storage(settings)
    assert isinstance(storage, GcsStorage)
    assert (storage.bucket_name, storage.chunk_bytes, storage.url_endpoint) == (
        "from-settings",
        512 * 1024,
        gcs_emulator.url,
    )
    with pytest.raises(ValueError, match="GCS_BUCKET"):
        Settings(environment="test", secret_key=SECRET_KEY, storage_backend="gcs")
    with pytest.raises(ValueError, match="multiple of 262144"):
        Settings(
            environment="test",
            secret_key=SECRET_KEY,
            storage_backend="gcs",
            gcs_bucket="b",
            gcs_chunk_bytes=300_000,
        )
