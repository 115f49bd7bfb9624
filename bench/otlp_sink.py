"""A collector-like OTLP/HTTP sink for the benchmarks: accepts every export, counts it, keeps nothing.

`GET /stats` returns how many export requests and bytes arrived. Serve with
`uvicorn bench.otlp_sink:create --factory`.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Receive, Scope, Send

counts = {"requests": 0, "bytes": 0}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["method"] == "POST":
        counts["requests"] += 1
        counts["bytes"] += size
        headers = [(b"content-type", b"application/x-protobuf")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})  # an empty Export*ServiceResponse
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": json.dumps(counts).encode()})


def create() -> Any:
    """The app, for `uvicorn --factory`."""
    return app
