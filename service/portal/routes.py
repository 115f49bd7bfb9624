"""The portal in the API application: its pages, static files, security headers and error pages."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.portal import auth, deliveries, jobs, keys, live, usage, webhooks
from service.portal.web import BadForm, CsrfRefused, NotSignedIn, PageNotFound, csrf_guard, render

PREFIX = "/portal"
STATIC = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
"""Nothing loads from another host, no inline script runs, and no other site may frame a page."""

HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


class PortalHeaders:
    """Security headers on every response under /portal (pages, errors, streams, static files); pages
    and streams are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith(PREFIX + "/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("cache-control", "public, max-age=3600" if static else "no-store")
            await send(message)

        await self.app(scope, receive, with_headers)


def _error_pages(app: FastAPI) -> None:
    async def not_signed_in(request: Request, _error: Exception) -> HTMLResponse:
        return auth.not_signed_in(request)

    async def csrf_refused(request: Request, _error: Exception) -> HTMLResponse:
        return render(request, None, "refused.html", status=403)

    async def not_found(request: Request, _error: Exception) -> HTMLResponse:
        return render(request, None, "not_found.html", status=404)

    async def bad_form(request: Request, _error: Exception) -> HTMLResponse:
        return render(request, None, "refused.html", status=400)

    app.add_exception_handler(NotSignedIn, not_signed_in)
    app.add_exception_handler(CsrfRefused, csrf_refused)
    app.add_exception_handler(PageNotFound, not_found)
    app.add_exception_handler(BadForm, bad_form)


def install_portal(app: FastAPI) -> None:
    """Serve the portal from this application under /portal."""
    signed_in_pages = APIRouter(dependencies=[Depends(csrf_guard)])
    for module in (auth, live, jobs, webhooks, deliveries, keys, usage):  # /jobs/live before /jobs/{id}
        signed_in_pages.include_router(module.router)
    app.include_router(auth.public, prefix=PREFIX)
    app.include_router(signed_in_pages, prefix=PREFIX)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="portal-static")
    _error_pages(app)
    app.add_middleware(PortalHeaders)
