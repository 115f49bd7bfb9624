"""Calling an ASGI app in-process without starlette's TestClient (deprecated with plain httpx)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx


def asgi_get(app: Any, path: str, headers: Mapping[str, str] | None = None) -> httpx.Response:
    """GET path from app, following no redirects."""

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get(path, headers=dict(headers or {}))

    return asyncio.run(call())
