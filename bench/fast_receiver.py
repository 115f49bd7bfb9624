"""A minimal ASGI webhook receiver for the benchmarks: answers 204 and records how late each event came.

`GET /stats` returns the delays (arrival time minus the event's `timestamp`) in seconds and the
count of POSTs; `DELETE /stats` resets them. Serve with `uvicorn bench.fast_receiver:app`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from starlette.types import Receive, Scope, Send

received = 0
delays: list[float] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    global received
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer: Any = None
    if scope["method"] == "POST":
        received += 1
        timestamp = json.loads(body).get("timestamp")
        if timestamp:
            delays.append(
                datetime.now().astimezone().timestamp() - datetime.fromisoformat(timestamp).timestamp()
            )
    elif scope["method"] == "GET":
        answer = {"received": received, "delays": delays}
    elif scope["method"] == "DELETE":
        received = 0
        delays.clear()
    payload = json.dumps(answer).encode() if answer is not None else b""
    await send({"type": "http.response.start", "status": 200 if payload else 204, "headers": []})
    await send({"type": "http.response.body", "body": payload})


def create() -> Any:
    """The app, for `uvicorn --factory`."""
    return app
