"""A partner's webhook receiver for the chaos run: verifies every delivery and can misbehave on cue.

Each endpoint is a path with its own secret. A delivery counts as received only when it verified and
was answered 2xx; the first one per (path, webhook-id) is kept, later ones are duplicates. Modes:
`ok`, `error` (answers 500), `timeout` (answers after the sender's deadline), `refuse` (the port is
closed, so connections are refused).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from callbacks import verify
from callbacks.errors import WebhookVerificationError

MODES = ("ok", "error", "timeout", "refuse")


@dataclass
class Delivery:
    """The first verified, acknowledged delivery of one event to one endpoint."""

    event_type: str
    job_id: str | None


@dataclass
class Tally:
    """What the receiver has seen so far (read under the receiver's lock)."""

    received: dict[tuple[str, str], Delivery] = field(default_factory=dict)  # (path, webhook-id) →
    duplicates: int = 0
    signature_failures: int = 0
    requests: Counter[str] = field(default_factory=Counter)  # by answer: 2xx, 500, timeout, unknown path


class ChaosReceiver:
    """A threaded HTTP server on a fixed loopback port; `set_mode` switches how it answers."""

    def __init__(self, timeout_delay: float) -> None:
        self.timeout_delay = timeout_delay
        self.secrets: dict[str, str] = {}
        self.tally = Tally()
        self.mode = "ok"
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._bind(0)
        assert self._server is not None
        self.port: int = self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        """Answer the next requests in this mode (`refuse` closes the port, leaving it reopens it)."""
        assert mode in MODES, mode
        with self.lock:
            previous, self.mode = self.mode, mode
        if mode == "refuse" and previous != "refuse":
            self._close()
        elif mode != "refuse" and previous == "refuse":
            self._bind(self.port)

    def end_mode(self, mode: str) -> None:
        """Go back to `ok` if still answering in this mode."""
        with self.lock:
            current = self.mode
        if current == mode:
            self.set_mode("ok")

    def stop(self) -> None:
        self._close()

    def snapshot(self) -> Tally:
        with self.lock:
            return Tally(
                dict(self.tally.received),
                self.tally.duplicates,
                self.tally.signature_failures,
                Counter(self.tally.requests),
            )

    def _bind(self, port: int) -> None:
        server = _QuietServer(("127.0.0.1", port), _handler(self))
        server.daemon_threads = True
        server.request_queue_size = 256
        threading.Thread(target=server.serve_forever, name="chaos-receiver", daemon=True).start()
        self._server = server

    def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        """Record one request; return the status to answer (0: answer nothing in time)."""
        with self.lock:
            mode = self.mode
            secret = self.secrets.get(path)
        if secret is None:
            self._count("unknown path")
            return 404
        if mode == "error":
            self._count("500")
            return 500
        if mode == "timeout":
            self._count("timeout")
            time.sleep(self.timeout_delay)
            return 0
        if len(body) != int(headers.get("content-length", "-1")):
            self._count("cut off mid-request")  # the sender died while sending: nothing to verify
            return 400
        try:
            payload: dict[str, Any] = verify(body, headers, secret)
        except WebhookVerificationError as error:
            with self.lock:
                self.tally.signature_failures += 1
            self._count(f"400 {type(error).__name__}")
            return 400
        job = payload.get("data", {}).get("job") or {}
        key = (path, headers["webhook-id"])
        with self.lock:
            self.tally.requests["2xx"] += 1
            if key in self.tally.received:
                self.tally.duplicates += 1
            else:
                self.tally.received[key] = Delivery(str(payload.get("type")), job.get("id"))
        return 204

    def _count(self, answer: str) -> None:
        with self.lock:
            self.tally.requests[answer] += 1


class _QuietServer(ThreadingHTTPServer):
    """A sender killed mid-request resets its connection: expected here, so not printed."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler(receiver: ChaosReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status = receiver.handle(self.path, headers, body)
            if status == 0:
                self.close_connection = True
                return
            try:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
