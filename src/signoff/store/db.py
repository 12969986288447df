"""Engine and session factory. Nothing is built at import time."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: the thread lock and busy timeout only
    fcntl = None

log = logging.getLogger(__name__)
T = TypeVar("T")

# session.info key: ids of requests whose agent-visible state this transaction changed
CHANGED = "signoff.changed"
# PostgreSQL channel on which committing transactions announce those ids (comma-separated)
CHANGES_CHANNEL = "signoff_changes"
_NOTIFY_PAYLOAD = 7000  # bytes per NOTIFY (PostgreSQL's limit is 8000)


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use psycopg 3 for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _compact_json(value) -> str:
    # Sorted keys, no spaces: evidence verify can hash stored event data without re-parsing it.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def make_engine(url: str, *, pool_size: int = 10, readonly: bool = False) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE writes.

    ``readonly``: connections that cannot write (SQLite opened with ``mode=ro``, which never
    creates the file; PostgreSQL transactions read-only by default)."""
    url = normalize_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        extra: dict[str, Any] = {}
        path = sqlite_file(url)
        if readonly:
            if path is None:
                raise ValueError("an in-memory SQLite database cannot be opened read-only")
            import sqlite3

            ro_uri = f"file:{quote(path, safe='/')}?mode=ro"
            extra["creator"] = lambda: sqlite3.connect(ro_uri, uri=True, check_same_thread=False, timeout=30)
        engine = create_engine(
            url,
            json_serializer=_compact_json,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=20,
            **extra,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            if u.database and u.database != ":memory:" and not readonly:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # Writers take the lock up front: no SQLITE_BUSY upgrades mid-transaction, and
            # a read-then-write use-case is serialised like a compare-and-set needs.
            if readonly or conn.get_execution_options().get("signoff_readonly"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args = {"options": "-c default_transaction_read_only=on"} if readonly else {}
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=20,
        pool_pre_ping=True,
        json_serializer=_compact_json,
        connect_args=connect_args,
    )


def sqlite_file(url: str) -> str | None:
    """The absolute path of a SQLite URL's database file; None when in memory."""
    database = make_url(normalize_url(url)).database
    if not database or database == ":memory:" or database.startswith("file::memory:") or "mode=memory" in database:
        return None
    if database.startswith("file:"):
        database = database[5:].split("?", 1)[0]
    return os.path.abspath(database)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


class Conflicted(Exception):
    """A transaction lost a race too many times."""


def is_retryable(exc: BaseException) -> bool:
    """A lost race (a version check, a unique key, a lock, a serialization failure):
    running the transaction again may succeed."""
    if isinstance(exc, (StaleDataError, IntegrityError)):
        return True
    if isinstance(exc, OperationalError) and "locked" in str(exc).lower():
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(getattr(exc, "orig", None), "sqlstate", None)
        return code in {"40001", "40P01"}  # serialization failure, deadlock
    return False


def _sqlite_file(engine: Engine) -> str | None:
    """The database file of a SQLite engine; None when in memory."""
    return sqlite_file(engine.url.render_as_string(hide_password=False))


class NoDatabase(Exception):
    """What a read-only command was pointed at is not a signoff database (the message says why)."""


def open_existing(url: str) -> Store:
    """A read-only ``Store`` on an existing signoff database at the current schema.

    Nothing is created or changed: a SQLite file that does not exist stays absent (and an
    existing one is opened with ``mode=ro``), a PostgreSQL database is only read. Raises
    ``NoDatabase`` when there is no database, it cannot be opened, it holds no signoff
    schema, or its schema is not the one this version reads."""
    from signoff.store import migrate

    url = normalize_url(url)
    shown = make_url(url).render_as_string(hide_password=True)
    if make_url(url).get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is None:
            raise NoDatabase(f"{shown} is an in-memory database: it holds nothing to read")
        if not os.path.isfile(path):
            raise NoDatabase(
                f"no database at {path} ({shown}); nothing was created. Run this where the "
                "bot's database is, or set SIGNOFF_DATABASE_URL"
            )
        where = path
    else:
        where = shown
    store = Store(url, readonly=True)
    try:
        try:
            revision = migrate.schema_revision(store.engine)
        except DBAPIError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if store.dialect == "sqlite" and "not a database" in reason:
                raise NoDatabase(f"{where} holds no signoff schema (it is not a SQLite database)") from None
            raise NoDatabase(f"cannot open the database {where}: {reason}") from None
        if revision is None:
            raise NoDatabase(
                f"{where} holds no signoff schema (no signoff tables); is SIGNOFF_DATABASE_URL the bot's database?"
            )
        head = migrate.head_revision(store.engine)
        if revision != head:
            raise NoDatabase(
                f"the database {where} is at schema revision {revision!r}, this signoff reads "
                f"{head!r}: run `signoff db upgrade` (with this version) first"
            )
    except BaseException:
        store.dispose()
        raise
    return store


def _payloads(ids: list[str]) -> list[str]:
    """``ids`` joined by commas into NOTIFY payloads that each fit PostgreSQL's limit."""
    out, cur, size = [], [], 0
    for rid in ids:
        if cur and size + len(rid) + 1 > _NOTIFY_PAYLOAD:
            out.append(",".join(cur))
            cur, size = [], 0
        cur.append(rid)
        size += len(rid) + 1
    if cur:
        out.append(",".join(cur))
    return out


class WriterLock:
    """Reentrant: a thread lock, plus (for a database file, where ``fcntl`` exists) an
    exclusive ``flock`` on ``<file>-writer.lock`` held while this process writes."""

    def __init__(self, path: str | None):
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._path = f"{path}-writer.lock" if path and fcntl is not None else None

    def __enter__(self) -> WriterLock:
        self._thread_lock.acquire()
        try:
            if self._depth == 0 and self._path is not None:
                if self._fd is None:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        self._depth += 1
        return self

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None and self._depth == 0:
                os.close(self._fd)
                self._fd = None

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


class _Queued:
    """One caller's ``fn`` waiting for a batched transaction (see ``Store.transaction``)."""

    __slots__ = ("alone", "done", "error", "fn", "lead", "result", "wake")

    def __init__(self, fn: Callable[[Session], Any]):
        self.fn = fn
        self.wake = threading.Event()
        self.lead = False  # this caller runs the next batch
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.alone = False  # run it again in a transaction of its own

    def failed(self, exc: Exception) -> None:
        """``fn`` raised: a lost race runs again alone, anything else is the caller's error."""
        self.result = None
        if is_retryable(exc):
            self.alone = True
        else:
            self.error = exc


COMMITTED = "signoff.committed"


@dataclass(frozen=True)
class Committed:
    """An evidence event a transaction wrote, handed to ``Store.on_commit`` listeners once
    that transaction has committed (never for one that rolled back)."""

    type: str
    request_id: str
    at: datetime
    workflow: str | None = None
    submitted_at: datetime | None = None
    kind: str | None = None  # an exception's kind


def written(session: Session, event: Committed) -> None:
    """Note ``event`` for the listeners of this session's commit."""
    session.info.setdefault(COMMITTED, []).append(event)


class Store:
    """The database: engine, sessions, and transactional retries."""

    BATCH_MAX = 16  # bounds how long one batch holds the write lock (other writers wait)

    def __init__(self, url: str, *, pool_size: int = 10, readonly: bool = False):
        # Called after every commit with the events it wrote (metrics, waiters); a listener
        # that raises is logged and does not undo anything.
        self.on_commit: list[Callable[[list[Committed]], None]] = []
        self.url = normalize_url(url)
        self.readonly = readonly
        self.engine = make_engine(self.url, pool_size=pool_size, readonly=readonly)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time. Writers queue on a lock here instead of inside
        # SQLite, whose busy handler sleeps in growing steps (up to 100 ms) and so leaves
        # the database idle while dozens of threads wait: a thread lock in the process, and
        # for a database file also an advisory lock on ``<file>-writer.lock`` that every
        # signoff process on it takes (``serve --workers``, replicas, the CLI), which the
        # kernel hands over the moment it is released. A writer that does not take it still
        # meets BEGIN IMMEDIATE and the busy timeout.
        if self.dialect != "sqlite":
            self._write_lock = contextlib.nullcontext()
        else:
            self._write_lock = WriterLock(_sqlite_file(self.engine))
        self._queue: list[_Queued] = []
        self._queue_lock = threading.Lock()
        self._leading = False
        # Called (in the committing thread) with the ids of requests a commit changed in a
        # way their agents can see (``Repo.touch``): what wakes the agents waiting on them.
        # Session events, so that no commit path (batched or not) can skip them.
        self.on_change: list[Callable[[frozenset[str]], None]] = []
        event.listen(self.sessions, "before_commit", self._announce)
        event.listen(self.sessions, "after_commit", self._changes_committed)
        event.listen(self.sessions, "after_commit", self._committed)
        event.listen(self.sessions, "after_rollback", self._forget)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _announce(self, session: Session) -> None:
        """PostgreSQL: NOTIFY the changed ids inside the committing transaction, so every
        replica hears of them exactly when (and only if) the change is committed."""
        ids = session.info.get(CHANGED)
        if not ids or self.dialect != "postgresql":
            return
        for payload in _payloads(sorted(ids)):
            session.connection().exec_driver_sql("SELECT pg_notify(%(c)s, %(p)s)", {"c": CHANGES_CHANNEL, "p": payload})

    @staticmethod
    def _forget(session: Session) -> None:
        """A rolled-back transaction announces nothing."""
        session.info.pop(CHANGED, None)
        session.info.pop(COMMITTED, None)

    def _changes_committed(self, session: Session) -> None:
        ids = session.info.pop(CHANGED, None)
        if not ids:
            return
        ids = frozenset(ids)
        for hook in self.on_change:
            try:
                hook(ids)
            except Exception:  # waking waiters must never fail a committed use-case
                log.exception("after-commit hook failed")

    def session(self, *, readonly: bool = False) -> Session:
        s = self.sessions()
        if readonly and self.dialect == "sqlite":
            s.connection(execution_options={"signoff_readonly": True})
        return s

    def transaction(self, fn: Callable[[Session], T], *, attempts: int = 8, batch: bool = False) -> T:
        """Run ``fn(session)`` in one transaction and commit; retry when it lost a race.

        ``fn`` must be safe to run again (it is re-run from scratch on a fresh session).

        ``batch=True`` lets concurrent callers in this process share one transaction — group
        commit: each ``fn`` runs in a savepoint of its own, in arrival order, and all commit
        together, so one commit (one fsync, one turn at a lock held until commit, such as
        the evidence ledger's on PostgreSQL) serves many callers. A caller still gets its
        own result or exception, only after the commit; an ``fn`` that lost a race, or a
        batch whose commit failed, is run again on its own.
        """
        if batch:
            return self._batched(fn, attempts)
        return self._transaction(fn, attempts)

    def _transaction(self, fn: Callable[[Session], T], attempts: int) -> T:
        for attempt in range(attempts):
            with self._write_lock:
                session = self.session()
                try:
                    result = fn(session)
                    session.commit()
                    return result
                except Exception as exc:
                    session.rollback()
                    if not is_retryable(exc) or attempt == attempts - 1:
                        if is_retryable(exc):
                            raise Conflicted(str(exc)) from exc
                        raise
                finally:
                    session.close()
            time.sleep(min(0.005 * 2**attempt, 0.2))
        raise AssertionError("unreachable")

    def _batched(self, fn: Callable[[Session], T], attempts: int) -> T:
        me = _Queued(fn)
        with self._queue_lock:
            self._queue.append(me)
            if not self._leading:
                self._leading = me.lead = True
        if not me.lead:
            me.wake.wait()  # the batch that holds us finished, or we lead the next one
        if not me.done:
            self._run_batch()
        if me.alone:
            return self._transaction(fn, attempts)
        if me.error is not None:
            raise me.error
        return me.result

    def _run_batch(self) -> None:
        """Run the queued callers (up to BATCH_MAX) in one transaction; hand over the lead."""
        with self._queue_lock:
            items, self._queue = self._queue[: self.BATCH_MAX], self._queue[self.BATCH_MAX :]
        try:
            with self._write_lock:
                session = self.session()
                try:
                    if len(items) == 1:  # alone: an ordinary transaction, no savepoint needed
                        try:
                            items[0].result = items[0].fn(session)
                            session.commit()
                        except Exception as exc:
                            session.rollback()
                            items[0].failed(exc)
                        return
                    for item in items:
                        savepoint = session.begin_nested()
                        mark = len(session.info.get(COMMITTED) or ())
                        try:
                            item.result = item.fn(session)
                            savepoint.commit()
                        except Exception as exc:
                            if savepoint.is_active:
                                savepoint.rollback()
                            del session.info.setdefault(COMMITTED, [])[mark:]
                            item.failed(exc)
                    session.commit()
                except Exception:
                    log.debug("batched transaction failed; its callers run alone", exc_info=True)
                    session.rollback()
                    for item in items:
                        item.result, item.error, item.alone = None, None, True
                finally:
                    session.close()
        except BaseException:
            for item in items:
                item.result, item.error, item.alone = None, None, True
            raise
        finally:
            for item in items:
                item.done = True
            with self._queue_lock:
                if self._queue:
                    self._queue[0].lead = True
                    self._queue[0].wake.set()
                else:
                    self._leading = False
            for item in items:
                item.wake.set()

    def _committed(self, session: Session) -> None:
        events = session.info.pop(COMMITTED, None)
        if not events:
            return
        for listener in self.on_commit:
            try:
                listener(events)
            except Exception:
                log.exception("a commit listener failed (the commit stands)")

    def read(self, fn: Callable[[Session], T]) -> T:
        session = self.session(readonly=True)
        try:
            return fn(session)
        finally:
            session.rollback()
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
        if isinstance(self._write_lock, WriterLock):
            self._write_lock.close()
