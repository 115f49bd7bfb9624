"""`claimcheck jobs ...` against the real API and worker: speak, wait, download, exit codes, JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.conftest import GraphQLClient, TenantHandle
from tests.servers import ServiceProcess
from tests.tenant_cli.conftest import Claimcheck, start_job


def test_speak_wait_output_writes_the_wav_whose_sha256_is_the_artifacts(
    claimcheck: Claimcheck, gql: GraphQLClient, worker: ServiceProcess, tmp_path: Path
) -> None:
    output = tmp_path / "hello.wav"
    done = claimcheck("jobs", "speak", "Hello from the command line.", "--wait", "--output", str(output))

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    job_id = lines[0]
    assert job_id.startswith("job_")
    # not a terminal: one plain line per change, the last one SUCCEEDED, then the file
    changes = [line for line in lines[1:] if job_id in line]
    assert "SUCCEEDED" in changes[-1]
    assert "100%" in changes[-1]
    assert lines[-1].startswith(f"wrote {output}")
    artifact = gql("query($id: ID!) { job(id: $id) { artifact { sha256 byteSize } } }", {"id": job_id})[
        "job"
    ]["artifact"]
    data = output.read_bytes()
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WAVE"
    assert len(data) == artifact["byteSize"]
    assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
    assert not output.with_name("hello.wav.part").exists()

    shown = json.loads(claimcheck("jobs", "get", job_id, "--json").stdout)
    assert shown["status"] == "SUCCEEDED"
    assert shown["artifact"]["sha256"] == artifact["sha256"]
    listed = json.loads(claimcheck("jobs", "list", "--status", "succeeded", "--json").stdout)
    assert job_id in [job["id"] for job in listed]
    again = tmp_path / "again.wav"
    downloaded = claimcheck("jobs", "download", job_id, "--output", str(again), "--json")
    assert downloaded.returncode == 0, downloaded.stderr
    assert json.loads(downloaded.stdout)["sha256"] == artifact["sha256"]
    assert again.read_bytes() == data


def test_a_failed_job_exits_1_with_its_error(
    claimcheck: Claimcheck, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    job_id = start_job(tenant.id, "test-overrun", {"seconds": 5, "steps": 5})  # killed at its 1 s timeout

    done = claimcheck("jobs", "wait", job_id, "--json")

    assert done.returncode == 1, done.stderr
    job = json.loads(done.stdout)
    assert job["id"] == job_id
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "TIMEOUT"


def test_a_bad_key_exits_3_with_a_clear_message(claimcheck: Claimcheck) -> None:
    refused = claimcheck("jobs", "list", key="ck_nope_" + "x" * 32)
    assert refused.returncode == 3
    assert (
        refused.stderr.strip()
        == "error (UNAUTHENTICATED): the API refused the key: invalid or missing API key"
    )
    assert refused.stdout == ""

    missing = claimcheck("jobs", "speak", "hi", key="")
    assert missing.returncode == 3
    assert "CLAIMCHECK_API_KEY is not set" in missing.stderr


def test_bad_usage_exits_2_and_the_apis_refusals_keep_their_codes(
    claimcheck: Claimcheck, worker: ServiceProcess
) -> None:
    assert claimcheck("jobs", "speak").returncode == 2  # argparse: TEXT missing
    unknown_voice = claimcheck("jobs", "speak", "hi", "--voice", "klingon", "--json")
    assert unknown_voice.returncode == 2
    assert json.loads(unknown_voice.stdout)["error"]["code"] == "VALIDATION"
    absent = claimcheck("jobs", "get", "job_" + "0" * 26)
    assert absent.returncode == 1
    assert "error (NOT_FOUND)" in absent.stderr
