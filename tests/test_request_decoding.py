"""GraphQL request decoding on the real API: malformed JSON answers 400 with a stable code over HTTP and
closes a WebSocket with 4400; query documents and WebSocket messages are capped in bytes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from service.graphql_decoding import MAX_JSON_DEPTH
from service.settings import get_settings
from tests.conftest import GraphQLClient, TenantHandle
from tests.servers import ApiProcess

VIEWER = "{ viewer { name } }"


def post(api: ApiProcess, tenant: TenantHandle, body: bytes) -> httpx.Response:
    headers = {"authorization": f"Bearer {tenant.api_key}", "content-type": "application/json"}
    return httpx.post(f"{api.url}/graphql", content=body, headers=headers)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"null", "NOT_AN_OBJECT", "expected a JSON object, got null"),
        (b'"hi"', "NOT_AN_OBJECT", "expected a JSON object, got a string"),
        (
            b'{"query":"{ viewer { name } }","variables":' + b"[" * 5000 + b"]" * 5000 + b"}",
            "JSON_TOO_DEEP",
            f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
        ),
        (b'{"query": "\xff"}', "INVALID_ENCODING", "the body is not valid UTF-8"),
    ],
    ids=["null", "a JSON string", "5,000 nested arrays", "not UTF-8"],
)
def test_the_bodies_that_answered_500_answer_400_with_a_message_and_a_code(
    api: ApiProcess, tenant: TenantHandle, body: bytes, code: str, message: str
) -> None:
    response = post(api, tenant, body)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": message, "extensions": {"code": code}}]}


def test_json_nests_up_to_max_json_depth_levels_and_no_deeper(api: ApiProcess, tenant: TenantHandle) -> None:
    def nested(arrays: int) -> bytes:  # the body and its variables are two levels
        return b'{"query":"{ viewer { name } }","variables":{"v":' + b"[" * arrays + b"]" * arrays + b"}}"

    assert post(api, tenant, nested(MAX_JSON_DEPTH - 2)).json() == {"data": {"viewer": {"name": "acme"}}}
    refused = post(api, tenant, nested(MAX_JSON_DEPTH - 1))
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["extensions"]["code"] == "JSON_TOO_DEEP"


def test_strawberrys_own_refusals_get_the_same_error_shape(gql: GraphQLClient) -> None:
    response = gql.http.get("/graphql", params={"query": "mutation { recoverWebhooks { count } }"})
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert "GET" in error["message"]


def test_query_documents_over_max_query_bytes_are_refused_over_http(gql: GraphQLClient) -> None:
    limit = get_settings().max_query_bytes
    assert gql(VIEWER + " " * (limit - len(VIEWER))) == {"viewer": {"name": "acme"}}
    for refused in (VIEWER + " " * (limit - len(VIEWER) + 1), VIEWER + "#" + "é" * (limit // 2)):
        response = gql.post(refused)
        assert response.status_code == 413
        assert response.json() == {
            "errors": [
                {"message": f"query document over {limit} bytes", "extensions": {"code": "QUERY_TOO_LARGE"}}
            ]
        }


@contextmanager
def acknowledged_socket(api: ApiProcess, tenant: TenantHandle) -> Iterator[ClientConnection]:
    url = api.url.replace("http://", "ws://") + "/graphql"
    with connect(url, subprotocols=[cast(Subprotocol, "graphql-transport-ws")], max_size=None) as socket:
        socket.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {tenant.api_key}"}})
        )
        assert json.loads(socket.recv(timeout=10))["type"] == "connection_ack"
        yield socket


def subscribe(socket: ClientConnection, operation_id: str, query: str) -> dict[str, Any]:
    socket.send(json.dumps({"type": "subscribe", "id": operation_id, "payload": {"query": query}}))
    reply: dict[str, Any] = json.loads(socket.recv(timeout=10))
    return reply


def closed_with(socket: ClientConnection, message: str | bytes) -> tuple[int, str]:
    socket.send(message)
    with pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("null", "expected a JSON object, got null"),
        ("[]", "batched requests (a JSON array) are not supported: send one at a time"),
        (
            '{"type":"ping","payload":' + "[" * 5000 + "]" * 5000 + "}",
            f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
        ),
        (
            '{"type":"ping","payload":{"n":' + "1" * 5000 + "}}",
            f"a number has more than {sys.get_int_max_str_digits()} digits",
        ),
        ('{"type":"ping","payload":{"s":"\\udc00"}}', "a string holds a lone UTF-16 surrogate escape"),
        (
            '{"type":"subscribe","id":[1],"payload":{"query":"{ viewer { name } }"}}',
            "the `id` of a subscribe",
        ),
        (
            '{"type":"subscribe","id":"1","payload":"x"}',
            "the `payload` of a subscribe message must be an object",
        ),
        ('{"type":"subscribe","id":"1","payload":{"query":5}}', "`query` must be a string"),
    ],
    ids=[
        "null",
        "an array",
        "5,000 nested arrays",
        "5,000 digits",
        "a lone surrogate",
        "an array id",
        "a string payload",
        "a number query",
    ],
)
def test_a_websocket_message_that_cannot_be_decoded_closes_the_socket_with_4400_and_the_reason(
    api: ApiProcess, tenant: TenantHandle, message: str, reason: str
) -> None:
    with acknowledged_socket(api, tenant) as socket:
        code, sent_reason = closed_with(socket, message)
    assert code == 4400
    assert sent_reason.startswith(reason), sent_reason


def test_query_documents_over_max_query_bytes_fail_that_operation_over_a_websocket(
    api: ApiProcess, tenant: TenantHandle
) -> None:
    limit = get_settings().max_query_bytes
    with acknowledged_socket(api, tenant) as socket:
        refused = subscribe(socket, "big", VIEWER + " " * (limit - len(VIEWER) + 1))
        assert refused == {
            "id": "big",
            "type": "error",
            "payload": [
                {"message": f"query document over {limit} bytes", "extensions": {"code": "QUERY_TOO_LARGE"}}
            ],
        }
        answered = subscribe(socket, "fits", VIEWER + " " * (limit - len(VIEWER)))  # the socket carries on
        assert answered == {"id": "fits", "type": "next", "payload": {"data": {"viewer": {"name": "acme"}}}}


def test_websocket_messages_over_max_request_bytes_close_the_socket_with_1009(
    api: ApiProcess, tenant: TenantHandle
) -> None:
    limit = get_settings().max_request_bytes
    envelope = '{"type":"ping","payload":{"pad":""}}'
    with acknowledged_socket(api, tenant) as socket:
        socket.send(envelope.replace('""', '"' + "x" * (limit - len(envelope)) + '"'))
        assert json.loads(socket.recv(timeout=10)) == {"type": "pong"}
        code, _ = closed_with(socket, envelope.replace('""', '"' + "x" * (limit - len(envelope) + 1) + '"'))
    assert code == 1009
