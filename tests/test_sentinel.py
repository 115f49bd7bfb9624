"""The service on Sentinel-watched Redis: a real failover (primary killed, replica promoted by three
Sentinels) mid-run loses no job; the outbox sweep re-enqueues what the dead primary took with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from service.db import session_scope
from service.subscription_caps import PREFIX, subscription_caps
from tests.clusters import SentinelRedis
from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle
from tests.servers import ApiProcess, ServiceProcess, clear_caches


def submit_as(client: GraphQLClient, index: int) -> str:
    payload = client(SPEECH_MUTATION, {"input": {"text": f"Failover job {index}. It has two sentences."}})
    assert payload["generateSpeech"]["userErrors"] == []
    return str(payload["generateSpeech"]["job"]["id"])


@pytest.fixture
def sentinels(workdir: Path) -> Iterator[SentinelRedis]:
    group = SentinelRedis(workdir / "sentinel").start()
    yield group
    group.stop()


@pytest.fixture
def sentinel_api(env: dict[str, str], sentinels: SentinelRedis, workdir: Path) -> Iterator[ApiProcess]:
    """API, worker and scheduler finding Redis through the Sentinels alone (no REDIS_URL)."""
    watched = {key: value for key, value in env.items() if key != "REDIS_URL"}
    watched.update(REDIS_SENTINELS=sentinels.addresses, WORKER_CONCURRENCY="2")
    api = ApiProcess(watched, workdir / "sentinel-api.log")
    api.env["PUBLIC_BASE_URL"] = watched["PUBLIC_BASE_URL"] = api.url
    api.start()
    others = [
        ServiceProcess([role], watched, workdir / f"sentinel-{role}.log").start()
        for role in ("worker", "scheduler")
    ]
    yield api
    for process in [api, *others]:
        process.stop()


def test_jobs_continue_after_a_sentinel_failover_and_none_is_lost(
    sentinel_api: ApiProcess, sentinels: SentinelRedis, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("failover")
    client = GraphQLClient(sentinel_api.url, tenant.api_key)

    def submit(index: int) -> str:
        return submit_as(client, index)

    before = [submit(index) for index in range(12)]
    client.wait_for_job(before[0], until={"RUNNING", "SUCCEEDED"})
    old_master = sentinels.master_port()
    sentinels.fail_over()  # jobs queued, running and finishing lose the primary under them
    assert sentinels.master_port() == sentinels.replica.port != old_master
    after = [submit(index) for index in range(12, 20)]

    for job_id in before + after:
        job = client.wait_for_job(job_id, timeout=90)
        assert job["status"] == "SUCCEEDED", job
    # The API and the scheduler followed the Sentinels too: a key first used after the failover is
    # marked on the promoted replica, and its last use reaches Postgres through the scheduler.
    latecomer = make_tenant("after-failover")
    late_client = GraphQLClient(sentinel_api.url, latecomer.api_key)
    assert late_client.wait_for_job(submit_as(late_client, 20))["status"] == "SUCCEEDED"
    assert sentinels.replica.client().exists(f"apikeys:seen:{latecomer.key_id}")
    assert wait_until(lambda: key_last_used(latecomer.key_id) is not None)
    for http in (client, late_client):
        http.http.close()


def key_last_used(key_id: str) -> object:
    with session_scope() as session:
        return session.execute(
            text("SELECT last_used_at FROM api_keys WHERE id = :id"), {"id": key_id}
        ).scalar()


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_subscription_caps_find_redis_through_the_sentinels_alone(
    env: dict[str, str], sentinels: SentinelRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscriber's place in its tenant's cap is held in the master the Sentinels name, with no
    REDIS_URL at all (as for RQ, rate limits and the job feed)."""
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("REDIS_SENTINELS", sentinels.addresses)
    clear_caches()

    async def held() -> list[str]:
        async with subscription_caps().place("ten_sentinel"):
            return [
                str(count) for count in sentinels.primary.client().hgetall(PREFIX + "ten_sentinel").values()
            ]

    try:
        assert asyncio.run(held()) == ["1"]
    finally:
        clear_caches()
