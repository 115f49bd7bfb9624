"""What a delivery attempt sent and got back, fit to show on a page: headers sorted with credentials
hidden, and the body every attempt of an event sends (its per-attempt download link left out)."""

from __future__ import annotations

import json

from service.settings import get_settings
from service.webhooks.models import WebhookEvent
from service.webhooks.sending import carries_download_url, event_body

HIDDEN_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
"""Headers whose values a page never shows (a receiver's session cookie is not the tenant's to read)."""
HIDDEN = "(hidden)"
SIGNED_LINK = "(a download link signed for this attempt alone: not shown)"


def shown_headers(headers: dict[str, str] | None) -> list[tuple[str, str]] | None:
    """Stored headers by name, credentials hidden; None when the attempt stored none."""
    if headers is None:
        return None
    return [(name, HIDDEN if name in HIDDEN_HEADERS else value) for name, value in sorted(headers.items())]


def request_body(event: WebhookEvent) -> str:
    """The JSON body the event's deliveries send, indented; a job.succeeded's signed download URL,
    made anew for each attempt (and a credential while it lasts), is replaced by a note."""
    data = event.data
    if carries_download_url(event.type, data, event.artifact_key):
        job = data["job"]
        data = {**data, "job": {**job, "artifact": {**job["artifact"], "downloadUrl": SIGNED_LINK}}}
    sent = event_body(event.type, event.created_at, data, None, get_settings())
    return json.dumps(json.loads(sent), indent=2, ensure_ascii=False)
