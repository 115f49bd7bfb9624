"""Subscriptions at scale, on real API processes: subscribers asking the same thing share one execution
and one rendering of each change (the API's metrics count both), and a tenant's cap on open
subscriptions holds across API processes, a killed process's share coming free once its lease ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from strawberry.types.execution import ExecutionResult
from websockets.sync.client import ClientConnection

from service.embedded import free_port
from service.jobs.dispatch import enqueue_job
from service.shared_subscriptions import (
    BEHIND,
    END,
    MAX_BACKLOG,
    GroupKey,
    Member,
    SharedSubscriptions,
    Stream,
)
from service.subscription_caps import PREFIX, SubscriptionCaps
from tests.conftest import TenantHandle, commit_job_without_enqueue
from tests.servers import ApiProcess, ServiceProcess
from tests.websocket import open_socket, receive, subscribe, ws_url_of

STATUS = "subscription U($id: ID!) { jobUpdates(id: $id) { status progress message } }"
BRIEF = "subscription B($id: ID!) { jobUpdates(id: $id) { id status } }"
RENDERS = "claimcheck_subscription_renders_total"
RECIPIENTS = "claimcheck_subscription_recipients_total"
LEASE_SECONDS = 1.5


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url, timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not scraped")


def _raw_messages(socket: ClientConnection, timeout: float = 30) -> list[str]:
    """The raw text of every message of operation "1" until it completes."""
    texts: list[str] = []
    while True:
        text = socket.recv(timeout=timeout)
        assert isinstance(text, str)
        if '"type":"complete"' in text.replace(" ", ""):
            return texts
        texts.append(text)


def _first(socket: ClientConnection) -> dict[str, Any]:
    message = receive(socket)
    assert message["type"] == "next", message
    return message


@contextlib.contextmanager
def _apis(env: dict[str, str], workdir: Path, count: int, **settings: str) -> Iterator[list[ApiProcess]]:
    processes: list[ApiProcess] = []
    try:
        for _ in range(count):
            process = ApiProcess({**env, **settings}, workdir / f"api-shared-{len(processes)}.log")
            process.env["PUBLIC_BASE_URL"] = process.url
            processes.append(process.start())
        yield processes
    finally:
        for process in processes:
            process.stop()


def test_subscribers_asking_the_same_share_one_rendering_of_each_change(
    env: dict[str, str], workdir: Path, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    """Eight subscribers of one job with one document, two with another: each change is executed and
    rendered once per document, not once per subscriber, and the eight receive the same bytes."""
    metrics_port = free_port()
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    with _apis(env, workdir, 1, METRICS_PORT=str(metrics_port)) as (api,):
        job_id = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 1.5, "steps": 6})
        url = ws_url_of(api.url)
        with contextlib.ExitStack() as sockets:
            same = [sockets.enter_context(open_socket(url, tenant.api_key)) for _ in range(8)]
            other = [sockets.enter_context(open_socket(url, tenant.api_key)) for _ in range(2)]
            renders, recipients = _metric(metrics, RENDERS), _metric(metrics, RECIPIENTS)
            for socket in same:
                subscribe(socket, "1", STATUS, {"id": job_id})
            for socket in other:
                subscribe(socket, "1", BRIEF, {"id": job_id})
            for socket in same + other:  # each holds the QUEUED snapshot: all have joined
                assert '"QUEUED"' in socket.recv(timeout=10)
            enqueue_job(job_id, "test-slow")  # the worker runs it
            heard = [_raw_messages(socket) for socket in same]
            heard_other = [_raw_messages(socket) for socket in other]
        rendered = _metric(metrics, RENDERS) - renders
        sent = _metric(metrics, RECIPIENTS) - recipients

    assert all(messages == heard[0] for messages in heard), "the same bytes to every subscriber"
    assert all(messages == heard_other[0] for messages in heard_other)
    assert len(heard[0]) >= 4, heard[0]  # RUNNING, progress..., SUCCEEDED
    assert '"SUCCEEDED"' in heard[-1][-1]
    changes = 1 + len(heard[0]) + 1 + len(heard_other[0])  # the QUEUED snapshots, then the rest
    assert rendered == changes
    assert sent == 8 * (1 + len(heard[0])) + 2 * (1 + len(heard_other[0]))


def _subscription(url: str, api_key: str, job_id: str, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Open a socket with one subscription to the job and return its first message."""
    socket = stack.enter_context(open_socket(url, api_key))
    subscribe(socket, "1", BRIEF, {"id": job_id})
    return _first(socket)


def _refused(message: dict[str, Any]) -> bool:
    errors = message["payload"].get("errors") or []
    return bool(errors) and errors[0]["extensions"]["code"] == "QUOTA_EXCEEDED"


