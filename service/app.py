"""The FastAPI application: GraphQL at /graphql, downloads, health."""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from service.downloads import router as downloads_router
from service.graphql_base import Context
from service.schema import schema
from service.settings import get_settings
from service.tenants.service import authenticate

log = logging.getLogger(__name__)


def get_context(request: Request) -> Context:
    """Authenticate the bearer key; 401 without a hint which part was wrong.

    A GET without a query only renders the GraphiQL page, which needs no key.
    """
    context = Context()
    if request.method == "GET" and "query" not in request.query_params:
        return context
    header = request.headers.get("authorization")
    context.principal = authenticate(context.session, header, server_secret=get_settings().secret_key)
    if context.principal is None:
        context.finish(commit=False)
        raise HTTPException(
            status_code=401, detail="invalid or missing API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return context


class BodySizeLimit:
    """Refuse request bodies over a size cap with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        seen = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes and not refused:
                refused = True
                await self._too_large(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # the 413 has gone out; whatever the app says after is dropped
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body over {self.max_bytes} bytes"
        error = {"message": message, "extensions": {"code": "PAYLOAD_TOO_LARGE"}}
        await JSONResponse({"errors": [error]}, status_code=413)(scope, receive, send)


def create_app() -> FastAPI:
    """The API process's ASGI application."""
    settings = get_settings()
    app = FastAPI(title="Claimcheck", docs_url=None, redoc_url=None, openapi_url=None)
    graphql = GraphQLRouter[Context, None](
        schema,
        context_getter=get_context,
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
    )
    app.include_router(graphql, prefix="/graphql")
    app.include_router(downloads_router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    return app
