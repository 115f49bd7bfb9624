"""The hostile-request corpus (tests/malformed_corpus.py) and generated bodies against the real API:
every answer is below 500 (with the promised status and code), and the API logs no ERROR and no
traceback while they run."""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from service.db import session_scope
from service.settings import get_settings
from service.storage.factory import get_storage
from service.storage.local import LocalStorage
from service.tenants.service import create_portal_link, create_tenant
from tests.conftest import TenantHandle
from tests.malformed_corpus import HTTP_CASES, VIEWER, WS_MESSAGES, RawRequest, WsCase
from tests.servers import ApiProcess

GENERATED_EXAMPLES = 120
FRAMING = {b"content-length", b"transfer-encoding"}
LOGGED_FAULT = re.compile(  # a text or JSON log line at ERROR or above, or a traceback
    r"^\S+ \S+ (?:ERROR|CRITICAL)\b.*$"
    r'|"level": ?"(?:ERROR|CRITICAL)".*$'
    r"|^Traceback \(most recent call last\):$",
    re.MULTILINE,
)


@pytest.fixture(scope="module")
def hostile(env: dict[str, str]) -> TenantHandle:
    with session_scope() as session:
        tenant, issued = create_tenant(session, "hostile", server_secret=get_settings().secret_key)
    return TenantHandle(id=tenant.id, api_key=issued.full_key, key_id=issued.key.id)


@pytest.fixture(scope="module")
def api_key(hostile: TenantHandle) -> str:
    return hostile.api_key


@pytest.fixture(scope="module")
def download_token(api: ApiProcess) -> str:
    """A valid token for a small file in the API's storage."""
    storage = get_storage()
    assert isinstance(storage, LocalStorage)
    key = "tenants/hostile/jobs/corpus/file.txt"
    storage.put_stream(key, [b"0123456789" * 10], content_type="text/plain", filename="file.txt")
    url = storage.signed_url(key, filename="file.txt", content_type="text/plain", expires_in=3600)
    return url.rsplit("/downloads/", 1)[1]


@dataclass(frozen=True)
class PortalSession:
    """A browser signed in to the hostile tenant's portal: its cookie and its CSRF token."""

    cookie: str
    csrf: str


@pytest.fixture(scope="module")
def portal(api: ApiProcess, hostile: TenantHandle) -> PortalSession:
    with session_scope() as session:
        link = create_portal_link(
            session,
            hostile.id,
            created_by="operator",
            ttl_seconds=None,
            server_secret=get_settings().secret_key,
        )
    with httpx.Client(base_url=api.url) as client:
        assert client.get(link.url.removeprefix(api.url)).status_code == 303
        page = client.get("/portal/keys").text
        cookie = client.cookies["claimcheck_portal"]
    marker = 'name="csrf_token" value="'
    start = page.index(marker) + len(marker)
    return PortalSession(cookie=cookie, csrf=page[start : page.index('"', start)])


@pytest.fixture
def api_log(api: ApiProcess) -> Iterator[Callable[[], str]]:
    """What the API process logs from now on; the test fails if any of it is an ERROR or a traceback."""
    start = api.log_path.stat().st_size

    def since_start() -> str:
        httpx.get(f"{api.url}/healthz")  # a line after the test's own, so they have all been written
        with api.log_path.open("rb") as log:
            log.seek(start)
            return log.read().decode("utf-8", "replace")

    yield since_start
    faults = LOGGED_FAULT.findall(since_start())
    assert not faults, "the API logged:\n" + "\n".join(faults[:20])