def test_a_tenants_subscription_cap_holds_across_api_processes_until_one_dies(
    env: dict[str, str], workdir: Path, make_tenant: Callable[..., TenantHandle]
) -> None:
    """Cap 3 over two API processes: two open on A and one on B fill it, a fourth on either is refused
    (another tenant is not); once A is killed, its two come free after its lease, and no more."""
    tenant, other = make_tenant("capped"), make_tenant("uncapped")
    job_id = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 1})  # stays QUEUED
    other_job = commit_job_without_enqueue(other.id, "test-slow", {"seconds": 1})
    settings = {
        "MAX_SUBSCRIPTIONS_PER_TENANT": "3",
        "MAX_SUBSCRIPTIONS_PER_CONNECTION": "2",
        "SUBSCRIPTION_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    with _apis(env, workdir, 2, **settings) as (a, b), contextlib.ExitStack() as sockets:
        url_a, url_b = ws_url_of(a.url), ws_url_of(b.url)
        on_a = sockets.enter_context(open_socket(url_a, tenant.api_key))
        subscribe(on_a, "1", BRIEF, {"id": job_id})
        subscribe(on_a, "2", STATUS, {"id": job_id})
        subscribe(on_a, "3", BRIEF, {"id": job_id})  # the connection's cap is 2
        answers: dict[str, dict[str, Any]] = {}
        while len(answers) < 3:
            message = receive(on_a)
            if message["type"] == "next":
                answers[message["id"]] = message
        assert not _refused(answers["1"])
        assert not _refused(answers["2"])
        assert _refused(answers["3"])
        assert "too many subscriptions on this connection" in answers["3"]["payload"]["errors"][0]["message"]

        assert not _refused(_subscription(url_b, tenant.api_key, job_id, sockets))
        assert _refused(_subscription(url_b, tenant.api_key, job_id, sockets))
        assert _refused(_subscription(url_a, tenant.api_key, job_id, sockets))
        assert not _refused(_subscription(url_b, other.api_key, other_job, sockets))

        a.kill()
        deadline = time.monotonic() + LEASE_SECONDS + 10
        while _refused(_subscription(url_b, tenant.api_key, job_id, sockets)):
            assert time.monotonic() < deadline, "the killed process's places never came free"
            time.sleep(0.2)
        assert not _refused(_subscription(url_b, tenant.api_key, job_id, sockets))
        assert _refused(_subscription(url_b, tenant.api_key, job_id, sockets))


@pytest.mark.parametrize("closing", ["complete", "socket"])
def test_a_subscription_ended_by_the_client_gives_its_place_back(
    env: dict[str, str], workdir: Path, tenant: TenantHandle, closing: str
) -> None:
    job_id = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 1})
    with (
        _apis(env, workdir, 1, MAX_SUBSCRIPTIONS_PER_TENANT="1") as (api,),
        contextlib.ExitStack() as sockets,
    ):
        url = ws_url_of(api.url)
        first = sockets.enter_context(open_socket(url, tenant.api_key))
        subscribe(first, "1", BRIEF, {"id": job_id})
        assert not _refused(_first(first))
        assert _refused(_subscription(url, tenant.api_key, job_id, sockets))
        if closing == "complete":
            first.send('{"id": "1", "type": "complete"}')
        else:
            first.close()
        deadline = time.monotonic() + 10
        while _refused(_subscription(url, tenant.api_key, job_id, sockets)):
            assert time.monotonic() < deadline, "the place never came back"
            time.sleep(0.1)


def test_a_subscriber_joining_a_running_job_starts_from_its_current_state(
    api: ApiProcess, tenant: TenantHandle, worker: ServiceProcess
) -> None:
    """jobUpdates is a snapshot stream: joining the group of a running job, the latest result (its
    current state) comes first, never the QUEUED state the group started from."""
    job_id = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 3, "steps": 6})
    url = ws_url_of(api.url)
    with open_socket(url, tenant.api_key) as early, open_socket(url, tenant.api_key) as late:
        subscribe(early, "1", STATUS, {"id": job_id})
        assert _first(early)["payload"]["data"]["jobUpdates"]["status"] == "QUEUED"
        enqueue_job(job_id, "test-slow")  # now that the group exists
        while "step" not in (receive(early, timeout=30)["payload"]["data"]["jobUpdates"]["message"] or ""):
            pass  # until the job has made progress (the worker may be busy with earlier tests' jobs)
        subscribe(late, "1", STATUS, {"id": job_id})
        current = _first(late)["payload"]["data"]["jobUpdates"]
        assert current["status"] in {"RUNNING", "SUCCEEDED"}
        assert current["progress"] > 0
        rest = [json.loads(text)["payload"]["data"]["jobUpdates"] for text in _raw_messages(late)]
    assert (rest[-1] if rest else current)["status"] == "SUCCEEDED"


# --- a group's sends, in one process ----------------------------------------------------------------

GROUP_KEY: GroupKey = ("ten_x", frozenset({"jobs:read"}), "subscription { n }", None, "{}")


class _Socket:
    """A member's socket: records what is sent; a blocked one never finishes a send (its buffer is
    full), a slow one takes a while over each."""

    def __init__(self, *, blocked: bool = False, slow: bool = False) -> None:
        self.texts: list[str] = []
        self.blocked, self.slow = blocked, slow

    async def send_text(self, text: str) -> None:
        if self.blocked:
            await asyncio.Event().wait()
        if self.slow:
            await asyncio.sleep(0.001)
        self.texts.append(text)


