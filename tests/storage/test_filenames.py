"""A kind's filename is untrusted: the stored key stays under the job's prefix and the download names
a safe file, whatever the kind returns (run by the real worker, downloaded over real HTTP)."""

from __future__ import annotations

import unicodedata
import uuid
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.db import session_scope
from service.jobs.service import create_job
from service.storage.base import FALLBACK_FILENAME, MAX_FILENAME_BYTES, artifact_key, safe_filename
from service.storage.tokens import DownloadTokens
from tests.conftest import GraphQLClient, TenantHandle
from tests.servers import ServiceProcess

ESCAPE = "escaped-by-a-hostile-filename.txt"  # fixed: pytest-xdist workers must collect the same ids
NAMES = {
    "speech.wav": "speech.wav",
    "résumé final (1).pdf": "résumé final (1).pdf",  # odd but safe: kept
    'say "hi"; now.txt': 'say "hi"; now.txt',
    "e\u0301t\u00e9.txt": "\u00e9t\u00e9.txt",  # NFC
    f"../../../../{ESCAPE}": ESCAPE,
    "a/b\\c.txt": "c.txt",
    "reports/": "reports",
    "..": FALLBACK_FILENAME,
    "": FALLBACK_FILENAME,
    " .bashrc ": "bashrc",
    "evil\r\nSet-Cookie: a=b.txt": "evil__Set-Cookie: a=b.txt",
    "invoice\u202efdp.exe": "invoice_fdp.exe",  # a right-to-left override would show "exe.pdf"
    "nul\x00byte.txt": "nul_byte.txt",
    "x" * 500 + ".txt": "x" * (MAX_FILENAME_BYTES - 4) + ".txt",
    "é" * 200: "é" * (MAX_FILENAME_BYTES // 2),
}


@pytest.mark.parametrize(("name", "expected"), NAMES.items(), ids=[repr(n)[:40] for n in NAMES])
def test_a_filename_becomes_a_safe_basename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected
    assert artifact_key("ten_1", "job_1", name) == f"tenants/ten_1/jobs/job_1/{expected}"


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(name=st.text(max_size=400) | st.text(alphabet="./\\ \t\r\n.x\u202e\x00", max_size=40))
def test_any_filename_stays_one_safe_segment_under_the_jobs_prefix(name: str) -> None:
    safe = safe_filename(name)
    assert safe
    assert safe_filename(safe) == safe
    assert "/" not in safe
    assert "\\" not in safe
    assert not safe.startswith(".")
    assert safe == safe.strip()
    assert len(safe.encode()) <= MAX_FILENAME_BYTES
    assert all(unicodedata.category(char)[0] != "C" for char in safe)
    prefix, _, last = artifact_key("ten_1", "job_1", name).rpartition("/")
    assert (prefix, last) == ("tenants/ten_1/jobs/job_1", safe)


E2E_NAMES = [
    f"../../../../{ESCAPE}",
    "a/b\\c.txt",
    "evil\r\nSet-Cookie: a=b.txt",
    "invoice\u202efdp.exe",
    "x" * 500 + ".txt",
    "résumé final (1).pdf",
]


def _disposition_filename(header: str) -> str:
    """The filename a browser takes from Content-Disposition (RFC 6266: filename* wins)."""
    assert "\r" not in header
    assert "\n" not in header
    parameters = dict(part.strip().split("=", 1) for part in header.split(";")[1:])
    if "filename*" in parameters:
        charset, _, encoded = parameters["filename*"].partition("''")
        assert charset.lower() == "utf-8"
        return unquote(encoded)
    return parameters["filename"].strip('"')


@pytest.mark.parametrize("name", E2E_NAMES, ids=[repr(n)[:30] for n in E2E_NAMES])
def test_a_kinds_hostile_filename_is_stored_under_the_job_and_downloaded_safely(
    gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess, env: dict[str, str], name: str
) -> None:
    content = f"named {uuid.uuid4().hex}\n"
    with session_scope() as session:
        job_id = create_job(session, tenant.id, "test-named", {"filename": name, "content": content}, None).id
    job = gql.wait_for_job(job_id)
    assert job["status"] == "SUCCEEDED", (job, worker.log()[-3000:])
    expected = NAMES[name]
    assert job["artifact"]["filename"] == expected

    url = job["artifact"]["downloadUrl"]
    grant = DownloadTokens(env["SECRET_KEY"]).check(url.rsplit("/downloads/", 1)[1])
    assert grant.key == f"tenants/{tenant.id}/jobs/{job_id}/{expected}"
    storage = Path(env["STORAGE_DIR"])
    assert (storage / grant.key).read_text() == content
    # The escape name exists nowhere but under a job's prefix (the escape case's own job).
    for path in storage.rglob(ESCAPE):
        parts = path.relative_to(storage).parts
        assert (len(parts), parts[0], parts[2]) == (5, "tenants", "jobs"), path

    response = httpx.get(url)
    assert response.status_code == 200
    assert response.text == content
    assert _disposition_filename(response.headers["content-disposition"]) == expected
