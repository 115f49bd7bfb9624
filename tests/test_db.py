"""after_commit: callbacks run once the outermost transaction commits, never for rolled-back work;
the pool keeps what a burst opened; run_pipelined: statements sent together, in the session's
transaction, failing as SQLAlchemy fails; read_together: reads sent together, each handed its rows;
enter_tenant: its settings reach Postgres before any statement of the transaction, in the same round
trip as the first pipelined ones; write_with_next: writes a deferring transaction holds go with its
next round trip, in order, and never outlive a rollback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, text

from service.db import (
    TENANT_ROLE,
    after_commit,
    defer_writes,
    enter_tenant,
    get_engine,
    make_engine,
    read_pipelined,
    read_together,
    run_pipelined,
    session_scope,
    write_with_next,
)
from service.settings import get_settings


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


def test_a_savepoint_is_refused_while_writes_are_held(holding: Session) -> None:
    session = holding
    write_with_next(session, (HELD, {"n": 1}))
    with pytest.raises(RuntimeError, match="savepoint"):
        session.begin_nested()
    session.rollback()
    defer_writes(session)
    _held_table(session)
    with session.begin_nested():  # nothing held: allowed, and a write in it is not held
        write_with_next(session, (HELD, {"n": 5}))
        assert _sent(session) == [5]