def _results(
    count: int, before_each: Callable[[int], None] = lambda _: None
) -> Callable[[], Awaitable[Stream]]:
    async def stream() -> Stream:
        for n in range(count):
            before_each(n)
            yield ExecutionResult(data={"n": n}, errors=None)

    async def start() -> Stream:
        return stream()

    return start


async def _follow_all(sockets: list[_Socket], start: Callable[[], Awaitable[Stream]]) -> list[object]:
    """Every socket a member of one group (all joined before its first result); how each ended."""
    shared = SharedSubscriptions()
    members = [Member(socket, "1") for socket in sockets]
    return await asyncio.gather(
        *(shared.follow(GROUP_KEY, start, member, snapshots=True) for member in members)
    )


def test_a_change_goes_to_every_member_in_the_groups_own_step_and_is_rendered_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """500 members, 20 changes: each change is rendered once and its bytes are on every member's
    socket before the group takes the next one (no task, queue or future per subscriber: such
    waiting objects, one per subscriber and change, fed the collector's full passes)."""
    renders: list[int] = []
    monkeypatch.setattr("service.shared_subscriptions.record_subscription_render", renders.append)
    sockets = [_Socket() for _ in range(500)]
    tasks_seen: list[int] = []

    def before_each(n: int) -> None:
        assert all(len(socket.texts) == n for socket in sockets), "an earlier change is not out yet"
        tasks_seen.append(len(asyncio.all_tasks()))

    endings = asyncio.run(_follow_all(sockets, _results(20, before_each)))

    assert endings == [END] * 500
    assert renders == [500] * 20
    assert all(socket.texts == sockets[0].texts for socket in sockets), "the same bytes to every member"
    assert sockets[0].texts[3] == '{"id":"1","type":"next","payload":{"data":{"n":3}}}'
    assert set(tasks_seen) == {1 + 500 + 1}  # asyncio.run's, the members' own and the group's: none per send


def test_a_blocked_subscriber_does_not_delay_the_others_and_is_dropped_once_too_far_behind() -> None:
    sockets = [_Socket(blocked=True)] + [_Socket() for _ in range(20)]
    endings = asyncio.run(_follow_all(sockets, _results(MAX_BACKLOG + 10)))

    assert endings[0] is BEHIND
    assert endings[1:] == [END] * 20
    assert sockets[0].texts == []
    assert all(len(socket.texts) == MAX_BACKLOG + 10 for socket in sockets[1:])


def test_a_member_whose_sends_wait_gets_every_result_in_order_then_the_end() -> None:
    sockets = [_Socket(slow=True), _Socket()]
    endings = asyncio.run(_follow_all(sockets, _results(50)))

    assert endings == [END, END]
    assert sockets[0].texts == sockets[1].texts
    assert [json.loads(text)["payload"]["data"]["n"] for text in sockets[0].texts] == list(range(50))


def test_places_given_back_together_are_written_to_redis_together(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """150 subscriptions of a job that ends give their places back at once: one write to Redis (not
    150 in turn, each holding up the places taken meanwhile), and the process's count is gone."""
    client = redis.asyncio.Redis.from_url(env["REDIS_URL"])
    round_trips: list[str] = []
    execute_command = client.execute_command
    make_pipeline = client.pipeline

    async def counted_command(*args: Any, **options: Any) -> Any:
        round_trips.append(str(args[0]))
        return await execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def counted_pipeline(*args: Any, **options: Any) -> Any:
        pipe = make_pipeline(*args, **options)
        execute = pipe.execute

        async def counted_execute(*execute_args: Any, **execute_options: Any) -> Any:
            round_trips.append("pipeline")
            return await execute(*execute_args, **execute_options)

        monkeypatch.setattr(pipe, "execute", counted_execute)
        return pipe

    monkeypatch.setattr(client, "execute_command", counted_command)
    monkeypatch.setattr(client, "pipeline", counted_pipeline)
    tenant_id = "ten_given_back_together"

    async def scenario() -> tuple[int, dict[Any, Any], dict[Any, Any]]:
        caps = SubscriptionCaps(client, lease_seconds=15)
        held, release = asyncio.Event(), asyncio.Event()
        holding = 0

        async def hold() -> None:
            nonlocal holding
            async with caps.place(tenant_id):
                holding += 1
                if holding == 150:
                    held.set()
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(150)]
        await held.wait()
        await asyncio.sleep(0.1)  # the heartbeat's first beat is done
        while_held = await client.hgetall(PREFIX + tenant_id)
        before = len(round_trips)
        release.set()
        await asyncio.gather(*holders)
        async with asyncio.timeout(5):
            while await client.hexists(PREFIX + tenant_id, caps.process_id):
                await asyncio.sleep(0.01)
        writes = len(round_trips) - before - sum(name == "HEXISTS" for name in round_trips[before:])
        after = await client.hgetall(PREFIX + tenant_id)
        await client.aclose()
        return writes, while_held, after

    writes, while_held, after = asyncio.run(scenario())
    assert list(while_held.values()) == [b"150"]
    assert after == {}
    assert writes == 1
