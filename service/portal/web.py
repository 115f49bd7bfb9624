"""What every portal page shares: the signed-in browser, CSRF checks, posted forms, templates and the
responses pages give."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from service.db import session_scope
from service.errors import ClaimcheckError
from service.principal import Principal
from service.settings import get_settings
from service.tenants.service import get_tenant, portal_session

COOKIE = "claimcheck_portal"
COOKIE_PATH = "/portal"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
MAX_FORM_FIELDS = 100
SAFE_METHODS = frozenset({"GET", "HEAD"})

STATUS_BY_CODE = {
    "VALIDATION": 400,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "INVALID_STATE": 409,
    "QUOTA_EXCEEDED": 409,
    "IDEMPOTENCY_CONFLICT": 409,
    "RATE_LIMITED": 429,
}
"""The HTTP status a page answers with when an action fails with this error code."""

NOTICES = {
    "canceled": "The job is canceled (a running job stops at its next step).",
    "deleted": "The job and its file are deleted.",
    "requeued": "The job is back in the queue (same id, next attempt).",
    "endpoint-updated": "The endpoint is saved.",
    "endpoint-enabled": "The endpoint is enabled.",
    "endpoint-disabled": "The endpoint is disabled: no events go to it until you enable it.",
    "endpoint-deleted": "The endpoint is deleted.",
    "test-sent": "A webhook.test event is on its way; its attempt shows below once sent.",
    "redelivered": "The event is sent again now, with the same webhook-id.",
    "recovered": "The deliveries to that endpoint that failed since then are being sent again.",
    "key-revoked": "The key is revoked: requests with it are refused from now on.",
}
"""Messages a page shows after an action redirected to it (`?done=...`): fixed texts, never echoed input."""


class NotSignedIn(Exception):
    """The request has no live portal session."""


class CsrfRefused(Exception):
    """A state-changing request without this session's CSRF token."""


class PageNotFound(Exception):
    """The tenant has no such thing (another tenant's id included)."""


@dataclass(frozen=True)
class Viewer:
    """The signed-in browser: the tenant it acts for (with every scope) and its CSRF token."""

    principal: Principal
    tenant_name: str
    session_token: str
    expires_at: datetime

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    @property
    def csrf_token(self) -> str:
        return csrf_token_for(self.session_token, get_settings().secret_key)


def csrf_token_for(session_token: str, server_secret: str) -> str:
    """The session's CSRF token: an HMAC of its secret cookie value, so a page of another site can
    neither read nor compute it."""
    message = f"portal-csrf:{session_token}".encode()
    return hmac.new(server_secret.encode(), message, hashlib.sha256).hexdigest()


def signed_in(request: Request) -> Viewer:
    """The browser's live session (looked up across tenants by its token, as API keys are)."""
    token = request.cookies.get(COOKIE, "")
    with session_scope() as session:
        found = portal_session(session, token, server_secret=get_settings().secret_key)
        if found is None:
            raise NotSignedIn
        name = get_tenant(session, found.principal.tenant_id).name
    return Viewer(
        principal=found.principal, tenant_name=name, session_token=token, expires_at=found.expires_at
    )


@dataclass(frozen=True)
class Form:
    """A posted application/x-www-form-urlencoded body."""

    fields: dict[str, list[str]]

    def get(self, name: str) -> str:
        """The field's first value, stripped ('' when absent)."""
        values = self.fields.get(name)
        return values[0].strip() if values else ""

    def all(self, name: str) -> list[str]:
        """Every value of a repeated field (checkboxes)."""
        return [value.strip() for value in self.fields.get(name, [])]


class BadForm(Exception):
    """The body is not a form the portal could have sent."""


async def posted_form(request: Request) -> Form:
    """The request's form, parsed once (bounded by MAX_REQUEST_BYTES and MAX_FORM_FIELDS)."""
    cached = getattr(request.state, "portal_form", None)
    if isinstance(cached, Form):
        return cached
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if body and content_type != "application/x-www-form-urlencoded":
        raise BadForm
    try:
        fields = parse_qs(
            body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError as error:  # too many fields
        raise BadForm from error
    form = Form(fields)
    request.state.portal_form = form
    return form


async def csrf_guard(request: Request, viewer: Annotated[Viewer, Depends(signed_in)]) -> None:
    """Every request that can change something carries this session's CSRF token, in the form's
    csrf_token field or the X-CSRF-Token header (htmx); SameSite=Strict cookies are the second wall."""
    if request.method in SAFE_METHODS:
        return
    form = await posted_form(request)
    presented = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(presented.encode(), viewer.csrf_token.encode()):
        raise CsrfRefused


TEMPLATES = Environment(
    loader=PackageLoader("service.portal", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def _size(byte_count: int | None) -> str:
    if byte_count is None:
        return "—"
    size = float(byte_count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{byte_count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def _link(path: str, **parameters: str) -> str:
    """path with the non-empty parameters as its query."""
    kept = {name: value for name, value in parameters.items() if value}
    return f"{path}?{urlencode(kept)}" if kept else path


TEMPLATES.filters.update(
    when=_when,
    iso=_iso,
    size=_size,
    percent=lambda fraction: round(fraction * 100),
    number="{:,}".format,
    g="{:g}".format,
)
TEMPLATES.globals.update(link=_link)


def render(
    request: Request,
    viewer: Viewer | None,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    error: ClaimcheckError | None = None,
) -> HTMLResponse:
    """A page (or, for htmx, a fragment) rendered for the signed-in browser."""
    html = TEMPLATES.get_template(template).render(
        {
            **(context or {}),
            "viewer": viewer,
            "path": request.url.path,
            "notice": NOTICES.get(request.query_params.get("done", "")),
            "error": error.message if error is not None else None,
        }
    )
    return HTMLResponse(html, status_code=status)


def failed(
    request: Request, viewer: Viewer, template: str, error: ClaimcheckError, context: Mapping[str, Any]
) -> HTMLResponse:
    """The page an action came from, again, with the action's error and a matching status."""
    return render(request, viewer, template, context, status=STATUS_BY_CODE.get(error.code, 400), error=error)


def see_other(path: str, done: str | None = None, **query: str) -> RedirectResponse:
    """After an action: go (303) to the page that shows its result."""
    parameters = {**query, **({"done": done} if done else {})}
    joiner = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{joiner}{urlencode(parameters)}" if parameters else path, status_code=303)


def is_htmx(request: Request) -> bool:
    """Whether htmx asked for a fragment (a filter change) rather than a whole page."""
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"
