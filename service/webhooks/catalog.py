"""The published event catalog: each event type with its description, an example body and the JSON
Schema (2020-12) of its whole body, served by ``GET /webhooks/event-types`` and ``webhookEventTypes``."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from fastapi import APIRouter, Response

from service.webhooks.events import CATALOG

ROUTE = "/webhooks/event-types"

router = APIRouter()


def event_catalog() -> list[dict[str, Any]]:
    """Every event type, in the order declared: ``{"type", "description", "schema", "example"}``."""
    return [
        {
            "type": event_type.name,
            "description": event_type.description,
            "schema": event_type.schema,
            "example": event_type.example_body(),
        }
        for event_type in CATALOG.values()
    ]


@cache
def _catalog_json() -> bytes:
    return json.dumps({"event_types": event_catalog()}, separators=(",", ":")).encode()


@router.get(ROUTE, include_in_schema=False)
def event_types() -> Response:
    """The catalog, public (no key needed): it describes the webhook bodies, nothing of any tenant."""
    return Response(
        _catalog_json(), media_type="application/json", headers={"cache-control": "public, max-age=300"}
    )
