"""Postgres or Redis out of reach: callers get 503 UNAVAILABLE with Retry-After, never a masked 500,
and what can wait for Redis (taking a job) does not fail at all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from sqlmodel import Session, create_engine
from starlette.responses import Response

from service import outages
from service.embedded import EmbeddedRedis, free_port
from service.graphql_base import Connection, Context
from service.jobs.dispatch import RUN_JOB
from service.plans import DEFAULT_PLANS, Limits
from service.principal import Principal
from service.redis import JOBS_QUEUE
from service.scheduler import run_once
from service.schema import schema
from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle, commit_job_without_enqueue
from tests.servers import ApiProcess, ServiceProcess

DEAD_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:{port}/claimcheck?connect_timeout=2"


def _api_with(env: dict[str, str], workdir: Path, name: str, **overrides: str) -> Iterator[ApiProcess]:
    process = ApiProcess({**env, **overrides}, workdir / f"{name}.log")
    process.env["PUBLIC_BASE_URL"] = process.url
    process.start()
    yield process
    process.stop()


@pytest.fixture
def api_without_redis(env: dict[str, str], workdir: Path) -> Iterator[ApiProcess]:
    yield from _api_with(env, workdir, "api-no-redis", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")


@pytest.fixture
def api_without_postgres(env: dict[str, str], workdir: Path) -> Iterator[ApiProcess]:
    yield from _api_with(env, workdir, "api-no-postgres", DATABASE_URL=DEAD_POSTGRES.format(port=free_port()))


def test_without_redis_a_job_is_still_taken_and_runs_once_redis_is_reachable(
    api_without_redis: ApiProcess, gql: GraphQLClient, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    cut_off = GraphQLClient(api_without_redis.url, tenant.api_key)
    data = cut_off(SPEECH_MUTATION, {"input": {"text": "Redis is down.", "idempotencyKey": "no-redis"}})
    created = data["generateSpeech"]
    assert created["userErrors"] == []
    assert created["job"]["status"] == "QUEUED"
    assert cut_off.wait_for_job(created["job"]["id"], timeout=0)["status"] == "QUEUED"  # reads need no Redis

    waited = gql.wait_for_job(created["job"]["id"], timeout=1, until={"SUCCEEDED"})
    assert waited["status"] == "QUEUED"  # its enqueue failed after the commit: RQ never heard of it
    assert run_once() >= 1  # the scheduler's sweeps, where Redis is reachable, enqueue it
    assert gql.wait_for_job(created["job"]["id"])["status"] == "SUCCEEDED"
    assert "Traceback" not in api_without_redis.log()
    cut_off.http.close()


def test_a_worker_outlives_redis_going_away_in_the_middle_of_a_job(
    env: dict[str, str], api: ApiProcess, gql: GraphQLClient, tenant: TenantHandle, tmp_path: Path
) -> None:
    redis = EmbeddedRedis(tmp_path / "redis", persist=False)
    url = redis.start()
    queue = Queue(JOBS_QUEUE, connection=Redis.from_url(url))
    worker_env = {**env, "REDIS_URL": url, "PUBLIC_BASE_URL": api.url}
    worker = ServiceProcess(["worker", "--queues", "jobs"], worker_env, tmp_path / "worker.log").start()
    try:
        running = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 2, "steps": 4})
        queue.enqueue_call(RUN_JOB, args=(running,), job_id=running)
        assert gql.wait_for_job(running, until={"RUNNING"})["status"] == "RUNNING"

        redis.kill()  # RQ in the worker gives up on such errors; the work horse reports to Postgres
        assert gql.wait_for_job(running)["status"] == "SUCCEEDED", worker.log()[-3000:]
        time.sleep(2)
        redis.start()

        after = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 0.2, "steps": 1})
        queue.enqueue_call(RUN_JOB, args=(after,), job_id=after)
        assert gql.wait_for_job(after)["status"] == "SUCCEEDED", worker.log()[-3000:]
        assert worker.process is not None
        assert worker.process.poll() is None  # the same process
    finally:
        worker.stop()
        redis.stop()


def test_without_postgres_requests_get_503_unavailable_and_a_retry_after(
    api_without_postgres: ApiProcess, tenant: TenantHandle
) -> None:
    client = GraphQLClient(api_without_postgres.url, tenant.api_key)
    response = client.post(SPEECH_MUTATION, {"input": {"text": "Postgres is down."}})
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(outages.RETRY_AFTER_SECONDS)
    assert [error["extensions"]["code"] for error in response.json()["errors"]] == ["UNAVAILABLE"]
    log = api_without_postgres.log()
    assert "failed during an outage" in log
    assert "Traceback" not in log
    client.http.close()


def test_an_outage_inside_a_resolver_is_unavailable_not_masked(tenant: TenantHandle) -> None:
    dead = create_engine(DEAD_POSTGRES.format(port=free_port()))
    limits = Limits(**DEFAULT_PLANS["free"])
    principal = Principal(
        tenant_id=tenant.id, key_id=tenant.key_id, scopes=frozenset({"jobs:read"}), limits=limits
    )

    class OnDeadPostgres(Context):
        def for_operation(self) -> Context:
            operation = super().for_operation()
            operation._session = Session(dead)
            return operation

    context = OnDeadPostgres(connection=Connection(principal=principal))
    context.response = Response()
    result = asyncio.run(
        schema.execute("{ jobs(first: 1) { edges { node { id } } } }", context_value=context)
    )
    assert result.errors is not None
    assert [error.extensions for error in result.errors] == [{"code": "UNAVAILABLE"}]
    assert result.errors[0].message == outages.MESSAGE
    assert context.response.status_code == 503
    assert context.response.headers["retry-after"] == str(outages.RETRY_AFTER_SECONDS)
    dead.dispose()
