"""The deliverer's HTTP/1.1 client: one POST at a time per connection, keep-alive connections pooled
per checked origin.

httpx (with httpcore under it) took well over a third of a deliverer's CPU: its request and response
models, header normalisation, the pool's bookkeeping and the anyio stream layers cost far more than
the bytes sent. A webhook attempt needs little of that: a POST of a body already in memory to an
address already checked, the status, the headers and at most the first RESPONSE_KEEP bytes of the
body. So this client:

- connects to the address it is given (the SSRF check's address, never a second lookup of the name)
  and, for https, verifies the certificate against the original hostname, which it sends as SNI;
- writes a request's head and body in one write;
- reads the status line and headers (1xx interim responses skipped), then the body by
  Content-Length, chunked transfer coding, or until the server closes; it keeps the first
  RESPONSE_KEEP bytes, and a body longer than MAX_DRAIN is not read to its end: the connection is
  closed instead;
- reuses a connection only when the response left it clean (complete body, no `connection: close`,
  HTTP/1.1 or an HTTP/1.0 keep-alive), the server has not closed it meanwhile (asyncio keeps reading
  idle sockets, so a FIN or reset shows without a system call) and it has been idle less than
  KEEPALIVE_SECONDS; the most recently used first;
- sends a request that met a closed connection (reset, or closed before any byte of an answer) on a
  reused connection once more, on a new connection: the server closed an idle connection just as it
  was reused. At-least-once delivery allows it; receivers dedupe by `webhook-id`;
- never follows redirects: a 3xx is an answer like any other.

Errors are TransportError, whose text names what failed (ConnectError, ConnectTimeout, ReadError,
WriteError, RemoteProtocolError) and why, e.g. "ConnectError: [Errno 111] Connect call failed
('127.0.0.1', 9)". The caller bounds the whole request with its own deadline (a cancelled request's
connection is closed, never reused).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass

import certifi

RESPONSE_KEEP = 4096
"""Bytes of a response body kept (what an attempt stores)."""
MAX_DRAIN = 64 * 1024
"""A response body longer than this is not read to its end: its connection is closed instead."""
MAX_HEAD = 64 * 1024
"""The longest response head (status line and headers) accepted."""
KEEPALIVE_SECONDS = 4.0
"""How long an idle connection is kept: under the 5 s many servers (uvicorn's default) keep it."""

_NO_BODY = frozenset({204, 304})
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class TransportError(Exception):
    """A request got no complete response; str() names the kind of failure and its reason."""

    def __init__(self, kind: str, reason: object = None, *, unanswered: bool = False) -> None:
        text = str(reason) if reason is not None else ""
        if not text and isinstance(reason, BaseException):
            text = type(reason).__name__
        super().__init__(f"{kind}: {text}" if text else kind)
        self.kind = kind
        self.unanswered = unanswered
        """True when the connection failed before any byte of an answer came back."""


@dataclass(slots=True)
class Response:
    """A response: the status, the headers as sent (names lower-cased), the first bytes of the body."""

    status_code: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of a header (name in lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def is_redirect(self) -> bool:
        return self.status_code in REDIRECTS and self.header("location") is not None


def default_ssl_context() -> ssl.SSLContext:
    """Certificates verified against the system's (certifi's) roots, hostnames checked; HTTP/1.1."""
    context = ssl.create_default_context(cafile=certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        """Still open, nothing unread (the server said nothing since, not even goodbye), not idle too long."""
        reader = self.reader
        return (
            now - self.idle_since < KEEPALIVE_SECONDS
            and not self.writer.transport.is_closing()
            and not reader.at_eof()
            and reader.exception() is None
            and not getattr(reader, "_buffer", b"")
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


class Pool:
    """Keep-alive connections to one address (and, for https, one TLS server name)."""

    def __init__(
        self,
        scheme: str,
        address: str,
        port: int,
        server_hostname: str | None,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 100,
    ) -> None:
        self.address = address
        self.port = port
        self.tls = scheme == "https"
        self.server_hostname = server_hostname or address
        self.ssl_context = (ssl_context or default_ssl_context()) if self.tls else None
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        """Least recently used first."""
        self.opened = 0
        """Connections opened so far (for tests and benchmarks)."""
        self.retried = 0
        """Requests sent again after a reused connection turned out closed."""

    async def send(self, request: bytes, *, connect_timeout: float | None = None) -> Response:
        """Send a request (`request_bytes`) and answer its response. The caller bounds the whole of it
        with its deadline."""
        connection = self._reuse()
        if connection is not None:
            try:
                return await self._exchange(connection, request)
            except TransportError as error:
                if not error.unanswered:
                    raise
                # The server closed it as it was reused: once more, on a connection of its own.
                self.retried += 1
        connection = await self._connect(connect_timeout)
        return await self._exchange(connection, request)

    def _reuse(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now):
                if idle and now - idle[0].idle_since >= KEEPALIVE_SECONDS:
                    self._close_expired(now)
                return connection
            connection.close()
        return None

    def _close_expired(self, now: float) -> None:
        idle = self._idle
        while idle and now - idle[0].idle_since >= KEEPALIVE_SECONDS:
            idle.pop(0).close()

    def _release(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        self._idle.append(connection)
        if len(self._idle) > self.max_idle:
            self._idle.pop(0).close()

    async def _connect(self, timeout: float | None) -> _Connection:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    self.address,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.server_hostname if self.tls else None,
                    limit=MAX_HEAD,
                )
        except TimeoutError:
            raise TransportError("ConnectTimeout") from None
        except (OSError, ssl.SSLError, ValueError) as error:
            raise TransportError("ConnectError", error) from None
        self.opened += 1
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, request: bytes) -> Response:
        """Send the request and read the response; the connection goes back to the pool if it can be
        used again, else it is closed (and always when anything fails or the caller gives up)."""
        reusable = False
        try:
            try:
                connection.writer.write(request)
                if connection.writer.transport.get_write_buffer_size():
                    await connection.writer.drain()
            except (OSError, RuntimeError) as error:
                raise TransportError("WriteError", error, unanswered=True) from None
            response, reusable = await _read_response(connection.reader)
            return response
        finally:
            if reusable:
                self._release(connection)
            else:
                connection.close()

    def close(self) -> None:
        """Close the idle connections (ones in use close as their requests end, not being reusable)."""
        for connection in self._idle:
            connection.close()
        self._idle.clear()


_SAFE = frozenset(range(0x21, 0x7F))


def request_bytes(target: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """A POST of body to target (path and query) with these headers (Host among them) and its
    Content-Length, as sent. ValueError for a header that would break the request's framing."""
    if not target.isascii() or not target.isprintable() or " " in target:
        target = "".join(c if ord(c) in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in target)
    lines = [f"POST {target or '/'} HTTP/1.1"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"the header {name!r} cannot be sent: it contains a line break or colon")
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(body)}\r\n\r\n")
    return "\r\n".join(lines).encode("utf-8") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    """The response, and whether its connection can take another request."""
    answered = False
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            answered = True
            status, version, headers = _parse_head(head)
            if not 100 <= status < 200 or status == 101:
                break  # not an interim response (100 Continue, 103 Early Hints): the real one
        body, clean = await _read_body(reader, status, headers)
        return Response(status, headers, body), clean and _keeps_alive(version, headers)
    except asyncio.IncompleteReadError as error:
        if not answered and not error.partial:
            raise TransportError(
                "RemoteProtocolError", "server disconnected without sending a response", unanswered=True
            ) from None
        raise TransportError("RemoteProtocolError", "server disconnected before the response ended") from None
    except asyncio.LimitOverrunError:
        raise TransportError("RemoteProtocolError", f"a response line is over {MAX_HEAD} bytes") from None
    except (ConnectionResetError, BrokenPipeError) as error:
        raise TransportError("ReadError", error, unanswered=not answered) from None
    except (OSError, ssl.SSLError) as error:
        raise TransportError("ReadError", error) from None


async def _read_body(
    reader: asyncio.StreamReader, status: int, headers: list[tuple[str, str]]
) -> tuple[bytes, bool]:
    """The first RESPONSE_KEEP bytes of the body, and whether it was read to its end and no further
    (so the connection can be used again)."""
    if status in _NO_BODY:
        return b"", True
    if status == 101:
        return b"", False  # switched to another protocol: nothing more of HTTP on this connection
    encoding = _last_value(headers, "transfer-encoding")
    if encoding is not None:
        if encoding.lower().rsplit(",", 1)[-1].strip() == "chunked":
            return await _read_chunked(reader)
        return await _read_until_close(reader), False
    length = _content_length(headers)
    if length is None:
        return await _read_until_close(reader), False
    if length > MAX_DRAIN:
        return await reader.readexactly(min(length, RESPONSE_KEEP)), False
    body = await reader.readexactly(length)
    return body[:RESPONSE_KEEP], True


def _parse_head(head: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise TransportError("RemoteProtocolError", f"malformed status line {lines[0][:100]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and headers:  # an obsolete folded continuation line
            folded_name, folded = headers[-1]
            headers[-1] = (folded_name, f"{folded} {_text(line.strip())}")
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise TransportError("RemoteProtocolError", f"malformed header line {line[:100]!r}")
        headers.append((name.decode("latin-1").lower(), _text(value.strip())))
    return int(parts[1]), parts[0], headers


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _last_value(headers: list[tuple[str, str]], name: str) -> str | None:
    found = None
    for key, value in headers:
        if key == name:
            found = value if found is None else f"{found}, {value}"
    return found


def _keeps_alive(version: bytes, headers: list[tuple[str, str]]) -> bool:
    tokens = {t.strip().lower() for t in (_last_value(headers, "connection") or "").split(",")}
    if "close" in tokens:
        return False
    return version != b"HTTP/1.0" or "keep-alive" in tokens


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    values = {v.strip() for key, value in headers if key == "content-length" for v in value.split(",")}
    if not values:
        return None
    if len(values) > 1 or not all(v.isdigit() for v in values):
        raise TransportError("RemoteProtocolError", "invalid Content-Length")
    return int(values.pop())


async def _read_until_close(reader: asyncio.StreamReader) -> bytes:
    """The first RESPONSE_KEEP bytes of a body that ends when the server closes; the rest unread."""
    buffer = bytearray()
    while len(buffer) < RESPONSE_KEEP:
        chunk = await reader.read(RESPONSE_KEEP - len(buffer))
        if not chunk:
            break
        buffer += chunk
    return bytes(buffer)


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """The first RESPONSE_KEEP bytes of a chunked body, and whether it was read to its end (it is not
    when longer than MAX_DRAIN)."""
    buffer = bytearray()
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise TransportError("RemoteProtocolError", f"malformed chunk size {size_text[:20]!r}") from None
        if size < 0:
            raise TransportError("RemoteProtocolError", "malformed chunk size")
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                pass
            return bytes(buffer), True
        total += size
        if total > MAX_DRAIN:
            wanted = RESPONSE_KEEP - len(buffer)
            if wanted > 0:
                buffer += await reader.readexactly(min(wanted, size))
            return bytes(buffer), False
        chunk = await reader.readexactly(size)
        if len(buffer) < RESPONSE_KEEP:
            buffer += chunk[: RESPONSE_KEEP - len(buffer)]
        if await reader.readexactly(2) != b"\r\n":
            raise TransportError("RemoteProtocolError", "a chunk does not end with CRLF")
