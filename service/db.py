"""Database engine and sessions. Only the request and the task wrapper commit."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, LiteralString, cast

import psycopg
from psycopg.rows import RowFactory, dict_row, tuple_row
from sqlalchemy import Connection, Engine, bindparam, event, inspect, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError, StatementError
from sqlalchemy.orm import ColumnProperty, InstanceState, Mapper, SessionTransaction
from sqlalchemy.orm import Session as SASession
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, create_engine

from observability.tracing import pipeline_span
from service import pg_pipeline
from service.loop_io import LoopFriendlyPool, LoopWaitingConnection
from service.outages import log_failure
from service.settings import get_settings

log = logging.getLogger(__name__)

AFTER_COMMIT = "after_commit_callbacks"


def sqlalchemy_url(url: str) -> str:
    """Make a plain ``postgresql://`` URL use the psycopg 3 driver."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


IDLE_PING_SECONDS = 5.0
"""A pooled connection idle longer than this is pinged before use (a restarted Postgres closed it)."""
IDLE_SINCE = "idle_since"


def make_engine(url: str, *, prepared_statements: bool = True, pool_size: int = 15) -> Engine:
    """A pooled engine; forked children (work horses) never reuse the parent's connections.

    Pessimistic disconnect handling without a round trip per checkout: a connection used moments
    ago is live (one that died since fails its statement, which invalidates the pool), one that sat
    idle for IDLE_PING_SECONDS is pinged first and replaced when the ping fails.

    Works through a transaction pooler (PgBouncer ``pool_mode = transaction``): every setting a
    transaction makes is local to it (``set_config(..., true)``) and nothing takes a session-level
    lock. Without `prepared_statements`, psycopg prepares no named statements (a pooler hands the
    next transaction another server connection, which never saw them; PgBouncer before 1.21 cannot
    carry them at all); with them, statements run often are prepared once per connection.

    The pool keeps up to `pool_size` connections and opens no others: with a smaller pool plus
    overflow, each burst past the pool opened connections and closed them again, a new Postgres
    backend for a third of the requests under load. Last used, first reused: the connections a
    light load needs stay warm (no ping), the rest idle."""
    connect_args = {} if prepared_statements else {"prepare_threshold": None}
    engine = create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_use_lifo=True,
        poolclass=LoopFriendlyPool,
        connect_args=connect_args,
    )

    def ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.get(IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError("an idle pooled connection failed its ping") from error

    def note_idle(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[IDLE_SINCE] = time.monotonic()

    def connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> LoopWaitingConnection:
        return LoopWaitingConnection.connect(*cargs, **cparams)

    event.listen(engine, "do_connect", connect)
    event.listen(engine, "checkout", ping_if_idle)
    event.listen(engine, "checkin", note_idle)
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    return engine


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process-wide engine for DATABASE_URL."""
    settings = get_settings()
    return make_engine(
        settings.required_url("database_url"),
        prepared_statements=settings.use_prepared_statements,
        pool_size=settings.database_pool_size,
    )


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A unit of work: commits when the block succeeds, rolls back when it raises."""
    with Session(engine or get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


Statement = tuple[LiteralString, Mapping[str, Any]]
"""Plain SQL in psycopg's placeholder style (``%(name)s``) and its parameters."""


def run_pipelined(session: Session, statements: Sequence[Statement]) -> None:
    """Run statements whose results nobody reads (settings, inserts) on the session's connection, in
    order, in one round trip to Postgres (psycopg's pipeline mode): with the transaction's BEGIN when
    they are its first. Each statement through SQLAlchemy waits for its own answer, BEGIN too.

    Not flushed first: pending ORM objects reach Postgres later. An error is raised as SQLAlchemy
    raises it (IntegrityError...), and a lost connection leaves the pool as it would."""
    _pipelined(session, statements)


def write_with_next(session: Session, *statements: Statement) -> None:
    """Writes nobody reads the result of, sent along with the transaction's next round trip to
    Postgres when it defers writes (defer_writes): the next run_pipelined, read_pipelined or
    read_together, else just before any other statement or the commit (after the ORM's flush), in
    the order written. Otherwise they are sent now, after the ORM's flush (as a statement through the
    session would be), in a round trip of their own."""
    deferred = _deferred(session)
    if deferred is None:
        session.flush()
        run_pipelined(session, statements)
    else:
        deferred.extend(statements)


def defer_writes(session: Session) -> None:
    """Until the session's transaction ends, write_with_next holds writes for the next round trip:
    for transactions that write several rows nobody reads back (a job's creation or transition and
    its webhook events). A savepoint opened meanwhile begins after the writes held so far, and its
    own writes are sent as they come. Asked again in the same transaction, it keeps what is held."""
    transaction = session.get_transaction() or session.begin()
    held: tuple[SessionTransaction, list[Statement]] | None = session.info.get(_DEFERRED)
    if held is None or held[0] is not transaction:
        session.info[_DEFERRED] = (transaction, [])


def flush(session: Session) -> None:
    """The ORM's pending changes to Postgres now; in a transaction that holds writes (defer_writes),
    the changed columns of rows it loaded join the held writes instead, to go with its next round
    trip (_row_updates), and only the rest (new and deleted rows) is flushed now."""
    held = _deferred(session)
    if held is not None:
        held += _row_updates(session)
    session.flush()


_DEFERRED = "deferred_writes"


def _deferred(session: SASession) -> list[Statement] | None:
    """This transaction's held writes, when it defers them and no savepoint is open."""
    held: tuple[SessionTransaction, list[Statement]] | None = session.info.get(_DEFERRED)
    if held is None or held[0] is not session.get_transaction() or session.in_nested_transaction():
        return None
    return held[1]


def _take_deferred(session: SASession) -> list[Statement]:
    held = _deferred(session)
    if not held:
        return []
    writes = list(held)
    held.clear()
    return writes


@event.listens_for(SASession, "do_orm_execute")
def _send_deferred_first(state: Any) -> None:
    """A statement runs after the writes held before it."""
    if _deferred(state.session):
        _pipelined(state.session, [])


_COMMIT: Statement = ("COMMIT", {})


@event.listens_for(SASession, "before_commit")
def _send_deferred_with_commit(session: SASession) -> None:
    """Held writes go with the COMMIT, in one round trip after what is left of the ORM's flush: the
    changed columns of rows the transaction loaded join the held writes first (_row_updates), so a
    transition's own row goes in that round trip too. The commit SQLAlchemy then asks of psycopg finds
    the transaction ended and sends nothing (psycopg commits only a connection inside a transaction).
    A COMMIT that fails raises here, and the session rolls back."""
    held = _deferred(session)
    if held is None:
        return
    held += _row_updates(session)
    if not held:
        return
    session.flush()
    _pipelined(cast(Session, session), [_COMMIT])


def _row_updates(session: SASession) -> list[Statement]:
    """An UPDATE by primary key of each loaded row's changed columns, those changes then marked
    written (the ORM's flush would send each row in a round trip of its own, to check its row count;
    a held write's row is locked by the transaction that changes it). A row whose change the ORM must
    write itself (a key, a relationship, a version counter, several tables) is left to the flush."""
    updates: list[Statement] = []
    dialect = session.get_bind().dialect
    for instance in session.dirty:
        state = inspect(instance)
        changes = _column_changes(state)
        if not changes:
            continue
        mapper = state.mapper
        sql, processors = _update_sql(mapper, tuple(changes), dialect)
        parameters = {f"key_{i}": value for i, value in enumerate(state.identity or ())}
        for (name, process), value in zip(processors, changes.values(), strict=True):
            parameters[name] = value if process is None or value is None else process(value)
        updates.append((sql, parameters))
        # Written, as far as the ORM knows: what its flush does to a row it wrote (no public API).
        state._commit_all(state.dict, session.identity_map)
    return updates


def _column_changes(state: InstanceState[Any]) -> dict[str, Any] | None:
    """The row's changed column attributes and their new values; None when the ORM must write it."""
    mapper = state.mapper
    if state.identity is None or not _plain_table(mapper):
        return None
    changes: dict[str, Any] = {}
    for key in state.committed_state:
        attribute = mapper.attrs.get(key)
        if not isinstance(attribute, ColumnProperty) or len(attribute.columns) != 1:
            return None
        if attribute.columns[0].primary_key:
            return None
        if state.attrs[key].history.has_changes():
            changes[key] = state.dict[key]
    return changes


@lru_cache(maxsize=256)
def _plain_table(mapper: Mapper[Any]) -> bool:
    """Whether an UPDATE of the changed columns is all the ORM would send for a row of this mapper:
    one table, no version counter, no column the ORM or Postgres fills on update (onupdate)."""
    if mapper.version_id_col is not None or len(mapper.tables) != 1:
        return False
    return not any(
        column.onupdate is not None or column.server_onupdate is not None for column in mapper.local_table.c
    )


@lru_cache(maxsize=256)
def _update_sql(
    mapper: Mapper[Any], keys: tuple[str, ...], dialect: Dialect
) -> tuple[LiteralString, list[tuple[str, Callable[[Any], Any] | None]]]:
    """UPDATE of these columns by primary key, as SQLAlchemy compiles it for this dialect, and each
    value's parameter name with the conversion the column's type asks for (JSON...)."""
    columns = [mapper.attrs[key].columns[0] for key in keys]
    names = [f"set_{i}" for i in range(len(columns))]
    keyed = [column == bindparam(f"key_{i}") for i, column in enumerate(mapper.primary_key)]
    values = {column: bindparam(name, type_=column.type) for column, name in zip(columns, names, strict=True)}
    compiled = update(mapper.class_).where(*keyed).values(values).compile(dialect=dialect)
    processors = [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns]
    sql: LiteralString = compiled.string  # SQLAlchemy's own, from the model's table: no outside text
    return sql, list(zip(names, processors, strict=True))


@event.listens_for(SASession, "after_transaction_create")
def _send_held_before_savepoint(session: SASession, transaction: SessionTransaction) -> None:
    """A savepoint begins after the writes held before it, so rolling back to it keeps them: they are
    sent now, on the transaction's connection (SQLAlchemy sends the SAVEPOINT with the savepoint's
    first statement, after these). Inside it, writes are sent as they come."""
    held: tuple[SessionTransaction, list[Statement]] | None = session.info.get(_DEFERRED)
    if not transaction.nested or held is None or not held[1] or held[0] is not session.get_transaction():
        return
    writes = list(held[1])
    held[1].clear()
    _pipelined(cast(Session, session), writes, connection=held[0].connection(None))


@event.listens_for(SASession, "after_transaction_end")
def _drop_deferred(session: SASession, transaction: SessionTransaction) -> None:
    """A transaction that ends with writes still held rolled back: they go with it."""
    held: tuple[SessionTransaction, list[Statement]] | None = session.info.get(_DEFERRED)
    if held is not None and held[0] is transaction:
        del session.info[_DEFERRED]


PendingRead = tuple[Statement, Callable[[list[tuple[Any, ...]]], None]]
"""A read to run along others: its statement, and what takes its rows."""


def read_together(session: Session, reads: Sequence[PendingRead]) -> None:
    """Run the reads' statements as run_pipelined runs statements, in one round trip, and hand each
    its rows."""
    found = _pipelined(session, [statement for statement, _ in reads], tuple_row)
    for (_, keep), rows in zip(reads, found, strict=True):
        keep(rows)


def read_pipelined(session: Session, statements: Sequence[Statement]) -> list[list[dict[str, Any]]]:
    """run_pipelined, keeping each statement's rows (as dicts of column to value), in order.

    Postgres runs the statements one after another in the transaction, each with a snapshot taken
    when it starts: a row one of them locks (or waits for) is read as committed by the ones after."""
    return cast(list[list[dict[str, Any]]], _pipelined(session, statements, dict_row))


def read_and_commit(session: Session, statements: Sequence[Statement]) -> list[list[dict[str, Any]]]:
    """read_pipelined for a transaction that is only these statements: its COMMIT goes in the same
    round trip (then the session's commit finds the transaction ended and sends nothing)."""
    return read_pipelined(session, [*statements, _COMMIT])[:-1]


def _pipelined(
    session: Session,
    statements: Sequence[Statement],
    row_factory: RowFactory[Any] | None = None,
    *,
    connection: Connection | None = None,
) -> list[list[Any]]:
    """The statements in one round trip, after the transaction's settings if they are still to be sent;
    with a row factory, each statement's rows (none for a statement that returns no rows). On the
    session's connection, or the given one (its transaction's, before a savepoint begins)."""
    settings: list[Statement] = session.info.pop(_WAITING_SETTINGS, [])  # taken before the transaction begins
    connection = session.connection() if connection is None else connection
    writes = _take_deferred(session)
    raw = connection.connection.driver_connection
    assert isinstance(raw, psycopg.Connection), "Postgres through psycopg 3"
    rows: list[list[Any]] = []
    sent = (sql for sql, _ in itertools.chain(settings, writes, statements))
    try:
        with pipeline_span(connection.engine, sent), pg_pipeline.pipeline(raw) as pipeline:
            with pipeline.batched(), raw.cursor() as cursor:
                for sql, parameters in itertools.chain(settings, writes):
                    cursor.execute(sql, parameters)
                if row_factory is None:
                    for sql, parameters in statements:
                        cursor.execute(sql, parameters)
            if row_factory is None:
                return rows
            cursors = [raw.cursor(row_factory=row_factory) for _ in statements]
            try:
                with pipeline.batched():
                    for cursor, (sql, parameters) in zip(cursors, statements, strict=True):
                        cursor.execute(sql, parameters)
                pipeline.sync()
                rows = [cursor.fetchall() if _has_rows(cursor) else [] for cursor in cursors]
            finally:
                for cursor in cursors:
                    cursor.close()
    except psycopg.Error as error:
        raise _as_sqlalchemy_error(connection, statements, error) from error
    return rows


def _has_rows(cursor: psycopg.Cursor[Any]) -> bool:
    """Whether the cursor's statement returned rows (a SELECT, a RETURNING; not a plain INSERT or a
    COMMIT): its result's status, where `description` would build a column object per column."""
    result = cursor.pgresult
    return result is not None and result.status == psycopg.pq.ExecStatus.TUPLES_OK


def _as_sqlalchemy_error(
    connection: Connection, statements: Sequence[Statement], error: psycopg.Error
) -> StatementError:
    """The error SQLAlchemy would have raised (IntegrityError...); a lost connection leaves the pool."""
    lost = connection.dialect.is_disconnect(cast(Any, error), connection.connection, None)
    if lost:
        connection.invalidate(error)
    sql = "; ".join(statement for statement, _ in statements)
    parameters = statements[0][1] if len(statements) == 1 else {}
    return DBAPIError.instance(sql, parameters, error, psycopg.Error, connection_invalidated=lost)


_STATEMENT_TIMEOUT: LiteralString = "SELECT set_config('statement_timeout', %(milliseconds)s, true)"


@contextmanager
def bounded_session_scope(timeout_seconds: float) -> Iterator[Session]:
    """A unit of work whose statements give up after timeout_seconds: for reads that must not hang
    their caller (the gauges a metrics scrape reads)."""
    with session_scope() as session:
        run_pipelined(session, [(_STATEMENT_TIMEOUT, {"milliseconds": str(int(timeout_seconds * 1000))})])
        yield session


TENANT_ROLE = "claimcheck_tenant"
"""The role tenant-facing transactions take: Postgres row-level security applies to it (migration 0006)."""

_ENTER_TENANT: LiteralString = (
    "SELECT set_config('app.tenant_id', %(tenant_id)s, true), set_config('role', %(role)s, true)"
)


_WAITING_SETTINGS = "waiting_settings"
_NO_WAIT_FOR_DISK: Statement = ("SELECT set_config('synchronous_commit', 'off', true)", {})


def set_for_transaction(session: Session, settings: Statement) -> None:
    """Run transaction-local settings (``set_config(..., true)``) for the rest of the session's
    transaction. In a session whose transaction has not begun, they wait for its first statements:
    run_pipelined and read_together send them first in their own round trip, with BEGIN; any other
    first statement has them run just before it, as the transaction begins (_run_waiting_settings).
    Nothing runs in that transaction without them."""
    if session.in_transaction():
        run_pipelined(session, [settings])
    else:
        session.info.setdefault(_WAITING_SETTINGS, []).append(settings)


def enter_tenant(session: Session, tenant_id: str) -> None:
    """For the rest of the session's transaction, act as the tenant: row-level security shows only
    its rows, whatever a query forgets to filter. Both settings end with the transaction."""
    set_for_transaction(session, (_ENTER_TENANT, {"tenant_id": tenant_id, "role": TENANT_ROLE}))


def commit_without_disk_wait(session: Session) -> None:
    """The session's transaction commits without waiting for its WAL to reach the disk
    (synchronous_commit off, for it alone): for writes a Postgres crash may undo at no loss, as
    those whose undoing only means redoing them. Postgres stays consistent, and a later commit that
    does wait flushes it too. A transaction-local setting, so it works through PgBouncer's
    transaction pooling, where a connection's startup options do not."""
    set_for_transaction(session, _NO_WAIT_FOR_DISK)


@event.listens_for(SASession, "after_begin")
def _run_waiting_settings(session: SASession, _transaction: SessionTransaction, connection: Any) -> None:
    """The settings set_for_transaction left for the transaction, run on its connection before its
    first statement (unless run_pipelined or read_together took them to send along)."""
    for settings in session.info.pop(_WAITING_SETTINGS, []):
        connection.exec_driver_sql(*settings)


@contextmanager
def tenant_session_scope(tenant_id: str) -> Iterator[Session]:
    """A unit of work confined to one tenant's rows (row-level security)."""
    with session_scope() as session:
        enter_tenant(session, tenant_id)
        yield session


def transaction_memo(session: Session, key: str) -> dict[Any, Any]:
    """A dict that lives as long as the session's transaction (begun here if need be, its connection
    still to come), kept under `key`: what the transaction reads once and reuses."""
    transaction = session.get_transaction() or session.begin()
    memo: tuple[SessionTransaction, dict[Any, Any]] | None = session.info.get(key)
    if memo is None or memo[0] is not transaction:
        memo = (transaction, {})
        session.info[key] = memo
    return memo[1]


def after_commit(session: Session, callback: Callable[[], object], *, once: object = None) -> None:
    """Run callback once the session's outermost transaction commits.

    Dropped if the transaction it was registered in (a savepoint or the outer one) rolls back. With
    `once`, a key: a second callback with the same key in the same transaction is not added.
    """
    registered_in = session.get_nested_transaction() or session.get_transaction()
    pending = session.info.setdefault(AFTER_COMMIT, [])
    if once is not None and any(tx is registered_in and key == once for tx, key, _ in pending):
        return
    pending.append((registered_in, once, callback))


@event.listens_for(SASession, "after_commit")
def _run_after_commit(session: SASession) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released; its callbacks wait for the outer commit
    for _, _, callback in session.info.pop(AFTER_COMMIT, []):
        try:
            callback()
        except Exception:
            # The scheduler's sweep redoes whatever a lost callback should have done.
            log_failure(log, "after-commit callback failed; the sweep will catch up")


@event.listens_for(SASession, "after_soft_rollback")
def _drop_after_commit(session: SASession, rolled_back: SessionTransaction) -> None:
    def inside(transaction: SessionTransaction | None) -> bool:
        while transaction is not None:
            if transaction is rolled_back:
                return True
            transaction = transaction.parent
        return False

    pending = session.info.get(AFTER_COMMIT, [])
    session.info[AFTER_COMMIT] = [entry for entry in pending if not inside(entry[0])]
