"""psycopg's pipeline mode, ending in a Sync alone, so that PgBouncer in transaction mode can follow it.

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
    """A pipeline whose exit sends a Sync and no Flush (psycopg 3.3's exit, less the Flush)."""

    def _exit_gen(self) -> PQGen[None]:
        try:
            self._enqueue_sync()
            yield from self._communicate_gen()
        finally:
            # _communicate_gen's last write may leave part of a large batch in libpq's buffer; send the
            # rest, then the Sync answers
            yield from send(self.pgconn)
            yield from self._fetch_gen(flush=False)


@contextmanager
def pipeline(connection: psycopg.Connection[Any]) -> Iterator[psycopg.Pipeline]:
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
