"""psycopg's pipeline mode, its statements written at once, ending in a Sync alone, so that PgBouncer in
transaction mode can follow it.

psycopg writes each statement of a pipeline as it is executed: a wait until the socket is writable, the
write, and another wait, three system calls per statement, in each of which the thread lets go of
Python's lock and must take it back from the event loop's thread (an API request's work runs in a
thread). Statements executed inside `batched()` wait in the pipeline's queue instead, and go to libpq's
buffer together at the block's end; the Sync that follows writes them all at once.

psycopg ends a pipeline with a Sync, then, whenever the Sync's answer has not arrived yet (usually), a
Flush to fetch it. The Sync already makes the server send everything, so the Flush adds nothing.
Behind PgBouncer (1.18, Debian's) it does harm: when the Sync's ReadyForQuery ends the transaction (a
pipeline that commits), PgBouncer gives the server connection back to its pool; a Flush it reads
after that takes a server connection again for the client, the server answers a Flush with nothing,
and PgBouncer waits for a ReadyForQuery that never comes. That server connection is never released:
with a pool of one, every client waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.abc import PQGen
from psycopg.generators import send


class _SyncEndedPipeline(psycopg.Pipeline):
    """A pipeline whose exit sends a Sync and no Flush (psycopg 3.3's exit, less the Flush; nothing after a
    sync() that left nothing to answer), and whose statements can be batched (see module)."""

    _holding = False

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Statements executed in this block are only queued; at its end each is put in libpq's
        buffer, unsent: the next sync() or the pipeline's exit writes them, with the Sync, at once."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        while self.command_queue:  # in pipeline mode libpq buffers up to 64 KiB before it writes
            self.command_queue.popleft()()

    def _communicate_gen(self) -> PQGen[None]:
        """psycopg's, run after each statement's execute; while batched, nothing (see batched)."""
        if self._holding:
            return
        yield from super()._communicate_gen()

    def _exit_gen(self) -> PQGen[None]:
        if not self.command_queue and not self.result_queue:
            return  # sync() got every answer and nothing was executed since: a Sync would wait for nothing
        try:
            self._enqueue_sync()
            yield from self._communicate_gen()
        finally:
            # _communicate_gen's last write may leave part of a large batch in libpq's buffer; send the
            # rest, then the Sync answers
            yield from send(self.pgconn)
            yield from self._fetch_gen(flush=False)


@contextmanager
def pipeline(connection: psycopg.Connection[Any]) -> Iterator[_SyncEndedPipeline]:
    """connection.pipeline(), ending in a Sync alone (see module); not nested in another pipeline."""
    with connection.lock:
        assert connection._pipeline is None, "a pipeline is already open on this connection"
        opened = connection._pipeline = _SyncEndedPipeline(connection)
    try:
        with opened:
            yield opened
    finally:
        with connection.lock:
            connection._pipeline = None
