"""Database access: the declarative base, one engine per app, one session per request, and
`unit_of_work`, the only place that commits."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import operator
import re
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import wraps
from typing import Any, Generic, TypeVar, cast

from flask import Flask, current_app, g
from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Engine,
    MetaData,
    Numeric,
    Select,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    insert,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction, sessionmaker
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import String, Text, TypeDecorator, TypeEngine
from ulid import ULID

from loyalty import clock
from loyalty.errors import InvalidFieldError, LedgerBusyError

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

T = TypeVar("T")
R = TypeVar("R")

# How long a SQLite writer waits for another writer before giving up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 10_000


class Base(DeclarativeBase):
    """Base of every model; constraint names follow `NAMING_CONVENTION`."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every database (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """An exact decimal of any size on every database: NUMERIC on PostgreSQL, text on SQLite
    (whose numbers keep 15 significant digits). Written from Python values: SQL arithmetic
    on it is exact on PostgreSQL only."""

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Text())
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | int | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return str(Decimal(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


# JSON documents: JSONB on PostgreSQL, JSON text elsewhere.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> dt.datetime:
    """The current time, timezone-aware, in UTC, from the app's clock (see `loyalty.clock`)."""
    return clock.now()


def dialect_insert(session: Session | str) -> Any:
    """The dialect's INSERT construct (PostgreSQL's or SQLite's), for ON CONFLICT clauses:
    of the session's database, or of the dialect named (to build a statement once)."""
    name = session if isinstance(session, str) else session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    return sqlite.insert


class RowVersion(ColumnElement[str]):
    """Which transaction wrote the row version a statement read (PostgreSQL's ``xmin``, as
    text; NULL elsewhere): read with a row, then given to a conditional write that must find
    the row as it was read (``WHERE <table>.xmin::text = :seen``)."""

    inherit_cache = True
    _traverse_internals = [("table_name", InternalTraversal.dp_string)]
    type = String()

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name


@compiles(RowVersion)
def _row_version(element: RowVersion, compiler: Any, **kw: Any) -> str:
    return "NULL"


@compiles(RowVersion, "postgresql")
def _row_version_postgresql(element: RowVersion, compiler: Any, **kw: Any) -> str:
    return f"{element.table_name}.xmin::text"


