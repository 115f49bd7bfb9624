"""The deliverer's connection pool: connections are reused while the server keeps them, and one the
server has closed is never sent a request (which would fail as "disconnected without a response")."""

from __future__ import annotations

import asyncio

import httpx

from service.webhooks.transport import Transport

RESPONSE = b"HTTP/1.1 204 No Content\r\nconnection: keep-alive\r\n\r\n"


class _Server:
    """An HTTP/1.1 server answering 204 to every request; with `close_after`, it closes each connection
    after that many responses (as a receiver's short keep-alive does)."""

    def __init__(self, close_after: int | None) -> None:
        self.close_after = close_after
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while self.close_after is None or answered < self.close_after:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(RESPONSE)
                await writer.drain()
                self.requests += 1
                answered += 1
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


async def _post_rounds(close_after: int | None, rounds: int, at_once: int) -> _Server:
    server = _Server(close_after)
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with listening, httpx.AsyncClient(transport=Transport(limits)) as client:
        for _ in range(rounds):
            responses = await asyncio.gather(
                *(client.post(f"http://127.0.0.1:{port}/hook", content=b"{}") for _ in range(at_once))
            )
            assert [r.status_code for r in responses] == [204] * at_once
            await asyncio.sleep(0.05)  # the server's FIN arrives before the next round
    return server


def test_connections_are_reused_while_the_server_keeps_them() -> None:
    server = asyncio.run(_post_rounds(None, rounds=5, at_once=20))
    assert server.requests == 100
    assert server.connections <= 20


def test_a_connection_the_server_closed_is_not_reused() -> None:
    server = asyncio.run(_post_rounds(1, rounds=5, at_once=20))
    assert server.requests == 100
    assert server.connections == 100
