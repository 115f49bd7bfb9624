"""The deliverer's HTTP/1.1 client: connections are reused while the server keeps them, and one the
server has closed (or left unclean) is never sent a request; chunked, long and interim responses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from service.webhooks.transport import MAX_DRAIN, RESPONSE_KEEP, Pool, TransportError, request_bytes

NO_CONTENT = b"HTTP/1.1 204 No Content\r\nconnection: keep-alive\r\n\r\n"


class _Server:
    """An HTTP/1.1 server answering each request with `answer(n)` (n counts requests over all
    connections); with `close_after`, it closes each connection after that many responses (as a
    receiver's short keep-alive does). `hang_up_on` lists request numbers it reads but closes the
    connection on instead of answering."""

    def __init__(
        self,
        close_after: int | None = None,
        answer: Callable[[int], bytes] = lambda n: NO_CONTENT,
        hang_up_on: frozenset[int] = frozenset(),
    ) -> None:
        self.close_after = close_after
        self.answer = answer
        self.hang_up_on = hang_up_on
        self.connections = 0
        self.requests = 0
        self.heads: list[bytes] = []
        self.pool: Pool | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while self.close_after is None or answered < self.close_after:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                number = self.requests
                self.requests += 1
                if number in self.hang_up_on:
                    break
                writer.write(self.answer(number))
                await writer.drain()
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _serve(server: _Server, rounds: int, at_once: int, pause: float = 0.05) -> list[list[object]]:
    """`rounds` rounds of `at_once` POSTs at once through one pool; each round's results (responses, or
    the TransportError raised). The pool is server.pool."""
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    pool = server.pool = Pool("http", "127.0.0.1", port, None, max_idle=50)
    request = request_bytes("/hook", [("host", f"hooks.example:{port}")], b"{}")
    results: list[list[object]] = []
    async with listening:
        for _ in range(rounds):
            sends = (pool.send(request) for _ in range(at_once))
            found = await asyncio.gather(*sends, return_exceptions=True)
            results.append(list(found))
            await asyncio.sleep(pause)  # the server's FIN arrives before the next round
        pool.close()
    return results


def _statuses(results: list[list[object]]) -> list[int]:
    return [getattr(r, "status_code", -1) for round_ in results for r in round_]


def test_connections_are_reused_while_the_server_keeps_them() -> None:
    server = _Server()
    results = asyncio.run(_serve(server, rounds=5, at_once=20))
    assert _statuses(results) == [204] * 100
    assert server.requests == 100
    assert server.connections <= 20


def test_a_connection_the_server_closed_is_not_reused() -> None:
    server = _Server(close_after=1)
    results = asyncio.run(_serve(server, rounds=5, at_once=20))
    assert _statuses(results) == [204] * 100
    assert server.requests == 100
    assert server.connections == 100
    assert server.pool is not None
    assert server.pool.retried == 0  # none was even tried


def test_a_response_saying_connection_close_ends_its_connection() -> None:
    server = _Server(answer=lambda n: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
    results = asyncio.run(_serve(server, rounds=3, at_once=1, pause=0))
    assert [(r.status_code, r.body) for round_ in results for r in round_] == [(200, b"ok")] * 3  # type: ignore[attr-defined]
    assert server.connections == 3


def test_the_request_goes_out_as_one_post_with_its_length() -> None:
    server = _Server()
    asyncio.run(_serve(server, rounds=1, at_once=1))
    head = server.heads[0].decode()
    assert head.startswith("POST /hook HTTP/1.1\r\nhost: hooks.example:")
    assert "content-length: 2\r\n" in head


def _chunked(*chunks: bytes) -> bytes:
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks)
    return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body + b"0\r\nx-trailer: 1\r\n\r\n"


def test_a_chunked_body_is_read_to_its_end_and_the_connection_reused() -> None:
    server = _Server(answer=lambda n: _chunked(b"hello ", b"world", b"!" * RESPONSE_KEEP))
    results = asyncio.run(_serve(server, rounds=3, at_once=1))
    bodies = [r.body for round_ in results for r in round_]  # type: ignore[attr-defined]
    assert bodies == [(b"hello world" + b"!" * RESPONSE_KEEP)[:RESPONSE_KEEP]] * 3
    assert server.connections == 1


def test_a_chunked_body_over_the_limit_is_cut_and_its_connection_closed() -> None:
    big = b"x" * 8192
    server = _Server(answer=lambda n: _chunked(*[big] * (MAX_DRAIN // len(big) + 2)))
    results = asyncio.run(_serve(server, rounds=2, at_once=1))
    assert [r.body for round_ in results for r in round_] == [b"x" * RESPONSE_KEEP] * 2  # type: ignore[attr-defined]
    assert server.connections == 2


def test_a_body_over_the_limit_is_not_read_and_its_connection_is_closed() -> None:
    length = MAX_DRAIN + 1
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % length + b"y" * length
    server = _Server(answer=lambda n: answer)
    results = asyncio.run(_serve(server, rounds=2, at_once=1))
    assert [r.body for round_ in results for r in round_] == [b"y" * RESPONSE_KEEP] * 2  # type: ignore[attr-defined]
    assert server.connections == 2


def test_a_body_within_the_limit_is_read_whole_and_its_connection_reused() -> None:
    length = MAX_DRAIN
    answer = b"HTTP/1.1 500 Oops\r\ncontent-length: %d\r\nretry-after: 5\r\n\r\n" % length + b"z" * length
    server = _Server(answer=lambda n: answer)
    results = asyncio.run(_serve(server, rounds=3, at_once=1))
    responses = [r for round_ in results for r in round_]
    assert [(r.status_code, r.body, r.header("retry-after")) for r in responses] == [  # type: ignore[attr-defined]
        (500, b"z" * RESPONSE_KEEP, "5")
    ] * 3
    assert server.connections == 1


def test_interim_responses_are_skipped() -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\n\r\n"
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\nX-Thing: a\r\nx-thing: b\r\n\r\ndone"
    )
    server = _Server(answer=lambda n: answer)
    results = asyncio.run(_serve(server, rounds=2, at_once=1))
    responses = [r for round_ in results for r in round_]
    assert [(r.status_code, r.body) for r in responses] == [(202, b"done")] * 2  # type: ignore[attr-defined]
    assert responses[0].headers == [("content-length", "4"), ("x-thing", "a"), ("x-thing", "b")]  # type: ignore[attr-defined]
    assert server.connections == 1


def test_a_body_ending_at_close_is_read_and_its_connection_not_reused() -> None:
    server = _Server(close_after=1, answer=lambda n: b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
    results = asyncio.run(_serve(server, rounds=2, at_once=1))
    assert [r.body for round_ in results for r in round_] == [b"until the end"] * 2  # type: ignore[attr-defined]
    assert server.connections == 2


def test_a_reused_connection_closed_as_it_was_reused_is_retried_once_on_a_new_one() -> None:
    server = _Server(hang_up_on=frozenset({1}))
    results = asyncio.run(_serve(server, rounds=2, at_once=1))
    assert _statuses(results) == [204, 204]
    assert server.requests == 3
    assert server.connections == 2
    assert server.pool is not None
    assert server.pool.retried == 1


def test_a_new_connection_that_gets_no_answer_fails() -> None:
    server = _Server(hang_up_on=frozenset({0}))
    results = asyncio.run(_serve(server, rounds=1, at_once=1))
    error = results[0][0]
    assert isinstance(error, TransportError)
    assert str(error) == "RemoteProtocolError: server disconnected without sending a response"


def test_a_malformed_answer_fails() -> None:
    server = _Server(answer=lambda n: b"SMTP ready\r\n\r\n")
    results = asyncio.run(_serve(server, rounds=1, at_once=1))
    assert str(results[0][0]).startswith("RemoteProtocolError: malformed status line")


def test_a_refused_connection_names_the_error() -> None:
    async def refused() -> None:
        await Pool("http", "127.0.0.1", 9, None).send(request_bytes("/", [("host", "x")], b""))

    with pytest.raises(TransportError, match=r"^ConnectError: .*(refused|Connect call failed)"):
        asyncio.run(refused())


def test_a_header_that_would_break_the_request_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        request_bytes("/", [("host", "x"), ("x-evil", "a\r\nhost: y")], b"")


def test_a_target_with_characters_outside_ascii_is_percent_encoded() -> None:
    assert request_bytes("/bücher?q=ä", [], b"").startswith(b"POST /b%C3%BCcher?q=%C3%A4 HTTP/1.1\r\n")
