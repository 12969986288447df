"""Shared fixtures: a fresh database per test on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

PG_ENV = "SIGNOFF_TEST_POSTGRES_URL"
pytest_plugins = ["fakes.fixtures", "e2e.client_world"]


def postgres_base_url() -> str | None:
    """The test server's URL (psycopg 3 driver), or None when the variable is unset."""
    url = os.environ.get(PG_ENV, "").strip()
    if not url:
        return None
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    return url


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database next to the test one; its URL. Dropped on exit
    (``WITH (FORCE)``, so a leaked connection cannot keep it alive)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(postgres_base_url())
    name = f"signoff_t_{uuid.uuid4().hex[:12]}"
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


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, then PostgreSQL when
    SIGNOFF_TEST_POSTGRES_URL is set (skipped otherwise)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'signoff.db'}"
        return
    if not postgres_base_url():
        pytest.skip(
            f"{PG_ENV} is not set: PostgreSQL tests skipped (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (skipped when SIGNOFF_TEST_POSTGRES_URL is not set)."""
    if not postgres_base_url():
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL tests skipped")
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'signoff.db'}"


@pytest.fixture
def clock():
    from support import FakeClock

    return FakeClock()
