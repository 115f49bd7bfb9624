"""A speech job through the real API and worker processes with STORAGE_BACKEND=gcs lands in the emulator.

The session's API and worker use the local backend, so this module starts its own pair with the gcs
settings. They share the session's Postgres but use another Redis database, so the session's worker
never takes this module's jobs (and this worker runs only the jobs queue, not webhook deliveries).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle
from tests.gcs import GcsEmulator, ServiceAccountKey, verify_v4_signed_url
from tests.servers import ApiProcess, ServiceProcess

ARTIFACT_QUERY = """
query Artifact($id: ID!, $expiresIn: Int) {
  job(id: $id) {
    status error { code message }
    artifact { filename contentType byteSize sha256 downloadUrl(expiresIn: $expiresIn) }
  }
}
"""


def _other_redis_db(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/9"))


@pytest.fixture(scope="module")
def gcs_bucket(gcs_emulator: GcsEmulator) -> str:
    name = f"claimcheck-e2e-{secrets.token_hex(4)}"
    gcs_emulator.create_bucket(name)
    return name


@pytest.fixture(scope="module")
def gcs_env(
    env: dict[str, str], gcs_emulator: GcsEmulator, gcs_key: ServiceAccountKey, gcs_bucket: str
) -> dict[str, str]:
    return {
        **env,
        "REDIS_URL": _other_redis_db(env["REDIS_URL"]),
        "STORAGE_BACKEND": "gcs",
        "GCS_BUCKET": gcs_bucket,
        "GCS_CHUNK_BYTES": str(256 * 1024),
        "STORAGE_EMULATOR_HOST": gcs_emulator.url,
        "GOOGLE_APPLICATION_CREDENTIALS": str(gcs_key.path),
    }


@pytest.fixture(scope="module")
def gcs_api(gcs_env: dict[str, str], workdir: Path) -> Iterator[ApiProcess]:
    process = ApiProcess(gcs_env, workdir / "gcs-api.log")
    process.env["PUBLIC_BASE_URL"] = process.url
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gcs_worker(gcs_env: dict[str, str], gcs_api: ApiProcess, workdir: Path) -> Iterator[ServiceProcess]:
    env = {**gcs_env, "PUBLIC_BASE_URL": gcs_api.url}
    process = ServiceProcess(["worker", "--queues", "jobs"], env, workdir / "gcs-worker.log").start()
    yield process
    process.stop()


def test_a_worker_speech_artifact_lands_in_gcs_and_downloads_from_a_v4_url(
    gcs_api: ApiProcess,
    gcs_worker: ServiceProcess,
    tenant: TenantHandle,
    gcs_emulator: GcsEmulator,
    gcs_key: ServiceAccountKey,
    gcs_bucket: str,
) -> None:
    gql = GraphQLClient(gcs_api.url, tenant.api_key)
    try:
        payload = gql(SPEECH_MUTATION, {"input": {"text": "Stored in a bucket, fetched by a signed URL."}})
        job_id = payload["generateSpeech"]["job"]["id"]
        finished = gql.wait_for_job(job_id)
        assert finished["status"] == "SUCCEEDED", (finished, gcs_worker.log()[-4000:])
        job = gql(ARTIFACT_QUERY, {"id": job_id, "expiresIn": 30 * 24 * 3600})["job"]
    finally:
        gql.http.close()
    artifact = job["artifact"]
    key = f"tenants/{tenant.id}/jobs/{job_id}/{artifact['filename']}"

    # The object is in the bucket, whole, with its type and name.
    meta = httpx.get(f"{gcs_emulator.url}/storage/v1/b/{gcs_bucket}/o/{key.replace('/', '%2F')}")
    assert meta.status_code == 200, meta.text
    assert int(meta.json()["size"]) == artifact["byteSize"]
    assert meta.json()["contentType"] == artifact["contentType"] == "audio/wav"
    assert meta.json()["contentDisposition"] == f'attachment; filename="{artifact["filename"]}"'

    # downloadUrl is a V4 URL at the emulator, signed by the service account, clamped to 7 days.
    url = artifact["downloadUrl"]
    assert url.startswith(f"{gcs_emulator.url}/{gcs_bucket}/{key}?")
    claims = verify_v4_signed_url(url, gcs_key.public_key)
    assert claims.email == gcs_key.email
    assert claims.expires_in == 7 * 24 * 3600

    # The bytes come from the emulator, never through the API.
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content[:4] == b"RIFF"
    assert response.content[8:12] == b"WAVE"
    assert len(response.content) == artifact["byteSize"]
    assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
    assert response.headers["content-type"] == "audio/wav"
