"""A job's start counts its tenant's jobs holding a worker (max_running) through an index of those jobs
alone (migration 0015): the count is right, and reads none of the tenant's finished jobs however many
there are."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from service.db import read_pipelined, session_scope
from service.jobs import repository
from service.jobs.models import Job
from tests.conftest import TenantHandle, commit_job_without_enqueue
from tests.query_plans import nodes_on

FINISHED = 400
COLUMNS = [column.name for column in Job.__table__.columns]  # type: ignore[attr-defined]


def _jobs_like(seed: str, status: str, count: int) -> None:
    """`count` copies of the seed job in this status, committed."""
    chosen = {
        "id": "'job_' || left(md5(:status || g || :seed), 26)",
        "status": ":status",
        "idempotency_key": "NULL",
    }
    values = ", ".join(chosen.get(name, name) for name in COLUMNS)
    statement = (
        f"INSERT INTO jobs ({', '.join(COLUMNS)})"  # noqa: S608 - names from the model
        f" SELECT {values} FROM jobs, generate_series(1, :count) AS g WHERE id = :seed"
    )
    with session_scope() as session:
        session.execute(text(statement), {"seed": seed, "status": status, "count": count})


def _running_count(job_id: str, explain: bool = False) -> Any:
    sql, parameters = repository.running_count_statement(job_id)
    if explain:
        sql = "EXPLAIN (ANALYZE, FORMAT JSON) " + sql
    with session_scope() as session:
        return read_pipelined(session, [(sql, parameters)])[0][0]


def test_the_start_counts_only_the_jobs_holding_a_worker(tenant: TenantHandle) -> None:
    seed = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 1})  # no worker takes it
    _jobs_like(seed, "SUCCEEDED", FINISHED)
    _jobs_like(seed, "FAILED", 10)
    _jobs_like(seed, "RUNNING", 2)
    _jobs_like(seed, "CANCELING", 1)

    assert _running_count(seed)["running"] == 3

    plan = _running_count(seed, explain=True)["QUERY PLAN"][0]["Plan"]
    count_scan = next(scan for scan in nodes_on(plan, "jobs") if scan.get("Index Name") != "pk_jobs")
    assert count_scan["Index Name"] == "ix_jobs_tenant_id_running"
    assert count_scan["Actual Rows"] == 3
    assert count_scan.get("Rows Removed by Filter", 0) == 0  # the finished jobs are never read
