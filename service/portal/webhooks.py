"""The webhook endpoint pages: the list with each endpoint's health, adding one (its secret shown once),
editing, enabling and disabling, rotating the secret, sending a test event, deleting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session

from service.db import tenant_session_scope
from service.errors import ClaimcheckError, ValidationError
from service.portal.endpoint_form import (
    BOUNDS,
    delivery_policy,
    form_values,
    in_form_terms,
    invalid_field,
    stored_values,
)
from service.portal.web import Form, PageNotFound, Viewer, failed, posted_form, render, see_other, signed_in
from service.principal import Principal
from service.settings import get_settings
from service.webhooks.events import EVENT_TYPES
from service.webhooks.models import SigningScheme, WebhookEndpoint
from service.webhooks.service import (
    IssuedEndpoint,
    check_endpoint_url,
    create_endpoint,
    current_public_key,
    delete_endpoint,
    find_endpoint,
    list_endpoints,
    rotate_key,
    send_test,
    update_endpoint,
)

router = APIRouter()

KEEP_OLD_CHOICES = {"0": "no overlap", "3600": "1 hour", "86400": "24 hours", "604800": "7 days"}
"""How long the old secret keeps signing beside a rotated one (the rotate form's choices)."""

EndpointChange = Callable[[Session, Principal, str], object]
"""An action on one endpoint: (session, who acts, endpoint id)."""


def _policy_context(
    form: Form | None, error: ClaimcheckError | None, endpoint: WebhookEndpoint | None = None
) -> dict[str, object]:
    """What a form with the delivery settings needs: their values (posted, after an error; else the
    endpoint's), the field an error is about, the bounds and the defaults."""
    settings = get_settings()
    return {
        "form": form,
        "policy": form_values(form) if form is not None else stored_values(endpoint),
        "invalid": invalid_field(error),
        "bounds": BOUNDS,
        "default_timeout": settings.webhook_timeout_seconds,
        "default_schedule": settings.webhook_retry_schedule,
    }


def _endpoints_context(
    viewer: Viewer, form: Form | None = None, error: ClaimcheckError | None = None
) -> dict[str, object]:
    with tenant_session_scope(viewer.tenant_id) as session:
        endpoints = list_endpoints(session, viewer.tenant_id)
    return {
        "section": "webhooks",
        "endpoints": endpoints,
        "event_types": EVENT_TYPES,
        "schemes": [scheme.value for scheme in SigningScheme],
        **_policy_context(form, error),
    }


@router.get("/webhooks", include_in_schema=False)
def endpoints_page(request: Request, viewer: Annotated[Viewer, Depends(signed_in)]) -> HTMLResponse:
    return render(request, viewer, "webhooks.html", _endpoints_context(viewer))


def _signing(form: Form) -> SigningScheme:
    try:
        return SigningScheme(form.get("signing") or SigningScheme.V1.value)
    except ValueError:
        raise ValidationError("signing must be V1 (HMAC) or V1A (ed25519)", field=["signing"]) from None


@router.post("/webhooks", include_in_schema=False)
def add_endpoint(
    request: Request,
    viewer: Annotated[Viewer, Depends(signed_in)],
    form: Annotated[Form, Depends(posted_form)],
) -> Response:
    """Add an endpoint and show its secret (V1) or public key (V1A), this once."""
    try:
        policy = delivery_policy(form, editing=False)
        url = check_endpoint_url(form.get("url"))  # resolved before the transaction: DNS may be slow
        with tenant_session_scope(viewer.tenant_id) as session:
            issued = create_endpoint(
                session,
                viewer.principal,
                url=url,
                event_types=form.all("event_types"),
                description=form.get("description") or None,
                signing=_signing(form),
                policy=policy,
            )
    except ClaimcheckError as raised:
        error = in_form_terms(raised)
        context = _endpoints_context(viewer, form, error)
        return failed(request, viewer, "webhooks.html", error, context)
    return _secret_page(request, viewer, issued, created=True)


def _secret_page(request: Request, viewer: Viewer, issued: IssuedEndpoint, *, created: bool) -> HTMLResponse:
    context = {
        "section": "webhooks",
        "endpoint": issued.endpoint,
        "secret": issued.secret,
        "public_key": current_public_key(issued.endpoint),
        "created": created,
    }
    response = render(request, viewer, "endpoint_secret.html", context, status=201 if created else 200)
    response.headers["Cache-Control"] = "no-store"
    return response


def _endpoint_context(
    viewer: Viewer, endpoint_id: str, form: Form | None = None, error: ClaimcheckError | None = None
) -> dict[str, object]:
    with tenant_session_scope(viewer.tenant_id) as session:
        endpoint = find_endpoint(session, viewer.tenant_id, endpoint_id)
        if endpoint is None:
            raise PageNotFound
    return {
        "section": "webhooks",
        "endpoint": endpoint,
        "public_key": current_public_key(endpoint),
        "event_types": EVENT_TYPES,
        "keep_old_choices": KEEP_OLD_CHOICES,
        **_policy_context(form, error, endpoint),
    }


@router.get("/webhooks/{endpoint_id}", include_in_schema=False)
def endpoint_page(
    request: Request, viewer: Annotated[Viewer, Depends(signed_in)], endpoint_id: str
) -> HTMLResponse:
    return render(request, viewer, "endpoint.html", _endpoint_context(viewer, endpoint_id))


def _act(
    request: Request, viewer: Viewer, endpoint_id: str, action: str, done: str, change: EndpointChange
) -> Response:
    """Run one change to the endpoint; back to its page with a notice, or with the error."""
    try:
        with tenant_session_scope(viewer.tenant_id) as session:
            change(session, viewer.principal, endpoint_id)
    except ClaimcheckError as error:
        if error.code == "NOT_FOUND":
            raise PageNotFound from error
        return failed(request, viewer, "endpoint.html", error, _endpoint_context(viewer, endpoint_id))
    return see_other(action, done)


@router.post("/webhooks/{endpoint_id}", include_in_schema=False)
def edit_endpoint(
    request: Request,
    viewer: Annotated[Viewer, Depends(signed_in)],
    form: Annotated[Form, Depends(posted_form)],
    endpoint_id: str,
) -> Response:
    """Save the settings form: URL, description, event types and the delivery settings."""
    try:
        policy = delivery_policy(form, editing=True)
        url = check_endpoint_url(form.get("url"))  # resolved before the transaction: DNS may be slow
        with tenant_session_scope(viewer.tenant_id) as session:
            update_endpoint(
                session,
                viewer.principal,
                endpoint_id,
                url=url,
                event_types=form.all("event_types"),
                description=form.get("description"),
                enabled=None,
                policy=policy,
            )
    except ClaimcheckError as raised:
        if raised.code == "NOT_FOUND":
            raise PageNotFound from raised
        error = in_form_terms(raised)
        context = _endpoint_context(viewer, endpoint_id, form, error)
        return failed(request, viewer, "endpoint.html", error, context)
    return see_other(f"/portal/webhooks/{endpoint_id}", "endpoint-updated")


@router.post("/webhooks/{endpoint_id}/enabled", include_in_schema=False)
def set_enabled(
    request: Request,
    viewer: Annotated[Viewer, Depends(signed_in)],
    form: Annotated[Form, Depends(posted_form)],
    endpoint_id: str,
) -> Response:
    enabled = form.get("enabled") == "true"

    def change(session: Session, principal: Principal, endpoint_id: str) -> WebhookEndpoint:
        return update_endpoint(
            session, principal, endpoint_id, url=None, event_types=None, description=None, enabled=enabled
        )

    done = "endpoint-enabled" if enabled else "endpoint-disabled"
    return _act(request, viewer, endpoint_id, f"/portal/webhooks/{endpoint_id}", done, change)


@router.post("/webhooks/{endpoint_id}/test", include_in_schema=False)
def test_event(request: Request, viewer: Annotated[Viewer, Depends(signed_in)], endpoint_id: str) -> Response:
    deliveries = f"/portal/deliveries?endpoint={endpoint_id}"
    return _act(request, viewer, endpoint_id, deliveries, "test-sent", send_test)


@router.post("/webhooks/{endpoint_id}/delete", include_in_schema=False)
def remove_endpoint(
    request: Request, viewer: Annotated[Viewer, Depends(signed_in)], endpoint_id: str
) -> Response:
    return _act(request, viewer, endpoint_id, "/portal/webhooks", "endpoint-deleted", delete_endpoint)


@router.post("/webhooks/{endpoint_id}/rotate", include_in_schema=False)
def rotate(
    request: Request,
    viewer: Annotated[Viewer, Depends(signed_in)],
    form: Annotated[Form, Depends(posted_form)],
    endpoint_id: str,
) -> Response:
    """A new signing secret, shown once; the old one keeps signing beside it for the chosen overlap."""
    try:
        keep = form.get("keep_old_for")
        if keep not in KEEP_OLD_CHOICES:
            raise ValidationError("choose how long the old secret keeps working", field=["keep_old_for"])
        with tenant_session_scope(viewer.tenant_id) as session:
            issued = rotate_key(session, viewer.principal, endpoint_id, int(keep))
    except ClaimcheckError as error:
        if error.code == "NOT_FOUND":
            raise PageNotFound from error
        return failed(request, viewer, "endpoint.html", error, _endpoint_context(viewer, endpoint_id))
    return _secret_page(request, viewer, issued, created=False)
