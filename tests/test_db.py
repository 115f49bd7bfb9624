"""after_commit: callbacks run once the outermost transaction commits, never for rolled-back work."""

from __future__ import annotations

from sqlmodel import Session, text

from service.db import after_commit, get_engine


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
