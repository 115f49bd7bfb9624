"""The WebSocket adapter on a real starlette socket, driven through ASGI where the API's timing cannot
be arranged: an operation that answers after the socket was closed (a protocol close such as 4409 or
4400 while it ran) has its answer dropped, instead of raising inside the operation's task, which
strawberry logs as an ERROR with a traceback."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Message
from starlette.websockets import WebSocket

from service.app import ClaimcheckGraphQL
from service.graphql_decoding import CheckedWebSocketAdapter
from service.schema import schema

SCOPE = {"type": "websocket", "path": "/graphql", "headers": [], "query_string": b"", "subprotocols": []}


def test_an_answer_sent_after_the_socket_was_closed_is_dropped() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    async def operation_answers_after_the_close() -> None:
        socket = WebSocket(SCOPE, receive, send)
        await socket.accept()
        view: Any = ClaimcheckGraphQL(schema)  # the adapter's annotation names strawberry's base view
        adapter = CheckedWebSocketAdapter(view, socket, socket)
        await adapter.close(4409, "Subscriber for 1 already exists")
        await adapter.send_json({"id": "1", "type": "next", "payload": {"data": {"__typename": "Query"}}})

    asyncio.run(operation_answers_after_the_close())
    assert [message["type"] for message in sent] == ["websocket.accept", "websocket.close"]
    assert sent[1]["code"] == 4409
