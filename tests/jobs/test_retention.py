"""Retention: old finished jobs go with their files, file first; a row that outlives its file is EXPIRED."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import update

from service.db import session_scope
from service.jobs.models import Job
from service.jobs.retention import delete_old_jobs, expire_artifacts
from service.models import utcnow
from service.settings import get_settings
from tests.conftest import JOB_QUERY, SPEECH_MUTATION, GraphQLClient
from tests.servers import ServiceProcess


def _finished_job(gql: GraphQLClient, text: str = "Keep me for a while.") -> dict[str, object]:
    job_id = gql(SPEECH_MUTATION, {"input": {"text": text}})["generateSpeech"]["job"]["id"]
    job: dict[str, object] = gql.wait_for_job(job_id)
    assert job["status"] == "SUCCEEDED"
    return job


def _age(job_id: str, days: float, status: str | None = None) -> None:
    values: dict[str, object] = {"finished_at": utcnow() - timedelta(days=days)}
    if status:
        values["status"] = status
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))  # type: ignore[arg-type]


def _file(env: dict[str, str], job: dict[str, object]) -> Path:
    with session_scope() as session:
        row = session.get(Job, job["id"])
        assert row is not None
        assert row.artifact_key
        return Path(env["STORAGE_DIR"]) / row.artifact_key


def test_old_jobs_lose_their_file_then_their_row(
    gql: GraphQLClient, worker: ServiceProcess, env: dict[str, str]
) -> None:
    days = get_settings().retention_succeeded_days
    fresh, old = _finished_job(gql), _finished_job(gql)
    old_file = _file(env, old)
    url = gql(JOB_QUERY, {"id": old["id"]})["job"]["artifact"]["downloadUrl"]
    _age(str(old["id"]), days + 1)

    with session_scope() as session:
        assert expire_artifacts(session) >= 1
    expired = gql(JOB_QUERY, {"id": old["id"]})["job"]
    assert expired["status"] == "EXPIRED"
    assert expired["artifact"] is None
    assert not old_file.exists()
    assert httpx.get(url).status_code == 410
    assert "job.expired" in [event["type"] for event in expired["events"]]

    with session_scope() as session:
        assert delete_old_jobs(session) >= 1
    assert gql(JOB_QUERY, {"id": old["id"]})["job"] is None
    assert gql(JOB_QUERY, {"id": fresh["id"]})["job"]["status"] == "SUCCEEDED"
    assert _file(env, fresh).exists()


def test_failed_jobs_are_kept_longer(gql: GraphQLClient, worker: ServiceProcess) -> None:
    settings = get_settings()
    kept, gone = _finished_job(gql), _finished_job(gql)
    _age(str(kept["id"]), settings.retention_succeeded_days + 1, status="FAILED")
    _age(str(gone["id"]), settings.retention_failed_days + 1, status="FAILED")
    with session_scope() as session:
        delete_old_jobs(session)
    assert gql(JOB_QUERY, {"id": kept["id"]})["job"]["status"] == "FAILED"
    assert gql(JOB_QUERY, {"id": gone["id"]})["job"] is None


def test_a_download_of_a_vanished_file_is_410_and_the_job_reads_expired(
    gql: GraphQLClient, worker: ServiceProcess, env: dict[str, str]
) -> None:
    job = _finished_job(gql)
    url = gql(JOB_QUERY, {"id": job["id"]})["job"]["artifact"]["downloadUrl"]
    _file(env, job).unlink()  # e.g. a bucket lifecycle rule, or an operator
    response = httpx.get(url)
    assert response.status_code == 410
    assert "deleted" in response.json()["detail"]
    assert gql(JOB_QUERY, {"id": job["id"]})["job"]["status"] == "EXPIRED"
