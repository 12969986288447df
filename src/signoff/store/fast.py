"""The hot writes and look-ups of the request path, as SQL prepared once per dialect and
sent straight to the DB-API cursor of the session's connection (in its transaction).

A Core ``conn.execute(insert(table), values)`` costs ~50–80 µs of Python per statement
(cache key, compiled-cache look-up, parameter processing, result set-up) against ~10 µs
for the same INSERT through the driver; a submission makes about ten of them. The SQL here
is SQLAlchemy's own (each statement compiled once for the engine's dialect), and every
value goes through its column type's bind processor for that dialect (JSON with the store's
serializer, UTC datetimes as the store keeps them, booleans), so the rows written are
exactly those Core writes. Nothing here reads ORM objects or bypasses the transaction.

Use it only for statements that need no ORM bookkeeping: INSERTs of rows the session does
not hold as objects, and reads of a few plain columns (text and integers, which no result
processor changes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, Self

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

_cache: dict[tuple, _Prepared] = {}
_lock = threading.Lock()
_HELD = "signoff.fast.conn"  # session.info: (its transaction or savepoint, dialect, DB-API and SA connection)


class _Prepared:
    """One statement compiled for one dialect: its SQL, the order of its parameters (for a
    positional paramstyle) and each parameter's bind processor."""

    __slots__ = ("keys", "positional", "procs", "sql")

    def __init__(self, sql: str, keys: Sequence[str], positional: bool, procs: dict[str, Any]):
        self.sql = sql
        self.keys = tuple(keys)
        self.positional = positional
        self.procs = procs

    def params(self, values: dict[str, Any]) -> tuple | dict:
        procs = self.procs
        if self.positional:
            out = []
            for k in self.keys:
                v = values.get(k)
                p = procs.get(k)
                out.append(v if p is None else p(v))
            return tuple(out)
        d = {}
        for k in self.keys:
            v = values.get(k)
            p = procs.get(k)
            d[k] = v if p is None else p(v)
        return d


def _processors(dialect: Dialect, table: Table, keys: Iterable[str]) -> dict[str, Any]:
    procs = {}
    for k in keys:
        proc = table.c[k].type.dialect_impl(dialect).bind_processor(dialect)
        if proc is not None:
            procs[k] = proc
    return procs


def _compiled(dialect: Dialect, stmt, keys: Sequence[str], table: Table) -> _Prepared:
    compiled = stmt.compile(dialect=dialect)
    order = list(compiled.positiontup or ()) if dialect.positional else list(keys)
    return _Prepared(compiled.string, order, dialect.positional, _processors(dialect, table, keys))


def _insert(dialect: Dialect, table: Table, keys: tuple[str, ...], returning: str | None) -> _Prepared:
    key = ("insert", dialect.name, table.name, keys, returning)
    prepared = _cache.get(key)
    if prepared is None:
        stmt = insert(table).values({k: bindparam(k) for k in keys})
        if returning:
            stmt = stmt.returning(table.c[returning])
        prepared = _compiled(dialect, stmt, keys, table)
        with _lock:
            _cache[key] = prepared
    return prepared


def _select(dialect: Dialect, table: Table, columns: tuple[str, ...], where: tuple[str, ...]) -> _Prepared:
    key = ("select", dialect.name, table.name, columns, where)
    prepared = _cache.get(key)
    if prepared is None:
        stmt = select(*(table.c[c] for c in columns)).where(*(table.c[w] == bindparam(w) for w in where))
        prepared = _compiled(dialect, stmt, where, table)
        with _lock:
            _cache[key] = prepared
    return prepared


