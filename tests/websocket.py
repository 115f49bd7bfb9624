"""graphql-transport-ws helpers for the tests: an acknowledged socket and its messages."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, cast

from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

PROTOCOL = cast(Subprotocol, "graphql-transport-ws")


def ws_url_of(http_url: str) -> str:
    """The GraphQL WebSocket URL of the API at http_url."""
    return http_url.replace("http://", "ws://") + "/graphql"


@contextlib.contextmanager
def open_socket(url: str, api_key: str) -> Iterator[ClientConnection]:
    """A graphql-transport-ws connection, acknowledged."""
    with connect(url, subprotocols=[PROTOCOL]) as socket:
        socket.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {api_key}"}})
        )
        assert json.loads(socket.recv(timeout=10))["type"] == "connection_ack"
        yield socket


def subscribe(socket: ClientConnection, id: str, query: str, variables: dict[str, Any] | None = None) -> None:
    """Start an operation (query, mutation or subscription) on the socket."""
    payload = {"query": query, "variables": variables or {}}
    socket.send(json.dumps({"id": id, "type": "subscribe", "payload": payload}))


def receive(socket: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    """The next message from the server."""
    message: dict[str, Any] = json.loads(socket.recv(timeout=timeout))
    return message
