"""after_commit: callbacks run once the outermost transaction commits, never for rolled-back work;
the pool keeps what a burst opened; run_pipelined: statements sent together, in the session's
transaction, failing as SQLAlchemy fails; read_together: reads sent together, each handed its rows;
enter_tenant: its settings reach Postgres before any statement of the transaction, in the same round
trip as the first pipelined ones; write_with_next: writes a deferring transaction holds go with its
next round trip, in order, and never outlive a rollback; flush: there, a loaded row's changed columns
become such writes too; read_and_commit: reads and the COMMIT in one round trip."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.pq import Trace
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlmodel import Session, text

from service.db import (
    TENANT_ROLE,
    after_commit,
    defer_writes,
    enter_tenant,
    flush,
    get_engine,
    make_engine,
    read_and_commit,
    read_pipelined,
    read_together,
    run_pipelined,
    session_scope,
    tenant_session_scope,
    write_with_next,
)
from service.jobs.models import Job
from service.settings import get_settings
from tests.conftest import TenantHandle, commit_job_without_enqueue


def test_callbacks_wait_for_the_outer_commit_and_skip_rolled_back_savepoints(env: dict[str, str]) -> None:
    ran: list[str] = []
    with Session(get_engine()) as session:
        kept = session.begin_nested()
        session.execute(text("select 1"))
        after_commit(session, lambda: ran.append("kept"))
        kept.commit()
        assert ran == []  # releasing a savepoint is not a commit

        discarded = session.begin_nested()
        after_commit(session, lambda: ran.append("discarded"))
        discarded.rollback()

        session.commit()
    assert ran == ["kept"]


def test_callbacks_are_dropped_when_the_transaction_rolls_back(env: dict[str, str]) -> None:
    ran: list[str] = []
    with Session(get_engine()) as session:
        session.execute(text("select 1"))
        after_commit(session, lambda: ran.append("lost"))
        session.rollback()
        session.execute(text("select 1"))
        session.commit()
    assert ran == []


def test_pipelined_statements_run_in_order_in_the_sessions_transaction(env: dict[str, str]) -> None:
    with Session(get_engine()) as session:
        run_pipelined(
            session,
            [
                ("CREATE TEMPORARY TABLE pipelined (n int PRIMARY KEY) ON COMMIT DROP", {}),
                ("INSERT INTO pipelined VALUES (%(n)s)", {"n": 1}),
                ("INSERT INTO pipelined SELECT max(n) + 1 FROM pipelined", {}),  # sees the row before it
            ],
        )
        assert session.execute(text("SELECT array_agg(n ORDER BY n) FROM pipelined")).scalar() == [1, 2]
        with pytest.raises(IntegrityError), session.begin_nested():
            run_pipelined(session, [("INSERT INTO pipelined VALUES (%(n)s)", {"n": 2})])
        assert session.execute(text("SELECT count(*) FROM pipelined")).scalar() == 2  # savepoint undone
        session.rollback()
        assert session.execute(text("SELECT to_regclass('pg_temp.pipelined')")).scalar() is None


WHO = "SELECT current_setting('app.tenant_id', true), current_user"


def test_read_together_hands_each_read_its_rows_after_the_tenants_settings(env: dict[str, str]) -> None:
    who: list[list[tuple[Any, ...]]] = []
    numbers: list[list[tuple[Any, ...]]] = []
    with Session(get_engine()) as session:
        enter_tenant(session, "ten_together")
        read_together(
            session,
            [((WHO, {}), who.append), (("SELECT generate_series(1, %(last)s)", {"last": 3}), numbers.append)],
        )
        assert who == [[("ten_together", TENANT_ROLE)]]
        assert numbers == [[(1,), (2,), (3,)]]
        assert session.execute(text(WHO)).one() == ("ten_together", TENANT_ROLE)  # the same transaction


def test_a_tenant_sessions_first_statement_of_any_kind_runs_under_its_settings(env: dict[str, str]) -> None:
    with Session(get_engine()) as session:
        enter_tenant(session, "ten_first")
        assert session.execute(text(WHO)).one() == ("ten_first", TENANT_ROLE)
        session.commit()
        assert session.execute(text(WHO)).one()[1] != TENANT_ROLE  # they end with the transaction
        session.rollback()
        session.execute(text("SELECT 1"))  # a transaction under way: the settings go at once
        enter_tenant(session, "ten_later")
        assert session.execute(text(WHO)).one() == ("ten_later", TENANT_ROLE)


def test_the_pool_keeps_the_connections_a_burst_opened(env: dict[str, str]) -> None:
    engine = make_engine(get_settings().required_url("database_url"), pool_size=8)
    opened: list[object] = []
    event.listen(engine, "connect", lambda *_: opened.append(1))
    try:
        for _ in range(3):
            burst = [engine.connect() for _ in range(8)]
            for connection in burst:
                connection.close()
    finally:
        engine.dispose()
    assert len(opened) == 8  # the second and third bursts reuse the first one's connections


HELD = "INSERT INTO held VALUES (%(n)s)"


def _held_table(session: Session) -> None:
    create = "CREATE TEMPORARY TABLE IF NOT EXISTS held (n int PRIMARY KEY) ON COMMIT DELETE ROWS"
    run_pipelined(session, [(create, {})])


@pytest.fixture
def holding(env: dict[str, str]) -> Iterator[Session]:
    """A session whose transaction holds writes (defer_writes), beside the temporary table `held`."""
    with Session(get_engine()) as session:
        _held_table(session)
        session.commit()
        defer_writes(session)
        yield session
        session.rollback()


def _sent(session: Session) -> list[int]:
    """What the table holds, read on the raw connection (past the hooks that send held writes)."""
    raw = session.connection().connection.driver_connection
    assert raw is not None
    return [n for (n,) in raw.execute("SELECT n FROM held ORDER BY n").fetchall()]


def test_held_writes_go_with_the_next_pipeline_in_order(holding: Session) -> None:
    write_with_next(holding, (HELD, {"n": 1}))
    write_with_next(holding, ("INSERT INTO held SELECT max(n) + 1 FROM held", {}))  # after the first
    assert _sent(holding) == []  # held
    [rows] = read_pipelined(holding, [("SELECT array_agg(n ORDER BY n) AS ns FROM held", {})])
    assert rows == [{"ns": [1, 2]}]
    write_with_next(holding, (HELD, {"n": 3}))
    # a statement through the session sends them first
    assert holding.execute(text("SELECT count(*) FROM held")).scalar() == 3
    write_with_next(holding, (HELD, {"n": 4}))
    holding.commit()  # and the commit
    assert _sent(holding) == []  # ON COMMIT DELETE ROWS: they were in the transaction that committed


def test_asking_again_to_hold_writes_keeps_those_held(holding: Session) -> None:
    write_with_next(holding, (HELD, {"n": 1}), (HELD, {"n": 2}))
    defer_writes(holding)  # a second writer in the same transaction
    write_with_next(holding, (HELD, {"n": 3}))
    assert _sent(holding) == []
    [rows] = read_pipelined(holding, [("SELECT array_agg(n ORDER BY n) AS ns FROM held", {})])
    assert rows == [{"ns": [1, 2, 3]}]


def test_held_writes_go_with_the_commit_and_the_session_goes_on(env: dict[str, str]) -> None:
    committed: list[str] = []
    with session_scope() as session:
        run_pipelined(session, [("CREATE TABLE IF NOT EXISTS held_kept (n int PRIMARY KEY)", {})])
        run_pipelined(session, [("TRUNCATE held_kept", {})])
    with Session(get_engine()) as session:
        defer_writes(session)
        write_with_next(session, ("INSERT INTO held_kept VALUES (%(n)s)", {"n": 7}))
        after_commit(session, lambda: committed.append("yes"))
        session.commit()  # the held write and COMMIT in one pipeline; psycopg then has nothing to commit
        assert committed == ["yes"]
        defer_writes(session)  # the next transaction on the same session
        write_with_next(session, ("INSERT INTO held_kept VALUES (%(n)s)", {"n": 7}))  # a duplicate key
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        assert session.execute(text("SELECT array_agg(n) FROM held_kept")).scalar() == [7]
        session.commit()
    with session_scope() as session:
        run_pipelined(session, [("DROP TABLE held_kept", {})])


def test_held_writes_go_with_a_rollback_and_not_into_the_next_transaction(holding: Session) -> None:
    write_with_next(holding, (HELD, {"n": 1}))
    holding.rollback()
    write_with_next(holding, (HELD, {"n": 2}))  # a new transaction that does not defer: sent now
    assert _sent(holding) == [2]


def test_a_savepoint_begins_after_the_writes_held_before_it(holding: Session) -> None:
    session = holding
    write_with_next(session, (HELD, {"n": 1}))
    savepoint = session.begin_nested()
    assert _sent(session) == [1]  # sent before the SAVEPOINT
    write_with_next(session, (HELD, {"n": 2}))  # inside it: sent as it comes
    assert _sent(session) == [1, 2]
    savepoint.rollback()
    assert _sent(session) == [1]  # the rollback takes only what the savepoint wrote
    write_with_next(session, (HELD, {"n": 3}))  # held again once it ended
    assert _sent(session) == [1]
    [rows] = read_pipelined(session, [("SELECT array_agg(n ORDER BY n) AS ns FROM held", {})])
    assert rows == [{"ns": [1, 3]}]


def test_a_tenant_savepoint_sends_the_tenants_settings_with_the_writes_held_before_it(
    tenant: TenantHandle,
) -> None:
    with tenant_session_scope(tenant.id) as session:
        defer_writes(session)
        write_with_next(session, ("SELECT set_config('claimcheck.probe', 'held', true)", {}))
        with session.begin_nested():
            seen = session.execute(
                text(
                    "SELECT current_setting('app.tenant_id', true), current_setting('claimcheck.probe', true)"
                )
            ).one()
    assert tuple(seen) == (tenant.id, "held")


@pytest.fixture
def loaded_job(tenant: TenantHandle) -> Iterator[tuple[Session, Job]]:
    """A session whose transaction holds writes, with a job it loaded; and every SQLAlchemy statement
    after the load counted in session.info["statements"]."""
    job_id = commit_job_without_enqueue(tenant.id, "speech", {"text": "Held rows."})
    with Session(get_engine()) as session:
        defer_writes(session)
        job = session.get(Job, job_id)
        assert job is not None
        session.info["statements"] = 0

        def count(*_: Any) -> None:
            session.info["statements"] += 1

        engine = get_engine()
        event.listen(engine, "before_cursor_execute", count)
        try:
            yield session, job
        finally:
            event.remove(engine, "before_cursor_execute", count)
            session.rollback()


def _stored(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_a_loaded_rows_changes_go_with_the_commit_and_no_statement_of_their_own(
    loaded_job: tuple[Session, Job],
) -> None:
    session, job = loaded_job
    beat = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    job.message, job.progress, job.heartbeat_at = "held", 0.5, beat
    job.trace_context = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    flush(session)
    assert not session.dirty  # its changes are held writes now, not the ORM's
    raw = session.connection().connection.driver_connection  # past the hooks that send held writes
    assert raw is not None
    assert raw.execute("SELECT message FROM jobs WHERE id = %s", (job.id,)).fetchone() != ("held",)
    session.commit()
    assert session.info["statements"] == 0  # with the COMMIT, in its pipeline
    stored = _stored(job.id)
    assert (stored.message, stored.progress, stored.heartbeat_at) == ("held", 0.5, beat)
    assert stored.trace_context == job.trace_context  # jsonb, as the ORM would have written it


def test_a_held_row_change_is_read_by_the_transactions_next_round_trip(
    loaded_job: tuple[Session, Job],
) -> None:
    session, job = loaded_job
    job.message = "seen"
    flush(session)
    [rows] = read_pipelined(session, [("SELECT message FROM jobs WHERE id = %(id)s", {"id": job.id})])
    assert rows == [{"message": "seen"}]
    job.message = "changed again"  # a later change: the commit holds it too
    session.commit()
    assert session.info["statements"] == 0
    assert _stored(job.id).message == "changed again"


def test_a_held_row_change_goes_with_a_rollback(loaded_job: tuple[Session, Job]) -> None:
    session, job = loaded_job
    before = job.message
    job.message = "dropped"
    flush(session)
    session.rollback()
    assert _stored(job.id).message == before
    assert job.message == before  # the rollback expired it: read again from Postgres


def test_flush_outside_a_holding_transaction_writes_at_once(tenant: TenantHandle) -> None:
    job_id = commit_job_without_enqueue(tenant.id, "speech", {"text": "Not held."})
    with Session(get_engine()) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.message = "now"
        flush(session)
        raw = session.connection().connection.driver_connection
        assert raw is not None
        assert raw.execute("SELECT message FROM jobs WHERE id = %s", (job_id,)).fetchone() == ("now",)
        session.rollback()


def test_read_and_commit_ends_the_transaction_in_the_same_round_trip(env: dict[str, str]) -> None:
    with session_scope() as session:
        run_pipelined(session, [("CREATE TABLE IF NOT EXISTS committed_read (n int PRIMARY KEY)", {})])
    try:
        with Session(get_engine()) as session:
            [rows] = read_and_commit(session, [("INSERT INTO committed_read VALUES (3) RETURNING n", {})])
            assert rows == [{"n": 3}]
            with session_scope() as other:  # committed before the session's own commit
                assert other.execute(text("SELECT array_agg(n) FROM committed_read")).scalar() == [3]
            session.commit()  # nothing left to send
            with pytest.raises(IntegrityError):  # a failure raises as SQLAlchemy raises it
                read_and_commit(session, [("INSERT INTO committed_read VALUES (3) RETURNING n", {})])
            session.rollback()
    finally:
        with session_scope() as session:
            run_pipelined(session, [("DROP TABLE committed_read", {})])


def test_a_pipeline_ends_in_a_sync_with_no_flush_after_it(env: dict[str, str], tmp_path: Path) -> None:
    """Behind PgBouncer (1.18) in transaction mode, a Flush sent after the Sync that ended the
    transaction takes a server connection that is never released (service.pg_pipeline)."""
    trace_path = tmp_path / "libpq.trace"
    with Session(get_engine()) as session, trace_path.open("w") as trace:
        raw = session.connection().connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        raw.pgconn.trace(trace.fileno())
        raw.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
        try:
            run_pipelined(session, [("SELECT 1", {})])  # no rows kept: the exit's Sync answers
            read_together(session, [(("SELECT 2", {}), lambda rows: None)])  # a Sync, then the exit's
            read_and_commit(session, [("SELECT 3", {})])  # the COMMIT's Sync ends the transaction
        finally:
            raw.pgconn.untrace()
    sent = [line.split("\t")[2] for line in trace_path.read_text().splitlines() if line.startswith("F\t")]
    assert sent.count("Sync") >= 3, sent
    assert "Flush" not in sent, sent


class _Base(DeclarativeBase):
    """A registry of its own: the test's table stays out of the schema's metadata."""


class _Touched(_Base):
    __tablename__ = "held_touched"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int]
    touched: Mapped[int] = mapped_column(onupdate=lambda: 7)


def test_a_row_with_an_onupdate_column_is_left_to_the_orms_flush(holding: Session) -> None:
    session = holding
    create = "CREATE TEMPORARY TABLE held_touched (id int PRIMARY KEY, n int, touched int)"
    run_pipelined(session, [(create, {}), ("INSERT INTO held_touched VALUES (1, 1, 0)", {})])
    row = session.get(_Touched, 1)
    assert row is not None
    row.n = 2
    flush(session)  # the ORM writes it, onupdate and all, at once: nothing held
    raw = session.connection().connection.driver_connection
    assert raw is not None
    assert raw.execute("SELECT n, touched FROM held_touched").fetchone() == (2, 7)
