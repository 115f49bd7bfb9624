"""Signing in with a one-time link, signing out, and what a browser without a session sees."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.db import session_scope
from service.models import utcnow
from service.portal.web import COOKIE, COOKIE_PATH, Viewer, render, signed_in
from service.settings import get_settings
from service.tenants.service import end_portal_session, open_portal_session

public = APIRouter()
"""Pages that need no session."""
router = APIRouter()
"""Pages of a signed-in browser (routes.py adds the CSRF guard)."""

HOME = "/portal/jobs"


def _over_https(request: Request) -> bool:
    return request.url.scheme == "https" or get_settings().public_base_url.startswith("https://")


@public.get("/login/{token}", include_in_schema=False)
def login(request: Request, token: str) -> Response:
    """Use up the link, set the session cookie and go to the jobs; a used, expired or unknown link
    gets one answer (410) that does not say which."""
    secret = get_settings().secret_key
    with session_scope() as session:
        opened = open_portal_session(session, token, server_secret=secret)
        earlier = request.cookies.get(COOKIE)
        if opened is not None and earlier:
            end_portal_session(session, earlier, server_secret=secret)  # one browser, one session
    if opened is None:
        return render(request, None, "link_invalid.html", status=410)
    response = RedirectResponse(HOME, status_code=303)
    response.set_cookie(
        COOKIE,
        opened.token,
        max_age=max(1, int((opened.signed_in.expires_at - utcnow()).total_seconds())),
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_over_https(request),
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@public.get("", include_in_schema=False)
@public.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=303)


@public.get("/signed-out", include_in_schema=False)
def signed_out(request: Request) -> HTMLResponse:
    return render(request, None, "signed_out.html")


@router.post("/logout", include_in_schema=False)
def logout(viewer: Annotated[Viewer, Depends(signed_in)]) -> RedirectResponse:
    """End the session at once (its cookie stops working even if replayed) and clear the cookie."""
    with session_scope() as session:
        end_portal_session(session, viewer.session_token, server_secret=get_settings().secret_key)
    response = RedirectResponse("/portal/signed-out", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


def not_signed_in(request: Request) -> HTMLResponse:
    """401 with how to sign in. A top-level navigation from another site (the sign-in link's redirect,
    or a bookmark opened from a mail client) carries no SameSite=Strict cookie: such a request gets a
    page that reloads itself once from this site, which does carry it."""
    cross_site = request.headers.get("sec-fetch-site") == "cross-site"
    reload = cross_site and request.method == "GET" and request.headers.get("sec-fetch-mode") == "navigate"
    return render(request, None, "signed_out.html", {"reload": reload}, status=401)
