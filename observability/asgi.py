"""HTTP request metrics for an ASGI application (the API): responses by route template, method, status.

The route label is one of the templates the application declares (``/downloads/{token}``,
``/graphql``), matched against the request's path, never the raw path: a token or a scanner's made-up
paths cannot grow the number of series. A path no template matches counts as route ``other``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from starlette.routing import compile_path

from observability.metrics import record_http_request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNMATCHED = "other"


class RequestMetrics:
    """ASGI middleware counting each HTTP response (``claimcheck_http_server_requests_total``) under
    the first of ``routes`` (path templates, Starlette's syntax) that matches its path.

    Add it outermost (last) so that it also sees the responses other middleware sends on its own; an
    exception before any response counts as the 500 the server then sends.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[str]) -> None:
        self.app = app
        self.routes = [(template, compile_path(template)[0]) for template in routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            record_http_request(
                self.route_of(str(scope.get("path", ""))), str(scope.get("method", "")), status
            )

    def route_of(self, path: str) -> str:
        """The template the path matches, or ``other``."""
        return next((template for template, regex in self.routes if regex.match(path)), UNMATCHED)
