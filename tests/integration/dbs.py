"""A fresh, empty database per test: a SQLite file, and a PostgreSQL database when
``SIGNOFF_TEST_POSTGRES_URL`` names a server (e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/test``).

Use it from a test module with ``from dbs import db_url  # noqa: F401`` (the fixture is
parametrized: each test runs on ``sqlite`` and ``postgres``), or call
``fresh_database(kind, tmp_path)`` yourself. Each PostgreSQL test gets its own database
``t_<random>``, created over an autocommit connection to the test database and dropped
afterwards (``WITH (FORCE)``, so a leaked connection cannot keep it alive).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ENV = "SIGNOFF_TEST_POSTGRES_URL"


def postgres_base_url() -> str | None:
    """The test server's URL (psycopg 3 driver), or None when the variable is unset."""
    url = os.environ.get(PG_ENV, "").strip()
    if not url:
        return None
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix):]
    return url


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database's URL; dropped on exit."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(postgres_base_url())
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT", pool_size=1)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """``kind`` is ``sqlite`` or ``postgres``; skips the test when PostgreSQL is not configured."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'signoff-{uuid.uuid4().hex[:8]}.db'}"
        return
    if kind != "postgres":
        raise ValueError(f"unknown database kind {kind!r}")
    if not postgres_base_url():
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL variant skipped "
                    "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    with fresh_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty database URL: SQLite, then PostgreSQL (skipped when not configured)."""
    with fresh_database(request.param, tmp_path) as url:
        yield url
