"""The API keys page: the tenant's keys with their scopes and last use; create one (shown once, with a
copy button); revoke one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from service.db import tenant_session_scope
from service.errors import ClaimcheckError, ValidationError
from service.portal.web import Form, PageNotFound, Viewer, failed, posted_form, render, see_other, signed_in
from service.settings import get_settings
from service.tenants.models import ALL_SCOPES
from service.tenants.service import create_key, last_used, list_keys, revoke_tenant_key

router = APIRouter()

SCOPE_HELP = {
    "jobs:read": "read jobs, their files and live updates",
    "jobs:write": "start, cancel and delete jobs",
    "webhooks:manage": "manage webhook endpoints and deliveries",
    "portal": "make portal sign-in links (and nothing else)",
}


def _keys_context(viewer: Viewer) -> dict[str, object]:
    with tenant_session_scope(viewer.tenant_id) as session:
        keys = list_keys(session, viewer.tenant_id)
    keys.sort(key=lambda key: (key.revoked_at is not None, key.created_at), reverse=False)
    return {
        "section": "keys",
        "keys": keys,
        "last_used": last_used(keys),
        "scopes": ALL_SCOPES,
        "scope_help": SCOPE_HELP,
        "issued": None,
    }


@router.get("/keys", include_in_schema=False)
def keys_page(request: Request, viewer: Annotated[Viewer, Depends(signed_in)]) -> HTMLResponse:
    return render(request, viewer, "keys.html", _keys_context(viewer))


@router.post("/keys", include_in_schema=False)
def new_key(
    request: Request,
    viewer: Annotated[Viewer, Depends(signed_in)],
    form: Annotated[Form, Depends(posted_form)],
) -> Response:
    """Create a key with the chosen scopes and show it this once."""
    try:
        scopes = form.all("scopes")
        if not scopes:
            raise ValidationError("choose at least one scope", field=["scopes"])
        with tenant_session_scope(viewer.tenant_id) as session:
            issued = create_key(
                session, viewer.tenant_id, server_secret=get_settings().secret_key, scopes=scopes
            )
    except ClaimcheckError as error:
        return failed(request, viewer, "keys.html", error, _keys_context(viewer))
    response = render(request, viewer, "keys.html", _keys_context(viewer) | {"issued": issued}, status=201)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/keys/{key_id}/revoke", include_in_schema=False)
def revoke(request: Request, viewer: Annotated[Viewer, Depends(signed_in)], key_id: str) -> Response:
    try:
        with tenant_session_scope(viewer.tenant_id) as session:
            revoke_tenant_key(session, viewer.tenant_id, key_id)
    except ClaimcheckError as error:
        if error.code == "NOT_FOUND":
            raise PageNotFound from error
        return failed(request, viewer, "keys.html", error, _keys_context(viewer))
    return see_other("/portal/keys", "key-revoked")
