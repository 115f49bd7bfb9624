"""A minimal ASGI webhook receiver for the benchmarks: answers 204 and records, per path, how late each
event came, when the first and last arrived, and how many requests it held at once.

A `delay_ms` query parameter makes it take that long to answer (so requests overlap and the number in
flight per endpoint shows). `GET /stats` returns the count `received`; `GET /stats?delays` adds
`delays` (seconds: arrival time minus the event's `timestamp`) and a `paths` map with the same per
path plus `first`, `last` (epoch seconds), `max_in_flight` and, for `delay_ms` paths, `spans` (each
request's [start, end]). `DELETE /stats` resets them. Serve with
`uvicorn --factory bench.fast_receiver:create`, or as several processes sharing one port:

    python -m bench.fast_receiver --port P --control-port C

listens on P with SO_REUSEPORT (the kernel spreads connections over every process bound to P) and on
C, a port of its own, where a benchmark reads and resets this process's stats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send


@dataclass
class PathStats:
    received: int = 0
    delays: list[float] = field(default_factory=list)
    first: float | None = None
    last: float | None = None
    in_flight: int = 0
    max_in_flight: int = 0
    spans: list[tuple[float, float]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "delays": self.delays,
            "first": self.first,
            "last": self.last,
            "max_in_flight": self.max_in_flight,
            "spans": self.spans,
        }


paths: dict[str, PathStats] = {}


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def _take(scope: Scope, body: bytes) -> None:
    stats = paths.setdefault(scope["path"], PathStats())
    now = time.time()
    stats.received += 1
    stats.first = now if stats.first is None else stats.first
    stats.last = now
    timestamp = json.loads(body).get("timestamp")
    if timestamp:
        stats.delays.append(now - datetime.fromisoformat(timestamp).timestamp())
    delay_ms = parse_qs(scope["query_string"].decode()).get("delay_ms")
    stats.in_flight += 1
    stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
    try:
        if delay_ms:
            await asyncio.sleep(float(delay_ms[0]) / 1000)
    finally:
        stats.in_flight -= 1
        if delay_ms:
            stats.spans.append((now, time.time()))


def _totals(with_delays: bool) -> dict[str, Any]:
    totals: dict[str, Any] = {"received": sum(s.received for s in paths.values())}
    if with_delays:
        totals["delays"] = [d for s in paths.values() for d in s.delays]
        totals["paths"] = {path: s.report() for path, s in paths.items()}
    return totals


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = await _read_body(receive)
    answer: Any = None
    if scope["method"] == "POST":
        await _take(scope, body)
    elif scope["method"] == "GET":
        answer = _totals(with_delays=b"delays" in scope["query_string"])
    elif scope["method"] == "DELETE":
        paths.clear()
    payload = json.dumps(answer).encode() if answer is not None else b""
    await send({"type": "http.response.start", "status": 200 if payload else 204, "headers": []})
    await send({"type": "http.response.body", "body": payload})


def create() -> Any:
    """The app, for `uvicorn --factory`."""
    return app


def _listen(port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="One process of a receiver sharing --port with others.")
    parser.add_argument("--port", type=int, required=True, help="the shared port (SO_REUSEPORT)")
    parser.add_argument("--control-port", type=int, required=True, help="this process's own port")
    args = parser.parse_args()
    sockets = [_listen(args.port, reuse_port=True), _listen(args.control_port, reuse_port=False)]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", backlog=2048)
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
