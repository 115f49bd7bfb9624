"""The service behind a real PgBouncer in transaction mode: each transaction may get another server
connection, shared with other clients, so nothing may outlive a transaction on it; LISTEN goes to
DATABASE_DIRECT_URL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.db import enter_tenant, make_engine, session_scope
from service.embedded import EmbeddedRedis
from service.jobs.runner import run_job
from tests.clusters import PgBouncer, wait_until
from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle, commit_job_without_enqueue
from tests.receiver import Receiver
from tests.servers import ApiProcess, ServiceProcess, clear_caches
from tests.webhooks.support import create_endpoint

FIND_JOB = "query($id: ID!) { job(id: $id) { id } }"
WHO_AM_I = text("SELECT current_user, coalesce(current_setting('app.tenant_id', true), '')")


@pytest.fixture(scope="module")
def pgbouncer(postgres_server_url: str, workdir: Path) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(postgres_server_url, workdir / "pgbouncer", pool_size=1).start()
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pooled_api(env: dict[str, str], pgbouncer: PgBouncer, workdir: Path) -> Iterator[ApiProcess]:
    """API, worker (with its deliverer) and scheduler on DATABASE_URL = PgBouncer, with their own Redis
    (so the suite's other worker takes none of their jobs). Deliverers poll only every 30 s: a webhook
    sent sooner was woken by a NOTIFY, received on DATABASE_DIRECT_URL."""
    redis = EmbeddedRedis(workdir / "pooled-redis", persist=False)
    pooled = {
        **env,
        "DATABASE_URL": pgbouncer.url_for(env["DATABASE_URL"]),
        "DATABASE_DIRECT_URL": env["DATABASE_URL"],
        "REDIS_URL": redis.start(),
        "WEBHOOK_POLL_SECONDS": "30",
        "WORKER_CONCURRENCY": "2",
    }
    api = ApiProcess(pooled, workdir / "pooled-api.log")
    api.env["PUBLIC_BASE_URL"] = pooled["PUBLIC_BASE_URL"] = api.url
    api.start()
    others = [
        ServiceProcess([role], pooled, workdir / f"pooled-{role}.log").start()
        for role in ("worker", "scheduler")
    ]
    yield api
    for process in [api, *others]:
        process.stop()
    redis.stop()


def test_a_transaction_leaves_neither_tenant_role_nor_prepared_statements_to_the_next_client(
    env: dict[str, str], pgbouncer: PgBouncer, make_tenant: Callable[..., TenantHandle]
) -> None:
    """One server connection behind the pooler serves two clients in turn: the second must not act
    as the first one's tenant, and statements run often (which psycopg would otherwise prepare on
    whichever server connection it had) keep working."""
    pooled = pgbouncer.url_for(env["DATABASE_URL"])
    first, second = (make_engine(pooled, prepared_statements=False) for _ in range(2))
    tenant = make_tenant("pooled")
    try:
        for _ in range(12):
            with session_scope(first) as session:
                enter_tenant(session, tenant.id)
                assert session.execute(WHO_AM_I).one() == ("claimcheck_tenant", tenant.id)
            with session_scope(second) as session:
                assert session.execute(WHO_AM_I).one() == (make_url(pooled).username, "")
    finally:
        first.dispose()
        second.dispose()


def test_jobs_webhooks_and_tenant_isolation_hold_through_pgbouncer(
    pooled_api: ApiProcess, make_tenant: Callable[..., TenantHandle], receiver: Receiver
) -> None:
    tenants = [make_tenant("pooled-a"), make_tenant("pooled-b")]
    clients = [GraphQLClient(pooled_api.url, tenant.api_key) for tenant in tenants]
    try:
        create_endpoint(clients[0], receiver.url + "/pooled", eventTypes=["job.succeeded"])

        def submit(index: int) -> tuple[int, str]:
            payload = clients[index % 2](SPEECH_MUTATION, {"input": {"text": f"Pooled job {index}."}})
            assert payload["generateSpeech"]["userErrors"] == []
            return index % 2, str(payload["generateSpeech"]["job"]["id"])

        with ThreadPoolExecutor(max_workers=6) as pool:  # requests at once share one server connection
            submitted = list(pool.map(submit, range(12)))
        for owner, job_id in submitted:
            job = clients[owner].wait_for_job(job_id)
            assert (job["status"], job["attempt"]) == ("SUCCEEDED", 1), job
            assert clients[1 - owner](FIND_JOB, {"id": job_id})["job"] is None
        listed = clients[1]("{ jobs(first: 50) { edges { node { id } } } }")["jobs"]["edges"]
        assert sorted(edge["node"]["id"] for edge in listed) == sorted(
            job for owner, job in submitted if owner == 1
        )

        # Deliverers poll every 30 s here: these arrive in time only because the NOTIFY reached them.
        mine = {job_id for owner, job_id in submitted if owner == 0}
        requests = receiver.wait_for("/pooled", lambda got: len(got) >= len(mine), timeout=20)
        assert len(requests) == len(mine)
    finally:  # a failure leaves no open sockets for a later test to trip over
        for client in clients:
            client.http.close()


def test_a_run_through_a_pgbouncer_restart_succeeds_on_its_first_attempt_and_starts_once(
    env: dict[str, str],
    postgres_server_url: str,
    make_tenant: Callable[..., TenantHandle],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The pooler goes down (1.5 s) during a run and is back after it ended. The handler's last
    progress report (test-slow with one step: reported by the handler itself, 1.2 s in) and the final
    write both meet the outage: the progress is kept for the final write, which waits for the pooler.
    Neither may fail the run (its retry would run the handler again) or leave the job RUNNING for the
    lost-runs sweep to run again."""
    import tests.plugin_kinds  # noqa: F401 - registers test-slow in this process, as the test worker does

    own = PgBouncer(postgres_server_url, tmp_path / "pgbouncer").start()  # the module's stays undisturbed
    job_id = commit_job_without_enqueue(
        make_tenant("pooler-restart").id, "test-slow", {"seconds": 1.2, "steps": 1}
    )
    direct = make_engine(env["DATABASE_URL"])

    def status_now() -> str:
        with direct.connect() as connection:
            query = text("SELECT status FROM jobs WHERE id = :id")
            return str(connection.execute(query, {"id": job_id}).scalar_one())

    monkeypatch.setenv("DATABASE_URL", own.url_for(env["DATABASE_URL"]))
    monkeypatch.setenv("DATABASE_DIRECT_URL", env["DATABASE_URL"])
    clear_caches()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            run = pool.submit(run_job, job_id)
            wait_until(lambda: status_now() == "RUNNING", "the run started", 10, None)
            time.sleep(0.3)  # the heartbeat has written the first progress: the handler writes the next
            own.restart(down_seconds=1.5)
            result = run.result(timeout=30)
    finally:
        clear_caches()
        own.stop()
    assert result is not None
    assert result.status == "SUCCEEDED"
    with direct.connect() as connection:
        status, attempt, final = connection.execute(
            text("SELECT status, attempt, progress FROM jobs WHERE id = :id"), {"id": job_id}
        ).one()
        started = connection.execute(
            text("SELECT count(*) FROM job_events WHERE job_id = :id AND type = 'job.started'"),
            {"id": job_id},
        ).scalar_one()
    direct.dispose()
    assert (status, attempt, final, started) == ("SUCCEEDED", 1, 1.0, 1)
