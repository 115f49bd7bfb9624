"""The deliverer's HTTP transport: httpx's, on a pool that assigns requests cheaply.

Whenever a request starts or ends, httpcore's pool asks every connection whether the server closed it
(an idle socket that is readable), a system call each, and counts all connections again for each idle
one: quadratic in the connections to a host, profiled at about a quarter of a deliverer's CPU with
20 connections to one receiver, and more with the hundreds a backlog over many endpoints of one host
opens. This pool asks only the idle connection it is about to reuse, sweeps the others at most once a
second (so connections the server closed, or whose keep-alive expired, still go), and counts once.
With the anyio backend each "is it readable?" also built every attribute of the socket (peer name and
all) to find the socket itself: these streams keep their socket and poll it directly.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
import typing

import httpcore
import httpx

WRITE_BUFFER = 64 * 1024
"""Bytes a stream holds before it writes without waiting for the next read."""
SWEEP_SECONDS = 1.0
"""How often the pool checks every connection, not only the one it reuses."""


def _readable(sock: socket.socket | None) -> bool:
    """Whether the socket has something to read (or is gone): on an idle keep-alive connection, the
    server closed it."""
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _Stream(httpcore.AsyncNetworkStream):
    """A connection's stream: it polls its own socket, and holds what it is given to write until the
    next read (or WRITE_BUFFER bytes), so a request's head and body go out in one system call, not
    two or three (on loopback each send also runs the receiving side's TCP work)."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket: socket.socket | None = stream.get_extra_info("socket")
        self._pending = bytearray()
        self._write_timeout: float | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await self._flush()
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._pending += buffer
        self._write_timeout = timeout
        if len(self._pending) >= WRITE_BUFFER:
            await self._flush()

    async def _flush(self) -> None:
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            await self._stream.write(data, self._write_timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            return _readable(self._socket)
        return self._stream.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


Connection = httpcore.AsyncConnectionInterface


class _Pool(httpcore.AsyncConnectionPool):
    """httpcore's pool (HTTP/1.1), assigning requests in time linear in its connections."""

    _next_sweep = 0.0

    def _assign_requests_to_connections(self) -> list[Connection]:
        """As httpcore's: drop closed connections, close expired and surplus idle ones, then give each
        queued request an available connection, a new one, or one in place of an idle one. Returns
        the connections to close."""
        closing = self._tidy()
        for pool_request in self._requests:
            if not pool_request.is_queued():
                continue
            origin = pool_request.request.url.origin
            connection = self._available(origin, closing)
            if connection is None:
                if len(self._connections) >= self._max_connections:
                    spare = next((c for c in self._connections if c.is_idle()), None)
                    if spare is None:
                        continue
                    self._connections.remove(spare)
                    closing.append(spare)
                connection = self.create_connection(origin)
                self._connections.append(connection)
            pool_request.assign_to_connection(connection)
        return closing

    def _tidy(self) -> list[Connection]:
        """Drop the closed connections; the idle ones past max_keepalive_connections and, once every
        SWEEP_SECONDS, the expired ones are returned to be closed."""
        closing: list[Connection] = []
        now = time.monotonic()
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + SWEEP_SECONDS
        kept: list[Connection] = []
        idle = 0
        for connection in self._connections:
            if connection.is_closed():
                continue
            if sweep and connection.has_expired():
                closing.append(connection)
                continue
            if connection.is_idle():
                idle += 1
                if idle > self._max_keepalive_connections:
                    closing.append(connection)
                    continue
            kept.append(connection)
        self._connections[:] = kept
        return closing

    def _available(self, origin: httpcore.Origin, closing: list[Connection]) -> Connection | None:
        """The most recently used connection to origin that can take a request now (the ones idle
        longest are left to expire, rather than reused just as the server's keep-alive ends); the idle
        ones the server closed meanwhile (checked only here, as each comes up) go to `closing`."""
        for connection in reversed(list(self._connections)):
            if not (connection.can_handle_request(origin) and connection.is_available()):
                continue
            self._connections.remove(connection)
            if connection.has_expired():
                closing.append(connection)
                continue
            self._connections.append(connection)  # the list runs from least to most recently used
            return connection
        return None


class Transport(httpx.AsyncHTTPTransport):
    """httpx's transport (HTTP/1.1, certificates verified, no proxies from the environment) on the
    pool and the streams above."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = _Pool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(),
        )