class _Cursor:
    """The DB-API cursor of the session's connection; driver errors come out as SQLAlchemy's
    (``IntegrityError``, ``OperationalError`` …), as they do from ``Connection.execute``, so
    that the store's retries recognise a lost race."""

    __slots__ = ("conn", "cur", "dialect", "params", "sql")

    def __init__(self, session: Session):
        # The connection is looked up once per transaction (or savepoint) and kept in the
        # session: asking the session for it each time costs more than the statements here.
        # A savepoint begun since asks once, which is when SQLAlchemy emits its SAVEPOINT.
        # The cursor is the statement's own, closed after it (see __exit__).
        current = session.get_nested_transaction() or session.get_transaction()
        held = session.info.get(_HELD)
        if held is None or held[0] is not current or current is None:
            conn = session.connection()
            current = session.get_nested_transaction() or session.get_transaction()
            held = session.info[_HELD] = (current, conn.dialect, conn.connection, conn)
        self.dialect, self.conn = held[1], held[3]
        self.cur = held[2].cursor()
        self.sql: str | None = None
        self.params: Any = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, _t, exc, _tb) -> None:
        # Closed here, in the thread that holds the connection: a cursor left to the garbage
        # collector resets its statement (which sqlite3 shares among the connection's
        # cursors) whenever and in whichever thread it is collected — by then the
        # connection may be another thread's, and SQLite answers "API misuse".
        self.cur.close()
        dbapi = self.dialect.loaded_dbapi
        if exc is not None and isinstance(exc, dbapi.Error):
            raise DBAPIError.instance(self.sql, self.params, exc, dbapi.Error, dialect=self.dialect) from exc

    def execute(self, sql: str, params: Any = None) -> Any:
        sql, params = self._before(sql, params, False)
        self.cur.execute(sql) if params is None else self.cur.execute(sql, params)
        self._after(False)

    def executemany(self, sql: str, params: list) -> Any:
        sql, params = self._before(sql, params, True)
        self.cur.executemany(sql, params)
        self._after(True)

    # The engine's cursor events fire as for any statement (a listener — tracing, a test
    # watching the order of statements — sees these too; ``context`` is None, as SQLAlchemy
    # passes for statements it runs outside an execution context).
    def _before(self, sql: str, params: Any, many: bool) -> tuple[str, Any]:
        for fn in self.conn.dispatch.before_cursor_execute:
            sql, params = fn(self.conn, self.cur, sql, params, None, many)
        self.sql, self.params = sql, params
        return sql, params

    def _after(self, many: bool) -> None:
        for fn in self.conn.dispatch.after_cursor_execute:
            fn(self.conn, self.cur, self.sql, self.params, None, many)


def insert_row(session: Session, table: Table, values: dict[str, Any], *, returning: str | None = None) -> Any:
    """INSERT one row (its columns: the keys of ``values``); the ``returning`` column's value."""
    with _Cursor(session) as c:
        prepared = _insert(c.dialect, table, tuple(values), returning)
        c.execute(prepared.sql, prepared.params(values))
        return c.cur.fetchone()[0] if returning else None


def insert_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT several rows with the same columns (one ``executemany``)."""
    if not rows:
        return
    with _Cursor(session) as c:
        prepared = _insert(c.dialect, table, tuple(rows[0]), None)
        c.executemany(prepared.sql, [prepared.params(r) for r in rows])


def select_first(session: Session, table: Table, columns: tuple[str, ...], **where: Any) -> tuple | None:
    """The first row of ``columns`` where each ``where`` column equals its value (plain
    text and integer columns only: no result processing), or None."""
    with _Cursor(session) as c:
        prepared = _select(c.dialect, table, columns, tuple(where))
        c.execute(prepared.sql, prepared.params(where))
        row = c.cur.fetchone()
        return tuple(row) if row is not None else None


def execute(session: Session, sql: dict[str, str], params: dict[str, Any] | None = None) -> tuple[list, int]:
    """Run a statement written out per dialect (``sql``: dialect name -> SQL text with that
    driver's named parameters, ``:name`` or ``%(name)s``); returns (rows, rowcount)."""
    with _Cursor(session) as c:
        c.execute(sql[c.dialect.name], params)
        rows = c.cur.fetchall() if c.cur.description is not None else []
        return rows, c.cur.rowcount


def execute_many(session: Session, sql: dict[str, str], rows: list[dict[str, Any]]) -> None:
    """``execute`` once per parameter set, as one ``executemany`` (values as the driver takes them)."""
    if rows:
        with _Cursor(session) as c:
            c.executemany(sql[c.dialect.name], rows)


def bind(session: Session, column, value: Any) -> Any:
    """``value`` as the driver is given it for ``column`` (for ``execute``'s parameters)."""
    dialect = session.bind.dialect
    proc = column.type.dialect_impl(dialect).bind_processor(dialect)
    return value if proc is None else proc(value)
