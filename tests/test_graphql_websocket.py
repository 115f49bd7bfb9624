"""GraphQL over graphql-transport-ws on the real API: operations pipelined on one socket each run in
their own transaction, and a socket whose API key is revoked runs nothing more and is closed."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from sqlmodel import func, select
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from service.db import session_scope
from service.graphql_base import Connection, Context
from service.jobs.models import Job
from service.plans import Limits
from service.principal import Principal
from service.settings import get_settings
from service.tenants.service import key_is_active, revoke_key
from service.websocket import ActiveKeys, KeyCheckingTransportWS, RevocationWatch
from tests.conftest import SPEECH_MUTATION, GraphQLClient, TenantHandle, commit_job_without_enqueue
from tests.servers import ApiProcess
from tests.websocket import open_socket, receive, subscribe, ws_url_of

VIEWER = "{ viewer { name } }"
UPDATES = "subscription U($id: ID!) { jobUpdates(id: $id) { id status } }"
JOB_IDS = "{ jobs(first: 100) { edges { node { id } } } }"


def _jobs_of(tenant_id: str) -> int:
    with session_scope() as session:
        return int(session.exec(select(func.count()).where(Job.tenant_id == tenant_id)).one())


def _answers(
    socket: ClientConnection, count: int, on_next: Callable[[dict[str, Any]], None] = lambda _: None
) -> dict[str, dict[str, Any]]:
    """The `next` payload of each of count operations (each passed to on_next as it comes), once every
    one of them has completed."""
    answers: dict[str, dict[str, Any]] = {}
    completed: set[str] = set()
    while len(completed) < count:
        message = receive(socket, timeout=30)
        if message["type"] == "next":
            answers[message["id"]] = message["payload"]
            on_next(message["payload"])
        else:
            assert message["type"] == "complete", message
            completed.add(message["id"])
    return answers


def _closed_code(socket: ClientConnection, timeout: float) -> int:
    """The close code the server sends within timeout (any other message fails the test)."""
    with pytest.raises(ConnectionClosed) as closed:
        pytest.fail(f"the socket carried on: {receive(socket, timeout=timeout)}")
    assert closed.value.rcvd is not None, "the server never sent a close frame"
    return closed.value.rcvd.code


def test_operations_pipelined_on_one_socket_are_all_answered_and_all_committed(
    api: ApiProcess, tenant: TenantHandle, gql: GraphQLClient
) -> None:
    seen_committed: list[bool] = []

    def committed_already(payload: dict[str, Any]) -> None:
        job = ((payload.get("data") or {}).get("generateSpeech") or {}).get("job")
        if job is not None:
            with session_scope() as session:
                seen_committed.append(session.get(Job, job["id"]) is not None)

    with open_socket(ws_url_of(api.url), tenant.api_key) as socket:
        for n in range(20):  # all sent before any answer is read
            if n % 2:
                subscribe(socket, f"speak-{n}", SPEECH_MUTATION, {"input": {"text": f"Pipelined {n}."}})
            else:
                subscribe(socket, f"viewer-{n}", VIEWER)
        answers = _answers(socket, 20, on_next=committed_already)

    assert sorted(answers) == sorted(
        [f"speak-{n}" for n in range(1, 20, 2)] + [f"viewer-{n}" for n in range(0, 20, 2)]
    )
    for payload in answers.values():
        assert "errors" not in payload, payload
    for n in range(0, 20, 2):
        assert answers[f"viewer-{n}"]["data"] == {"viewer": {"name": "acme"}}
    created = {answers[f"speak-{n}"]["data"]["generateSpeech"]["job"]["id"] for n in range(1, 20, 2)}
    assert len(created) == 10
    assert seen_committed == [True] * 10  # each answer went out after its commit, not before
    listed = {edge["node"]["id"] for edge in gql(JOB_IDS)["jobs"]["edges"]}  # read at once, over HTTP
    assert listed == created


def test_a_revoked_keys_socket_runs_no_further_operation_and_is_closed_with_4403(
    api: ApiProcess, tenant: TenantHandle
) -> None:
    with open_socket(ws_url_of(api.url), tenant.api_key) as socket:
        subscribe(socket, "before", SPEECH_MUTATION, {"input": {"text": "Before revocation."}})
        assert _answers(socket, 1)["before"]["data"]["generateSpeech"]["job"]["id"]
        with session_scope() as session:
            revoke_key(session, tenant.key_id)
        time.sleep(get_settings().key_recheck_seconds + 0.5)  # what the API remembered has lapsed
        with contextlib.suppress(ConnectionClosed):  # the process's watch may have closed it already
            subscribe(socket, "after", SPEECH_MUTATION, {"input": {"text": "After revocation."}})
        assert _closed_code(socket, timeout=10) == 4403
    assert _jobs_of(tenant.id) == 1


def test_a_revoked_keys_idle_socket_is_closed_with_4403(api: ApiProcess, tenant: TenantHandle) -> None:
    """A socket with no operation open is closed too, by the process's one watch over every socket's
    key: it holds no subscription to end, but nothing more should run on a revoked key's connection."""
    with open_socket(ws_url_of(api.url), tenant.api_key) as socket:
        with session_scope() as session:
            revoke_key(session, tenant.key_id)
        started = time.monotonic()
        assert _closed_code(socket, timeout=3 * get_settings().key_recheck_seconds + 2) == 4403
    assert time.monotonic() - started <= 2 * get_settings().key_recheck_seconds + 1


