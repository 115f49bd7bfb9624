"""The FastAPI application: GraphQL at /graphql, downloads, health (metrics are on METRICS_PORT)."""

from __future__ import annotations

import gc
import logging
from typing import cast, overload

import cross_web
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLRequestData
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from observability.asgi import RequestMetrics
from observability.metrics import start_job_counters, start_metrics_server
from observability.tracing import instrument_fastapi, set_ids
from service import outages
from service.db import session_scope
from service.downloads import DOWNLOAD_ROUTE
from service.downloads import router as downloads_router
from service.graphql_base import Context
from service.graphql_decoding import (
    CheckedTransportWSHandler,
    CheckedWebSocketAdapter,
    RefusedRequest,
    check_query_size,
    decode_json_object,
    error_response,
)
from service.jobs.kinds import kind_names
from service.portal.routes import install_portal
from service.principal import Principal
from service.schema import schema
from service.settings import get_settings
from service.shared_subscriptions import SharedSubscriptionsTransportWS
from service.startup import start_process
from service.tenants.principals import PRINCIPALS
from service.tenants.service import authenticate
from service.webhooks.catalog import ROUTE as EVENT_TYPES_ROUTE
from service.webhooks.catalog import router as event_types_router
from service.websocket import KeyCheckingTransportWS

log = logging.getLogger(__name__)


async def get_context(request: HTTPConnection) -> Context:
    """Authenticate the bearer key; 401 without a hint which part was wrong.

    A GET without a query only renders the GraphiQL page (when GRAPHQL_IDE), which needs no key. A WebSocket
    authenticates in its connection_init payload instead (ClaimcheckGraphQL.on_ws_connect).
    """
    context = Context()
    if request.scope["type"] == "websocket":
        return context
    if request.scope["method"] == "GET" and "query" not in request.query_params:
        return context
    header = request.headers.get("authorization")
    # A short session of its own: the connection goes back to the pool before any resolver runs
    # (an async resolver that waits must not hold one).
    principal = await _authenticate_header(header)
    if principal is None:
        raise HTTPException(
            status_code=401, detail="invalid or missing API key", headers={"WWW-Authenticate": "Bearer"}
        )
    context.connection.principal = principal  # the operation's transaction sees only its tenant's rows
    set_ids(tenant_id=principal.tenant_id)  # on the request's span
    return context


async def _authenticate_header(header: object) -> Principal | None:
    """The caller of an Authorization header: remembered for a while (service.tenants.principals), else
    read from Postgres in a thread."""
    if not isinstance(header, str) or not header:
        return None
    return await PRINCIPALS.authenticate_async(header, _authenticate_in_database)


def _authenticate_in_database(header: str) -> Principal | None:
    with session_scope() as session:
        return authenticate(session, header, server_secret=get_settings().secret_key)


HTTP_ERROR_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


class TransportWS(CheckedTransportWSHandler, KeyCheckingTransportWS, SharedSubscriptionsTransportWS):
    """graphql-transport-ws: each message's fields checked (service.graphql_decoding), then the key
    checked again before each operation and on a period for every open socket (service.websocket);
    subscriptions capped and executed once per group of identical ones (service.shared_subscriptions)."""


class ClaimcheckGraphQL(GraphQLRouter[Context, None]):
    """GraphQL over HTTP and graphql-transport-ws; WebSockets send their key in connection_init, and
    are closed once it is revoked (service.websocket).

    Every request's JSON (body, `variables`/`extensions` parameters, WebSocket messages) is decoded
    by service.graphql_decoding; a refused request gets the GraphQL errors shape with a code.
    """

    websocket_adapter_class = CheckedWebSocketAdapter
    graphql_transport_ws_handler_class = TransportWS

    def decode_json(self, data: str | bytes) -> object:
        return decode_json_object(data)

    async def parse_http_body(
        self, request: cross_web.AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        data = await super().parse_http_body(request)
        for operation in data if isinstance(data, list) else [data]:
            check_query_size(operation.query, get_settings().max_query_bytes)
        return data

    @overload
    async def run(self, request: Request, context: Context = ..., root_value: None = ...) -> Response: ...

    @overload
    async def run(self, request: WebSocket, context: Context = ..., root_value: None = ...) -> WebSocket: ...

    async def run(
        self, request: Request | WebSocket, context: Context = UNSET, root_value: None = UNSET
    ) -> Response | WebSocket:
        try:
            return await super().run(request, context, root_value)
        except RefusedRequest as error:
            return error_response(error)
        except cross_web.HTTPException as error:  # strawberry's own refusals (no query, GET mutation...)
            code = HTTP_ERROR_CODES.get(error.status_code, "BAD_REQUEST")
            return error_response(RefusedRequest(code, error.reason, status_code=error.status_code))
        except ClientDisconnect:  # gone before the whole body came (or its framing broke): nobody listens
            return error_response(RefusedRequest("INCOMPLETE_BODY", "the request body ended early"))

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        params = context.connection_params or {}
        header = params.get("authorization") or params.get("Authorization")
        principal = await _authenticate_header(header)
        if principal is None:
            raise ConnectionRejectionError({"reason": "invalid or missing API key"})  # closed with 4403
        context.connection.principal = principal
        return cast(UnsetType, UNSET)


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
        refused = RefusedRequest("PAYLOAD_TOO_LARGE", message, status_code=413)
        await error_response(refused)(scope, receive, send)


def _add_outage_handlers(app: FastAPI) -> None:
    """503 UNAVAILABLE with Retry-After when an outage escapes a route (authentication, downloads)."""

    async def unavailable(request: Request, error: Exception) -> JSONResponse:
        log.warning(
            "%s %s failed during an outage: %s", request.method, request.url.path, outages.describe(error)
        )
        body = {"errors": [{"message": outages.MESSAGE, "extensions": {"code": outages.CODE}}]}
        headers = {"Retry-After": str(outages.RETRY_AFTER_SECONDS)}
        return JSONResponse(body, status_code=503, headers=headers)

    for outage in outages.OUTAGES:
        app.add_exception_handler(outage, unavailable)


def create_app() -> FastAPI:
    """The API process's ASGI application."""
    settings = get_settings()
    start_process("claimcheck-api")
    if settings.metrics_port is not None:
        start_job_counters(kind_names())
        start_metrics_server(settings.metrics_port)  # a port of its own: the public one has no /metrics
    app = FastAPI(title="Claimcheck", docs_url=None, redoc_url=None, openapi_url=None)
    instrument_fastapi(app)
    graphql = ClaimcheckGraphQL(
        schema,
        graphql_ide="graphiql" if settings.graphql_ide else None,
        context_getter=get_context,
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
    )
    app.include_router(graphql, prefix="/graphql")
    app.include_router(downloads_router)
    app.include_router(event_types_router)
    install_portal(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    _add_outage_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    # Outermost: BodySizeLimit's 413s and unhandled errors count too.
    app.add_middleware(RequestMetrics, routes=["/graphql", DOWNLOAD_ROUTE, EVENT_TYPES_ROUTE, "/healthz"])
    # What is loaded by now (modules, the schema, the app: some 170,000 objects) lives as long as the
    # process: out of the collector's full passes, which walked it all and took a tenth of the loop
    # of an API process sending live updates to a thousand sockets.
    gc.freeze()
    return app
