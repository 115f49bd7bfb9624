"""A pipeline's statements go to Postgres together, when the batch ends, and a pipeline that has had
its answers sends no Sync more (service.pg_pipeline): fewer writes and waits for each round trip."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from psycopg.pq import Trace
from sqlmodel import Session

from service import pg_pipeline
from service.db import get_engine, read_together, run_pipelined

LOCK = 7_340_021
HELD = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted"


def _held_for(seconds: float, check: psycopg.Connection[tuple[int]]) -> bool:
    """Whether another connection holds the advisory lock at some point within seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = check.execute(HELD, (LOCK,)).fetchone()
        if row is not None and row[0]:
            return True
        time.sleep(0.02)
    return False


def test_statements_executed_in_a_batch_reach_the_server_together_when_it_ends(env: dict[str, str]) -> None:
    with (
        psycopg.connect(env["DATABASE_URL"], autocommit=True) as check,
        psycopg.connect(env["DATABASE_URL"]) as raw,
        raw.cursor() as locking,
        raw.cursor() as reading,
    ):
        with pg_pipeline.pipeline(raw) as pipeline:
            with pipeline.batched():
                locking.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
                # psycopg alone would have written it by now, and the server taken the lock
                assert not _held_for(0.5, check)
                reading.execute("SELECT %s::int", (2,))
            pipeline.sync()
            assert _held_for(5, check)
            assert reading.fetchall() == [(2,)]
        raw.rollback()
        assert not _held_for(0.2, check)


def test_a_pipeline_of_reads_sends_one_sync(env: dict[str, str], tmp_path: Path) -> None:
    trace_path = tmp_path / "libpq.trace"
    with Session(get_engine()) as session, trace_path.open("w") as trace:
        run_pipelined(session, [("SELECT 1", {})])  # the transaction has begun
        raw = session.connection().connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        raw.pgconn.trace(trace.fileno())
        raw.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
        found: list[object] = []
        try:
            read_together(session, [(("SELECT 2", {}), found.append), (("SELECT 3", {}), found.append)])
        finally:
            raw.pgconn.untrace()
    assert found == [[(2,)], [(3,)]]
    lines = trace_path.read_text().splitlines()
    sent = [line.split("\t")[2] for line in lines if line.startswith("F\t")]
    answered = [line.split("\t")[2] for line in lines if line.startswith("B\t")]
    assert sent.count("Sync") == 1, sent  # psycopg's exit sent a second, and waited for its answer
    assert answered.count("ReadyForQuery") == 1, answered
