"""A real HTTP webhook receiver on loopback whose answers each test scripts per path."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # a deliverer opens up to WEBHOOK_MAX_IN_FLIGHT connections at once


class Receiver:
    """Records every POST; `script(path, answers...)` sets the answers for the next requests to a path."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._scripts: dict[str, list[Answer]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                answer = receiver._next_answer(self.path)
                receiver._record(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                )
                if answer.delay:
                    time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, path: str, *answers: Answer) -> None:
        with self._lock:
            self._scripts[path] = list(answers)

    def _next_answer(self, path: str) -> Answer:
        with self._lock:
            answers = self._scripts.get(path)
            return answers.pop(0) if answers else Answer()

    def _record(self, request: Received) -> None:
        with self._changed:
            self.received.append(request)
            self._changed.notify_all()

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [request for request in self.received if request.path == path]

    def wait_for(
        self, path: str, condition: Callable[[list[Received]], bool], timeout: float = 30
    ) -> list[Received]:
        """The requests to path once condition holds for them (or whatever arrived by the timeout)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                requests = [request for request in self.received if request.path == path]
                remaining = deadline - time.monotonic()
                if condition(requests) or remaining <= 0:
                    return requests
                self._changed.wait(remaining)