def test_one_watch_checks_every_open_sockets_key_with_one_read_per_key() -> None:
    """A thousand sockets of two keys: one check reads each key once and closes exactly the revoked
    key's sockets; no socket has a timer of its own."""
    reads: list[str] = []

    def read(key_id: str) -> bool:
        reads.append(key_id)
        return key_id == "key_active"

    async def check() -> tuple[int, int, list[str]]:
        watch = RevocationWatch(ActiveKeys(read))
        sockets = [_FakeSocket("key_active" if n % 2 else "key_revoked") for n in range(1000)]
        for socket in sockets:
            watch.add(cast(KeyCheckingTransportWS, socket))
        tasks_with_sockets = len(asyncio.all_tasks())
        closed = await watch.check(60)
        assert tasks_with_sockets <= 2  # this test and the watch: nothing per socket
        return closed, len(watch), sorted({socket.key_id for socket in sockets if socket.closed_with})

    closed, left, closed_keys = asyncio.run(check())
    assert (closed, left, closed_keys) == (500, 500, ["key_revoked"])
    assert sorted(reads) == ["key_active", "key_revoked"]


class _FakeSocket:
    """What RevocationWatch uses of a graphql-transport-ws handler: its caller, and closing it."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        principal = Principal(tenant_id="ten_x", key_id=key_id, scopes=frozenset(), limits=cast(Limits, None))
        self.context = Context(connection=Connection(principal=principal))
        self.closed_with: int | None = None

    async def close_revoked(self) -> None:
        self.closed_with = 4403


def test_a_revoked_keys_open_subscription_ends_with_its_socket_closed_with_4403(
    api: ApiProcess, tenant: TenantHandle
) -> None:
    job_id = commit_job_without_enqueue(tenant.id, "test-slow", {"seconds": 1})  # stays QUEUED: no update
    with open_socket(ws_url_of(api.url), tenant.api_key) as socket:
        subscribe(socket, "watch", UPDATES, {"id": job_id})
        first = receive(socket)
        assert first["type"] == "next"
        assert first["payload"]["data"]["jobUpdates"]["status"] == "QUEUED"
        with session_scope() as session:
            revoke_key(session, tenant.key_id)
        started = time.monotonic()
        assert _closed_code(socket, timeout=3 * get_settings().key_recheck_seconds + 2) == 4403
    assert time.monotonic() - started <= 2 * get_settings().key_recheck_seconds + 1


def test_sockets_asking_about_one_key_together_share_one_read(tenant: TenantHandle) -> None:
    """A thousand sockets of one key wake together: one database read answers them all, and the key
    is trusted for the period after it."""
    reads: list[str] = []
    release = threading.Event()

    def read(key_id: str) -> bool:
        reads.append(key_id)
        release.wait(5)
        with session_scope() as session:
            return key_is_active(session, key_id)

    async def ask_together() -> list[bool]:
        keys = ActiveKeys(read)
        asking = [asyncio.ensure_future(keys.is_active(tenant.key_id, 60)) for _ in range(1000)]
        await asyncio.sleep(0.1)
        release.set()
        answers = await asyncio.gather(*asking)
        return [*answers, await keys.is_active(tenant.key_id, 60)]

    assert asyncio.run(ask_together()) == [True] * 1001
    assert reads == [tenant.key_id]
