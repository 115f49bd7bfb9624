"""Signing download URLs never holds up the API's event loop.

An API process on the gcs backend signs through IAM signBlob, as on Cloud Run (Google faked on loopback
by tests/google_iam.py, each signature taking SIGN_DELAY like a round trip to Google). While it
answers a query for a page of download URLs, /healthz must answer promptly: signing on the event loop
would hold it for the whole page.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from service.db import session_scope
from service.jobs.runner import start
from service.jobs.service import succeed
from service.storage.base import StoredObject
from tests.conftest import GraphQLClient, TenantHandle, commit_job_without_enqueue
from tests.gcs import GcsEmulator, make_service_account_key, verify_v4_signed_url
from tests.google_iam import fake_google_iam
from tests.servers import ApiProcess

SIGN_DELAY = 0.05
URLS = 100  # 100 x 50 ms: five seconds of signing for one query
PAGE = "{ jobs(first: 100) { nodes { artifact { downloadUrl } } } }"
PROMPT = 0.5  # seconds /healthz may take while the query runs


def _succeeded_jobs(tenant: TenantHandle, count: int) -> None:
    """count SUCCEEDED jobs with an artifact, as workers would leave them (the files are not needed to
    sign URLs for them)."""
    for _ in range(count):
        job = start(commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 0.1}))
        assert job is not None
        stored = StoredObject(key=f"tenants/{tenant.id}/jobs/{job.id}/a.txt", byte_size=1, sha256="0" * 64)
        with session_scope() as session:
            session.add(job)
            succeed(session, job, stored, filename="a.txt", content_type="text/plain")


def _while_running(action: Callable[[], Any], probe: Callable[[], None]) -> Any:
    """action's result, calling probe over and over while action runs in another thread."""
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(action()))
    thread.start()
    while thread.is_alive():
        probe()
        time.sleep(0.02)
    thread.join()
    return outcome[0]


def test_healthz_answers_promptly_while_a_query_signs_many_download_urls(
    env: dict[str, str],
    gcs_emulator: GcsEmulator,
    make_tenant: Callable[..., TenantHandle],
    tmp_path: Path,
) -> None:
    account = make_service_account_key(tmp_path / "iam", "signer")
    bucket = f"claimcheck-signing-{secrets.token_hex(4)}"
    gcs_emulator.create_bucket(bucket)
    tenant = make_tenant("signing")
    _succeeded_jobs(tenant, URLS)
    storage = {"STORAGE_BACKEND": "gcs", "GCS_BUCKET": bucket, "STORAGE_EMULATOR_HOST": gcs_emulator.url}

    with fake_google_iam(account, tmp_path, base_env={**env, **storage}, sign_delay=SIGN_DELAY) as (
        api_env,
        seen,
    ):
        api = ApiProcess(api_env, tmp_path / "api.log").start()
        try:
            client = GraphQLClient(api.url, tenant.api_key)
            healthz: list[float] = []

            def probe() -> None:
                began = time.monotonic()
                assert httpx.get(f"{api.url}/healthz", timeout=30).status_code == 200
                healthz.append(time.monotonic() - began)

            began = time.monotonic()
            nodes = _while_running(lambda: client(PAGE)["jobs"]["nodes"], probe)
            took = time.monotonic() - began
            client.http.close()
        finally:
            api.stop()

    urls = [node["artifact"]["downloadUrl"] for node in nodes]
    assert len(set(urls)) == URLS
    assert verify_v4_signed_url(urls[0], account.public_key).email == account.email
    assert len(seen.sign_blob) >= URLS  # each URL was signed by IAM, a round trip each
    assert max(healthz) < PROMPT, f"/healthz took up to {max(healthz):.2f} s while the query ran {took:.2f} s"
    assert len(healthz) >= 3, f"the query took {took:.2f} s: too short to probe /healthz meanwhile"