def insert_rows(session: Session, model: type[Any] | Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``model``'s table in the caller's
    transaction, reading nothing back: for batches of the job, where one statement per row
    would cost a round trip each. On PostgreSQL the rows are copied in (``COPY ... FROM
    STDIN``, the columns' bind processing applied in Python): a third of the server's CPU of
    an executemany, which runs the INSERT once per row, and a third of the driver's. COPY
    goes round SQLAlchemy's statement events. Elsewhere, one Core executemany."""
    if not rows:
        return
    bind = session.get_bind()
    table = model if isinstance(model, Table) else model.__table__
    if bind.dialect.name != "postgresql":
        session.execute(insert(table), rows)
        return
    keys = tuple(rows[0])
    statement, processors = _copy_of(table, keys, bind.dialect)
    # The columns' values in order, by one C call a row; the few columns with a bind
    # processor (timestamps, JSON) converted after, once per distinct timestamp object (a
    # batch's rows share their `now`).
    values = operator.itemgetter(*keys) if len(keys) > 1 else lambda row: (row[keys[0]],)
    processed = [(index, process) for index, process in enumerate(processors) if process]
    driver = session.connection().connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        if not processed:
            for row in rows:
                copy.write_row(values(row))
            return
        last: dict[int, tuple[Any, Any]] = {}
        for row in rows:
            line = list(values(row))
            for index, process in processed:
                value = line[index]
                if value is None:
                    continue
                seen = last.get(index)
                if seen is not None and seen[0] is value:
                    line[index] = seen[1]
                    continue
                line[index] = converted = process(value)
                if isinstance(value, dt.datetime):
                    last[index] = (value, converted)
            copy.write_row(line)


@functools.lru_cache(maxsize=64)
def _copy_of(
    table: Table, keys: tuple[str, ...], dialect: Dialect
) -> tuple[str, list[Callable[[Any], Any] | None]]:
    """The COPY statement for these columns of ``table`` and each column's bind processor."""
    columns = [table.c[key] for key in keys]
    names = ", ".join(dialect.identifier_preparer.quote(column.name) for column in columns)
    statement = f"COPY {dialect.identifier_preparer.format_table(table)} ({names}) FROM STDIN"
    return statement, [
        column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns
    ]


def keyset_page(
    session: Session,
    query: Select[Any],
    key: Any,
    limit: int,
    cursor: str | None,
    *,
    newest_first: bool = False,
    numeric: bool = False,
) -> Page[Any]:
    """One page of ``query`` (ordered by the unique column ``key``: ascending, or descending
    with ``newest_first``) after ``cursor``, the key of the last row of the page before.
    A ``numeric`` key's cursor must be an integer (`InvalidFieldError` otherwise)."""
    if cursor is not None:
        after: Any = cursor
        if numeric:
            if not (cursor.isdigit() and len(cursor) <= 18):
                raise InvalidFieldError("cursor", "Not a valid cursor.")
            after = int(cursor)
        query = query.where(key < after if newest_first else key > after)
    return fetch_page(session, query, limit, lambda row: str(getattr(row, key.key)))


def fetch_page(
    session: Session,
    query: Select[Any],
    limit: int,
    cursor_of: Callable[[Any], str] = lambda row: str(row.id),
) -> Page[Any]:
    """The first ``limit`` rows of ``query`` (already ordered and filtered past the cursor)
    and, when more follow, the cursor of the last one (``cursor_of(row)``, its id by
    default)."""
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=cursor_of(rows[-1]) if more else None)


M = TypeVar("M", bound="Base")


def settings_row(session: Session, model: type[M], *, lock: bool = False) -> M:
    """The programme's one row of a settings table (id 1, created by its migration), locked
    for this transaction (and read afresh) with ``lock``."""
    row = session.get(model, 1, with_for_update=True if lock else None, populate_existing=lock)
    if row is None:
        raise RuntimeError(f"The {model.__tablename__} row is missing: run `loyalty db upgrade`.")
    return row


def locked_row(session: Session, model: type[M], key: Any, missing: Exception) -> M:
    """The row of ``model`` with primary key ``key``, locked for this transaction and read
    afresh; raises ``missing`` (a not-found error) when there is none."""
    row = session.get(model, key, with_for_update=True, populate_existing=True)
    if row is None:
        raise missing
    return row


# session.info keys whose values hold only for the transaction that set them.
_TRANSACTION_SCOPED: set[str] = set()


def transaction_scoped(key: str) -> str:
    """Declare ``key`` of ``session.info`` as what this transaction knows (locks it holds,
    rows it found missing): forgotten when the transaction ends, and on any rollback (one to
    a savepoint undoes what was learnt since). Returns the key."""
    _TRANSACTION_SCOPED.add(key)
    return key


def _forget_transaction_scoped(session: Session) -> None:
    for key in _TRANSACTION_SCOPED:
        session.info.pop(key, None)


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        _forget_transaction_scoped(session)
        session.info.pop(_BEFORE_COMMIT, None)  # run at its commit, or dropped with it


# session.info: each savepoint of the transaction (kept until the next transaction, so no
# other transaction is taken for it) -> how much `after_commit` and `before_commit` work was
# queued before it began.
_SAVEPOINT_QUEUES = "loyalty_savepoint_queues"


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    _forget_transaction_scoped(session)
    # Work queued inside a savepoint that rolled back is dropped with it.
    queued = session.info.get(_SAVEPOINT_QUEUES, {}).pop(previous, None)
    if queued is not None:
        for key, length in zip((_AFTER_COMMIT, _BEFORE_COMMIT), queued, strict=True):
            del session.info.get(key, [])[length:]


@event.listens_for(Session, "after_transaction_create")
def _transaction_created(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        queues = session.info.setdefault(_SAVEPOINT_QUEUES, {})
        queues[transaction] = tuple(
            len(session.info.get(key, [])) for key in (_AFTER_COMMIT, _BEFORE_COMMIT)
        )
    elif transaction.parent is None:
        session.info.pop(_SAVEPOINT_QUEUES, None)


@event.listens_for(Session, "before_commit")
def _committing(session: Session) -> None:
    """Run the `before_commit` work when the transaction itself commits (not a savepoint),
    after the session's pending changes are written: the work's locks are then held for no
    more than the commit."""
    if session.in_nested_transaction() or not session.info.get(_BEFORE_COMMIT):
        return
    session.flush()
    while queue := session.info.pop(_BEFORE_COMMIT, None):
        for work in queue:
            work(session)


def one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK that ``column`` holds one of ``values``."""
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def among(session: Session, column: Any, values: Collection[Any]) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:values)``: one array parameter
    whatever the number of values, where an IN list of a job batch's thousand ids is a
    thousand parameters to compile, convert and send, and a new statement for each count."""
    if session.get_bind().dialect.name == "postgresql":
        array = bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        return cast(ColumnElement[bool], column == any_(array))
    return cast(ColumnElement[bool], column.in_(values))


def new_id(prefix: str) -> str:
    """A new opaque, time-ordered identifier such as ``mem_01JD3...``."""
    return f"{prefix}_{ULID()}"


def make_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int = 10,
    lock_timeout_ms: int = 5000,
    pre_ping: bool = False,
) -> Engine:
    """Create an engine configured for safe concurrent use on PostgreSQL and SQLite.

    On PostgreSQL every connection bounds lock waits with ``lock_timeout``. Statements'
    parameters (client data, secrets among them) are kept out of logs and error messages.
    Pooled connections are not pinged before each use (a round trip per request) unless
    ``pre_ping``: a connection the server dropped fails its first statement, the pool then
    replaces every connection older than that, and `retrying` runs the work again.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            echo=echo,
            hide_parameters=True,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url,
        echo=echo,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        connect_args={"options": f"-c lock_timeout={lock_timeout_ms}"},
    )


def _configure_sqlite(engine: Engine) -> None:
    """Foreign keys on, WAL, a busy timeout, and writers serialised with ``BEGIN IMMEDIATE``.

    sqlite3's own transaction handling is switched off so that SQLAlchemy emits BEGIN itself:
    a unit of work asks for ``BEGIN IMMEDIATE`` and so takes the write lock before it reads,
    which is what makes "lock, read, write" safe with several processes on one file.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("loyalty_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, and the key of its last item when more follow."""

    items: list[T]
    next_cursor: str | None


class Database:
    """The app's engine and session factory, kept in ``app.extensions["loyalty.db"]``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessionmaker: sessionmaker[Session] = sessionmaker(bind=engine, expire_on_commit=False)


def init_app(app: Flask) -> Database:
    """Create the app's engine and close the request session at the end of each request."""
    database = Database(
        make_engine(
            app.config["DATABASE_URL"],
            echo=app.config["DATABASE_ECHO"],
            pool_size=app.config["DATABASE_POOL_SIZE"],
            lock_timeout_ms=app.config["LOCK_TIMEOUT_MS"],
            pre_ping=app.config["DATABASE_PRE_PING"],
        )
    )
    app.extensions["loyalty.db"] = database
    app.teardown_appcontext(_close_session)
    return database


def get_database(app: Flask | None = None) -> Database:
    """The `Database` of the given app, or of the current one."""
    database: Database = (app or current_app).extensions["loyalty.db"]
    return database


def get_session() -> Session:
    """The session of the current request (or app context), created on first use."""
    session: Session | None = g.get("_loyalty_session")
    if session is None:
        session = get_database().sessionmaker()
        g._loyalty_session = session
    return session


def _close_session(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("_loyalty_session", None)
    if session is not None:
        session.close()


_OUTER = "loyalty_request_transaction"
_AFTER_COMMIT = "loyalty_after_commit"
_BEFORE_COMMIT = "loyalty_before_commit"
# Transactions that fail on a deadlock or a serialization conflict are run again this often.
RETRIES = 3
_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_BUSY_SQLSTATES = {"55P03"}  # lock_not_available: lock_timeout ran out


def _begin_write(session: Session) -> None:
    # A session that lives across units of work (the job's, a CLI's) must not act on rows
    # cached before another transaction changed them.
    session.expire_all()
    if session.in_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("a write transaction was begun with uncommitted changes pending")
        if session.get_bind().dialect.name != "sqlite":
            # READ COMMITTED reads each statement afresh: the open transaction will do, and
            # carrying on saves a ROLLBACK and a BEGIN.
            return
        session.rollback()  # SQLite must take the write lock first: BEGIN IMMEDIATE
    session.connection(execution_options={"loyalty_write": True})


@contextmanager
def unit_of_work(session: Session) -> Iterator[Session]:
    """Run the body as one transaction: commit when it ends, roll back on any exception.

    A read-only transaction left open by earlier reads (authentication, say) is carried on with
    on PostgreSQL; on SQLite it is ended first so that the unit of work starts its own with
    ``BEGIN IMMEDIATE``. Inside a
    `request_transaction` the unit of work is a savepoint of the request's transaction.
    Work queued with `after_commit` runs once the outermost transaction has committed.
    """
    if session.info.get(_OUTER):
        queued = len(session.info.get(_AFTER_COMMIT, []))
        try:
            with session.begin_nested():
                yield session
        except BaseException:
            del session.info.get(_AFTER_COMMIT, [])[queued:]
            raise
        return
    _begin_write(session)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        session.info.pop(_AFTER_COMMIT, None)
        raise
    _run_after_commit(session)


@contextmanager
def request_transaction(session: Session) -> Iterator[Session]:
    """One transaction around a whole request, for work that must commit together with the
    request's effect (an idempotency key and its stored response)."""
    _begin_write(session)
    session.info[_OUTER] = True
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        session.info.pop(_AFTER_COMMIT, None)
        raise
    finally:
        session.info.pop(_OUTER, None)
    _run_after_commit(session)


def after_commit(session: Session, work: Callable[[Session], Any]) -> None:
    """Run ``work(session)`` once the current transaction has committed, as a unit of work
    of its own; nothing runs if it rolls back. For effects that must take locks of their
    own in the global order (another member's wallet), or that may wait without holding
    this transaction's locks. A follow-up that finds the database busy is left to the job
    (`loyalty jobs run` finds such work again); any other error propagates."""
    session.info.setdefault(_AFTER_COMMIT, []).append(work)


def before_commit(session: Session, work: Callable[[Session], Any]) -> None:
    """Run ``work(session)`` in the current transaction just before it commits, after
    everything else it wrote (the outermost transaction: a unit of work inside a request's
    runs at the request's commit); nothing runs if it rolls back. For a write that takes a
    row lock other transactions queue for (a campaign's budget), so that the lock is held for
    the commit only. The work may raise `RunAgainError`."""
    if not session.in_transaction():
        raise RuntimeError("before_commit outside a transaction: no commit to run it at")
    session.info.setdefault(_BEFORE_COMMIT, []).append(work)


class RunAgainError(Exception):
    """What the transaction decided no longer holds at its commit (a budget it priced with
    was spent meanwhile): it is rolled back, and `retrying` (or a request with an
    Idempotency-Key) runs it again, having learnt to take the locks first."""


def _run_after_commit(session: Session) -> None:
    while queue := session.info.pop(_AFTER_COMMIT, None):
        for work in queue:
            try:
                work(session)
            except (LedgerBusyError, OperationalError):
                log.warning("follow-up work deferred to the job: the database is busy")
                if session.in_transaction():
                    session.rollback()


def in_request_transaction(session: Session) -> bool:
    return bool(session.info.get(_OUTER))


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a database error (PostgreSQL), if any."""
    return getattr(getattr(error, "orig", None), "sqlstate", None)


def is_retryable(error: OperationalError) -> bool:
    return sqlstate(error) in _RETRYABLE_SQLSTATES


def is_busy(error: OperationalError) -> bool:
    """A lock wait that ran out: lock_timeout on PostgreSQL, the busy timeout on SQLite."""
    return sqlstate(error) in _BUSY_SQLSTATES or "database is locked" in str(error.orig)


# Foreign keys from rows that an operation writes to configuration rows an administrator
# may delete meanwhile (a badge never awarded): the operation read the configuration before
# the deletion committed, and its insert's key check waited for that commit. Run again, it
# reads the configuration without the deleted row. Registered by the areas (`retry_when_gone`).
_CONFIGURATION_KEYS: set[str] = set()


def retry_when_gone(*constraint_names: str) -> None:
    """Declare foreign keys whose violation means that the configuration row they name was
    deleted while the transaction ran: `retrying` (and a request with an Idempotency-Key)
    runs it again."""
    _CONFIGURATION_KEYS.update(constraint_names)


def configuration_gone(error: IntegrityError) -> bool:
    """Whether ``error`` is the violation of a foreign key declared with `retry_when_gone`."""
    return sqlstate(error) == "23503" and constraint_name(error) in _CONFIGURATION_KEYS


def retrying(func: Callable[..., R]) -> Callable[..., R]:
    """Run a service function again when its transaction hit a deadlock or serialization
    failure, or a configuration row deleted meanwhile (`retry_when_gone`), and answer
    `LedgerBusyError` (503) when it keeps failing or waited too long for a lock. Inside a
    request transaction the request is retried as a whole instead."""

    @wraps(func)
    def wrapper(session: Session, *args: Any, **kwargs: Any) -> R:
        if in_request_transaction(session):
            return func(session, *args, **kwargs)
        for attempt in range(RETRIES):
            try:
                return func(session, *args, **kwargs)
            except RunAgainError as error:
                if attempt == RETRIES - 1:
                    raise LedgerBusyError() from error
            except IntegrityError as error:
                if not configuration_gone(error) or attempt == RETRIES - 1:
                    raise
            except OperationalError as error:
                if is_busy(error):
                    raise LedgerBusyError() from error
                if error.connection_invalidated and attempt < RETRIES - 1:
                    continue  # the server dropped the connection: again, on a fresh one
                if not is_retryable(error) or attempt == RETRIES - 1:
                    if is_retryable(error):
                        raise LedgerBusyError() from error
                    raise
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    return wrapper


def constraint_name(error: IntegrityError) -> str | None:
    """The violated constraint's name, from psycopg's diagnostics or SQLite's message."""
    diag = getattr(error.orig, "diag", None)
    if diag is not None and getattr(diag, "constraint_name", None):
        return str(diag.constraint_name)
    match = re.search(r"UNIQUE constraint failed: (.+)$", str(error.orig))
    if match:
        # SQLite names columns, not constraints: rebuild the conventional name.
        qualified = [part.strip().split(".") for part in match.group(1).split(",")]
        return "uq_" + qualified[0][0] + "_" + "_".join(column for _, column in qualified)
    return None
