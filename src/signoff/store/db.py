"""Engine and session factory. Nothing is built at import time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

log = logging.getLogger(__name__)
T = TypeVar("T")


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use psycopg 3 for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE writes."""
    url = normalize_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            if u.database and u.database != ":memory:":
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # Writers take the lock up front: no SQLITE_BUSY upgrades mid-transaction, and
            # a read-then-write use-case is serialised like a compare-and-set needs.
            if conn.get_execution_options().get("signoff_readonly"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


class Conflicted(Exception):
    """A transaction lost a race too many times."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (StaleDataError, IntegrityError)):
        return True
    if isinstance(exc, OperationalError) and "locked" in str(exc).lower():
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(getattr(exc, "orig", None), "sqlstate", None)
        return code in {"40001", "40P01"}  # serialization failure, deadlock
    return False


class Store:
    """The database: engine, sessions, and transactional retries."""

    def __init__(self, url: str, *, pool_size: int = 10):
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, pool_size=pool_size)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, *, readonly: bool = False) -> Session:
        s = self.sessions()
        if readonly and self.dialect == "sqlite":
            s.connection(execution_options={"signoff_readonly": True})
        return s

    def transaction(self, fn: Callable[[Session], T], *, attempts: int = 8) -> T:
        """Run ``fn(session)`` in one transaction and commit; retry when it lost a race.

        ``fn`` must be safe to run again (it is re-run from scratch on a fresh session).
        """
        for attempt in range(attempts):
            session = self.session()
            try:
                result = fn(session)
                session.commit()
                return result
            except Exception as exc:
                session.rollback()
                if not _retryable(exc) or attempt == attempts - 1:
                    if _retryable(exc):
                        raise Conflicted(str(exc)) from exc
                    raise
                time.sleep(min(0.005 * 2**attempt, 0.2))
            finally:
                session.close()
        raise AssertionError("unreachable")

    def read(self, fn: Callable[[Session], T]) -> T:
        session = self.session(readonly=True)
        try:
            return fn(session)
        finally:
            session.rollback()
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
