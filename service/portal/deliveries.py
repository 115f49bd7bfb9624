"""The delivery log: every delivery of the tenant's, filtered by endpoint, status, event type, job and
time, each with its attempts; redeliver one, or recover every failure of an endpoint since a time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from service.db import tenant_session_scope
from service.errors import ClaimcheckError, ValidationError
from service.ids import has_prefix
from service.portal.exchange import request_body, shown_headers
from service.portal.web import Form, Viewer, failed, is_htmx, posted_form, render, see_other, signed_in
from service.webhooks.events import EVENT_TYPES
from service.webhooks.models import DeliveryStatus
from service.webhooks.service import (
    DeliveryLog,
    delivery_log,
    events_by_id,
    list_endpoints,
    recover,
    redeliver,
)

router = APIRouter()

PAGE_SIZE = 20
FILTERS = ("endpoint", "status", "event_type", "job", "since", "until")


def parse_time(value: str, field: str) -> datetime | None:
    """A form's date and time (datetime-local: no zone, read as UTC; or ISO 8601 with a zone)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"{field}: not a date and time (YYYY-MM-DDTHH:MM, UTC)", field=[field]
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _id(value: str, prefix: str, field: str) -> str | None:
    if not value:
        return None
    if not has_prefix(value, prefix):
        raise ValidationError(f"{field}: not an id of the right kind ({prefix}_...)", field=[field])
    return value


def _status(value: str) -> DeliveryStatus | None:
    try:
        return DeliveryStatus(value) if value else None
    except ValueError:
        raise ValidationError(f"unknown delivery status {value!r}", field=["status"]) from None


@dataclass(frozen=True)
class Page:
    """A page of the log, with the endpoints' URLs and the body each event's deliveries send."""

    log: DeliveryLog
    endpoints: dict[str, str]
    bodies: dict[str, str]


def _log(viewer: Viewer, filters: Mapping[str, str], before: str) -> Page:
    with tenant_session_scope(viewer.tenant_id) as session:
        endpoints = {endpoint.id: endpoint.url for endpoint in list_endpoints(session, viewer.tenant_id)}
        log = delivery_log(
            session,
            viewer.tenant_id,
            first=PAGE_SIZE,
            before_id=_id(before, "whd", "before"),
            endpoint_id=_id(filters["endpoint"], "whe", "endpoint"),
            status=_status(filters["status"]),
            event_type=filters["event_type"] or None,
            job_id=_id(filters["job"], "job", "job"),
            since=parse_time(filters["since"], "since"),
            until=parse_time(filters["until"], "until"),
        )
        event_ids = list({view.delivery.event_id for view in log.deliveries})
        events = events_by_id(session, viewer.tenant_id, event_ids)
    bodies = {event_id: request_body(event) for event_id, event in events.items()}
    return Page(log, endpoints, bodies)


def _context(
    log: DeliveryLog | None,
    endpoints: dict[str, str],
    filters: Mapping[str, str],
    bodies: Mapping[str, str] | None = None,
) -> dict[str, object]:
    return {
        "section": "deliveries",
        "log": log,
        "bodies": bodies or {},
        "headers": shown_headers,
        "endpoints": endpoints,
        "filters": filters,
        "statuses": [status.value for status in DeliveryStatus],
        "event_types": EVENT_TYPES,
        "recovered": None,
    }


def _endpoint_names(viewer: Viewer) -> dict[str, str]:
    with tenant_session_scope(viewer.tenant_id) as session:
        return {endpoint.id: endpoint.url for endpoint in list_endpoints(session, viewer.tenant_id)}


@router.get("/deliveries", include_in_schema=False)
def deliveries_page(
    request: Request,
    viewer: Annotated[Viewer, Depends(signed_in)],
    endpoint: str = "",
    status: str = "",
    event_type: str = "",
    job: str = "",
    since: str = "",
    until: str = "",
    before: str = "",
) -> HTMLResponse:
    filters = {"endpoint": endpoint, "status": status, "event_type": event_type, "job": job}
    filters |= {"since": since, "until": until}
    template = "deliveries_results.html" if is_htmx(request) else "deliveries.html"
    try:
        page = _log(viewer, filters, before)
    except ClaimcheckError as error:
        return failed(request, viewer, template, error, _context(None, _endpoint_names(viewer), filters))
    recovered = request.query_params.get("recovered", "")
    context = _context(page.log, page.endpoints, filters, page.bodies) | {
        "recovered": int(recovered) if recovered.isdigit() else None
    }
    return render(request, viewer, template, context)


def _failed_action(request: Request, viewer: Viewer, error: ClaimcheckError) -> HTMLResponse:
    filters = dict.fromkeys(FILTERS, "")
    return failed(request, viewer, "deliveries.html", error, _context(None, _endpoint_names(viewer), filters))


@router.post("/deliveries/redeliver", include_in_schema=False)
def redeliver_one(
    request: Request,
    viewer: Annotated[Viewer, Depends(signed_in)],
    form: Annotated[Form, Depends(posted_form)],
) -> Response:
    """Send one delivery's event to its endpoint again, now."""
    endpoint_id = form.get("endpoint_id")
    try:
        with tenant_session_scope(viewer.tenant_id) as session:
            redeliver(session, viewer.principal, form.get("event_id"), endpoint_id)
    except ClaimcheckError as error:
        return _failed_action(request, viewer, error)
    return see_other("/portal/deliveries", "redelivered", endpoint=endpoint_id)


@router.post("/deliveries/recover", include_in_schema=False)
def recover_failed(
    request: Request,
    viewer: Annotated[Viewer, Depends(signed_in)],
    form: Annotated[Form, Depends(posted_form)],
) -> Response:
    """Send again every delivery to one endpoint that failed since a time."""
    endpoint_id = form.get("endpoint_id")
    try:
        since = parse_time(form.get("since"), "since")
        if since is None:
            raise ValidationError("since: say from when to recover failed deliveries", field=["since"])
        with tenant_session_scope(viewer.tenant_id) as session:
            count = recover(session, viewer.principal, endpoint_id, since)
    except ClaimcheckError as error:
        return _failed_action(request, viewer, error)
    return see_other("/portal/deliveries", "recovered", endpoint=endpoint_id, recovered=str(count))
