"""Signing through IAM signBlob when there is no key file, as on Cloud Run, GKE or Compute Engine.

A child process runs the gcs backend with no GOOGLE_APPLICATION_CREDENTIALS, against Google's metadata
server and IAM faked on loopback (tests/google_iam.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.gcs import GcsEmulator, make_service_account_key, verify_v4_signed_url
from tests.google_iam import ACCESS_TOKEN, fake_google_iam

REPO_ROOT = Path(__file__).resolve().parents[2]


CHILD = """
import json, sys
from service.storage.gcs import GcsStorage

storage = GcsStorage(sys.argv[1], emulator_host=sys.argv[2])
storage.put_stream("tenants/t/jobs/j/a.wav", iter([b"RIFF", b"....WAVE"]), content_type="audio/wav",
                   filename="a.wav")
url = storage.signed_url("tenants/t/jobs/j/a.wav", filename="a.wav", content_type="audio/wav",
                         expires_in=3600)
print(json.dumps({"url": url, "uses_key": storage.signer().uses_key}))
"""


def test_without_a_key_file_urls_are_signed_by_iam_sign_blob(
    gcs_emulator: GcsEmulator, tmp_path: Path
) -> None:
    account = make_service_account_key(tmp_path / "iam", "runtime")  # IAM holds it; the child never sees it
    bucket = "claimcheck-iam"
    gcs_emulator.create_bucket(bucket)

    with fake_google_iam(account, tmp_path) as (env, seen):
        env["PYTHONPATH"] = str(REPO_ROOT)
        child = subprocess.run(
            [sys.executable, "-c", CHILD, bucket, gcs_emulator.url],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert child.returncode == 0, child.stderr.decode()[-4000:]
    result = json.loads(child.stdout.decode().strip().splitlines()[-1])

    assert result["uses_key"] is False
    assert any("/service-accounts/" in path and "/token" in path for path in seen.metadata)
    assert seen.refused == []
    assert len(seen.sign_blob) == 1
    assert seen.sign_blob[0]["authorization"] == f"Bearer {ACCESS_TOKEN}"

    url = result["url"]
    claims = verify_v4_signed_url(url, account.public_key)
    assert claims.email == account.email
    assert claims.expires_in == 3600
    assert seen.sign_blob[0]["payload"].startswith(f"GOOG4-RSA-SHA256\n{claims.params['X-Goog-Date']}\n")
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"RIFF....WAVE"


def test_with_an_emulator_and_no_credentials_at_all_signing_refuses_clearly(
    gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.storage.gcs import GcsStorage

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("GCE_METADATA_HOST", raising=False)
    gcs_emulator.create_bucket("claimcheck-nocreds")
    storage = GcsStorage("claimcheck-nocreds", emulator_host=gcs_emulator.url)
    storage.put_stream("k/a.txt", iter([b"x"]), content_type="text/plain", filename="a.txt")  # uploads work
    with pytest.raises(RuntimeError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        storage.signed_url("k/a.txt", filename="a.txt", content_type="text/plain", expires_in=60)
