"""Decoding GraphQL requests, the same way for HTTP bodies, query parameters and WebSocket messages.

Every malformed request is refused with a stable code before anything recursive or unbounded touches
it: the text must be UTF-8, nest at most MAX_JSON_DEPTH deep (found by a scan, before the recursive
decoder runs), hold only numbers Python converts and only valid Unicode, and be a JSON object.
HTTP answers 400 ``{"errors": [{"message", "extensions": {"code"}}]}``; a graphql-transport-ws
socket is closed with 4400 and the message as the reason, as the protocol asks for any bad message.
A query document over MAX_QUERY_BYTES is refused before it is hashed or parsed: 413 over HTTP, an
`error` message for that operation over a WebSocket (the socket stays open).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncGenerator, Mapping
from contextlib import suppress
from itertools import accumulate
from typing import Any, cast

from graphql import GraphQLFormattedError
from starlette.responses import JSONResponse
from starlette.websockets import WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ErrorMessage,
    Message,
    SubscribeMessage,
)

from service.graphql_base import Context
from service.settings import get_settings

MAX_JSON_DEPTH = 32
"""Arrays and objects inside each other; GraphQL requests need a handful (inputs are shallow)."""
WS_INVALID_MESSAGE = 4400  # graphql-transport-ws: "a message of a type or format which is not specified"
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's reason fits in 125 bytes with its code

_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')  # once escapes are gone, a string is quote, no quote, quote
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_ONE_KIND = str.maketrans("{}", "[]")
_STEP = {"[": 1, "]": -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class RefusedRequest(Exception):
    """A request refused before GraphQL sees it (malformed or too large), with a stable code."""

    def __init__(self, code: str, message: str, *, status_code: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status_code = status_code

    @property
    def formatted(self) -> GraphQLFormattedError:
        """As one error of a GraphQL response."""
        return {"message": self.message, "extensions": {"code": self.code}}


def error_response(error: RefusedRequest) -> JSONResponse:
    """The JSON every refused request gets: the GraphQL errors shape with a stable code."""
    return JSONResponse({"errors": [error.formatted]}, status_code=error.status_code)


def check_query_size(query: str | None, max_bytes: int) -> None:
    """Refuse a query document over max_bytes of UTF-8 (QUERY_TOO_LARGE)."""
    if query is None or len(query) * 4 <= max_bytes:  # a character is at most 4 bytes
        return
    if len(query) > max_bytes or len(query.encode("utf-8", "surrogatepass")) > max_bytes:
        message = f"query document over {max_bytes} bytes"
        raise RefusedRequest("QUERY_TOO_LARGE", message, status_code=413)


def decode_json_object(data: str | bytes) -> dict[str, Any]:
    """The JSON object in data (a body, a query parameter, a WebSocket message); RefusedRequest if none."""
    text = _text(data)
    if _nests_deeper_than(text, MAX_JSON_DEPTH):
        raise RefusedRequest("JSON_TOO_DEEP", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise RefusedRequest("INVALID_JSON", f"not valid JSON: {error}") from None
    except ValueError:  # the only other ValueError: an integer over Python's digit limit
        digits = sys.get_int_max_str_digits()
        raise RefusedRequest("NUMBER_TOO_LARGE", f"a number has more than {digits} digits") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise RefusedRequest(
            "INVALID_ENCODING", "a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff): not Unicode"
        )
    if isinstance(value, list):
        raise RefusedRequest(
            "NOT_AN_OBJECT", "batched requests (a JSON array) are not supported: send one at a time"
        )
    if not isinstance(value, dict):
        raise RefusedRequest("NOT_AN_OBJECT", f"expected a JSON object, got {_json_type(value)}")
    return value


def _text(data: str | bytes) -> str:
    if isinstance(data, str):  # a query parameter or a WebSocket text message: already Unicode
        return data
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # RFC 8259 lets a parser ignore a BOM
    except UnicodeDecodeError:
        raise RefusedRequest("INVALID_ENCODING", "the body is not valid UTF-8") from None


def _nests_deeper_than(text: str, limit: int) -> bool:
    """Whether arrays and objects nest deeper than limit, ignoring brackets inside strings."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the usual request: too few brackets to nest that deep
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text))).translate(_ONE_KIND)
    if "[" * (limit + 1) in brackets:
        return True
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def _refuse_constant(name: str) -> Any:
    raise RefusedRequest("INVALID_JSON", f"not valid JSON: {name} is not a JSON number")


def _has_lone_surrogate(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a string" if isinstance(value, str) else "a number"


def _operation_problem(payload: Mapping[str, object]) -> str | None:
    """What is wrong with a GraphQL request's fields (query, variables, ...), if anything."""
    if not isinstance(payload.get("query"), str):
        return "`query` must be a string"
    if not isinstance(payload.get("operationName"), str | None):
        return "`operationName` must be a string or null"
    for name in ("variables", "extensions"):
        if not isinstance(payload.get(name), dict | None):
            return f"`{name}` must be an object or null"
    return None


def _transport_ws_message_problem(message: Mapping[str, object]) -> str | None:
    """What is wrong with a graphql-transport-ws message's fields, if anything (types are checked
    by the protocol handler, which closes with 4400 on an unknown one)."""
    kind = message.get("type")
    if kind in ("subscribe", "complete") and not isinstance(message.get("id"), str):
        return f"the `id` of a {kind} message must be a string"
    if kind != "subscribe":
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict):
        return "the `payload` of a subscribe message must be an object"
    return _operation_problem(payload)


def _close_reason(message: str) -> str:
    """message cut to what a WebSocket close frame carries."""
    encoded = message.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return message
    return encoded[: MAX_CLOSE_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


class CheckedWebSocketAdapter(ASGIWebSocketAdapter):
    """A message the view cannot decode closes the socket with 4400 and the reason; what operations
    still send once the socket is closed (by the protocol or the client) is dropped, not an error."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        if WebSocketState.DISCONNECTED in (self.ws.application_state, self.ws.client_state):
            return  # starlette would raise, and strawberry log it as a fault of the operation
        with suppress(WebSocketDisconnected):  # the client left while this was on its way
            await super().send_json(message)

    async def send_text(self, text: str) -> None:
        """Send a message already encoded (a shared subscription result: service.shared_subscriptions)."""
        if WebSocketState.DISCONNECTED in (self.ws.application_state, self.ws.client_state):
            return
        with suppress(WebSocketDisconnected, RuntimeError, OSError):  # the client left meanwhile
            await self.ws.send_text(text)

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object, None]:
        try:
            async for message in super().iter_json(ignore_parsing_errors=ignore_parsing_errors):
                yield message
        except RefusedRequest as error:
            await self.close(WS_INVALID_MESSAGE, _close_reason(error.message))


class CheckedTransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with each message's fields checked before the protocol acts on them."""

    async def handle_message(self, message: Message) -> None:
        problem = _transport_ws_message_problem(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        if message.get("type") == "subscribe" and self.connection_acknowledged:
            subscribe = cast(SubscribeMessage, message)
            try:
                check_query_size(subscribe["payload"]["query"], get_settings().max_query_bytes)
            except RefusedRequest as refused:  # that operation fails; the socket carries on
                error: ErrorMessage = {"id": subscribe["id"], "type": "error", "payload": [refused.formatted]}
                await self.send_message(error)
                return
        await super().handle_message(message)