def send_raw(
    api: ApiProcess, request: RawRequest, key: str, token: str, portal: PortalSession | None = None
) -> tuple[int, bytes]:
    """Send request byte for byte on a fresh connection; the final status and body."""
    target = request.target.replace(b"{token}", token.encode())
    headers = [(name, value.replace(b"{key}", key.encode())) for name, value in request.headers]
    body = request.body
    if portal is not None:
        headers = [(name, value.replace(b"{session}", portal.cookie.encode())) for name, value in headers]
        body = body.replace(b"{csrf}", portal.csrf.encode())
    lines = [request.method + b" " + target + b" HTTP/1.1", b"host: 127.0.0.1", b"connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if not any(name in FRAMING for name, _ in headers) and request.method in (b"POST", b"PUT", b"PATCH"):
        lines.append(b"content-length: %d" % len(body))
    received = b""
    with socket.create_connection(("127.0.0.1", api.port), timeout=15) as connection:
        # answered and closed before reading it all (413): the answer is still there to read
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        with contextlib.suppress(ConnectionResetError):
            while chunk := connection.recv(65536):
                received += chunk
    return _final_response(received)


def _final_response(received: bytes) -> tuple[int, bytes]:
    while True:
        head, _, rest = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if not 100 <= status < 200:  # skip interim answers (100 Continue)
            break
        received = rest
    if re.search(rb"(?im)^transfer-encoding: *chunked", head):
        rest = _dechunk(rest)
    return status, rest


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


def _first_error_code(body: bytes) -> str | None:
    errors = json.loads(body).get("errors") or [{}]
    return cast(str | None, errors[0].get("extensions", {}).get("code"))


@pytest.mark.parametrize("request_case", HTTP_CASES, ids=[case.name for case in HTTP_CASES])
def test_a_hostile_http_request_gets_an_answer_below_500_and_logs_no_error(
    api: ApiProcess,
    api_key: str,
    download_token: str,
    portal: PortalSession,
    api_log: Callable[[], str],
    request_case: RawRequest,
) -> None:
    status, body = send_raw(api, request_case, api_key, download_token, portal)
    assert status < 500, body[:500]
    assert b"Traceback" not in body
    if request_case.status is not None:
        assert status == request_case.status, body[:500]
    if request_case.code is not None:
        assert _first_error_code(body) == request_case.code, body[:500]


def ws_url(api: ApiProcess) -> str:
    return api.url.replace("http://", "ws://") + "/graphql"


def _init(api_key: str) -> str:
    return json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {api_key}"}})


def run_ws_case(
    api: ApiProcess, api_key: str, case: WsCase, wait: float = 10
) -> tuple[int | None, list[dict[str, Any]]]:
    """Play case on a fresh socket: the close code the server sent (None: still open after a reply or
    `wait` seconds of silence) and the messages it sent."""
    received: list[dict[str, Any]] = []
    with connect(ws_url(api), subprotocols=[cast(Subprotocol, case.subprotocol)], max_size=None) as socket_:
        try:
            if case.init:
                socket_.send(_init(api_key))
                assert json.loads(socket_.recv(timeout=10))["type"] == "connection_ack"
            for message in case.messages:
                socket_.send(message)
            while True:
                received.append(json.loads(socket_.recv(timeout=wait)))
                if case.close is None:
                    return None, received
        except ConnectionClosed as closed:
            return (closed.rcvd.code if closed.rcvd is not None else 1006), received
        except TimeoutError:
            return None, received


@pytest.mark.parametrize("ws_case", WS_MESSAGES, ids=[case.name for case in WS_MESSAGES])
def test_a_hostile_websocket_message_gets_the_protocols_answer_and_logs_no_error(
    api: ApiProcess, hostile: TenantHandle, api_log: Callable[[], str], ws_case: WsCase
) -> None:
    close, received = run_ws_case(api, hostile.api_key, ws_case)
    assert close == ws_case.close, received
    if ws_case.reply is not None:
        assert received[0]["type"] == ws_case.reply, received
    if ws_case.code is not None:
        assert received[0]["payload"][0]["extensions"]["code"] == ws_case.code, received


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
DOCUMENTS = st.sampled_from(
    [
        "{ viewer { name } }",
        "query Q($id: ID!) { job(id: $id) { id status } }",
        "query J($first: Int, $after: String) { jobs(first: $first, after: $after) { edges { cursor } } }",
        "mutation { recoverWebhooks { count } }",
        'subscription { jobUpdates(id: "x") { id } }',
    ]
)
GRAPHQL_REQUESTS = st.fixed_dictionaries(
    {"query": DOCUMENTS | st.text(max_size=40) | JSON_VALUES},
    optional={"variables": JSON_VALUES, "operationName": JSON_VALUES, "extensions": JSON_VALUES},
)
SPLICED_BODIES = st.builds(
    lambda at, junk: VIEWER[:at] + junk + VIEWER[at:],
    st.integers(min_value=0, max_value=len(VIEWER)),
    st.binary(min_size=1, max_size=8),
)
GENERATED = settings(
    max_examples=GENERATED_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def post_body(api: ApiProcess, api_key: str) -> Iterator[Callable[[bytes], httpx.Response]]:
    headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
    with httpx.Client(base_url=api.url, headers=headers, timeout=30) as client:
        yield lambda body: client.post("/graphql", content=body)


def _check_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code == 400:
        assert _first_error_code(response.content), response.text[:500]


def test_generated_byte_strings_as_graphql_bodies_get_answers_below_500(
    post_body: Callable[[bytes], httpx.Response], api_log: Callable[[], str]
) -> None:
    @GENERATED
    @given(body=st.binary(max_size=200) | SPLICED_BODIES)
    def run(body: bytes) -> None:
        _check_answer(post_body(body))

    run()


def test_generated_json_values_as_graphql_bodies_get_answers_below_500(
    post_body: Callable[[bytes], httpx.Response], api_log: Callable[[], str]
) -> None:
    @GENERATED
    @given(value=JSON_VALUES | GRAPHQL_REQUESTS)
    def run(value: object) -> None:
        _check_answer(post_body(json.dumps(value).encode()))

    run()


def test_generated_json_values_as_websocket_messages_get_the_protocols_answer(
    api: ApiProcess, api_key: str, api_log: Callable[[], str]
) -> None:
    @settings(GENERATED, max_examples=GENERATED_EXAMPLES // 3)
    @given(
        value=JSON_VALUES
        | st.builds(lambda payload: {"type": "subscribe", "id": "1", "payload": payload}, GRAPHQL_REQUESTS)
    )
    def run(value: object) -> None:
        close, _ = run_ws_case(api, api_key, WsCase("generated", (json.dumps(value),), close=None), wait=2)
        assert close in (None, 4400, 4401, 4409), value

    run()
