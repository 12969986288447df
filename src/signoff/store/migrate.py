"""Schema migrations (Alembic): upgrade, and the check ``serve`` runs at start."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK = 0x5160FF  # advisory lock id: replicas starting together migrate one at a time


def _config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def head_revision(engine: Engine) -> str:
    return ScriptDirectory.from_config(_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def schema_revision(engine: Engine) -> str | None:
    """The schema revision of a signoff database; None when it holds no signoff schema
    (no revision recorded, or not the tables signoff keeps its evidence in). Only reads."""
    with engine.connect() as conn:
        revision = MigrationContext.configure(conn).get_current_revision()
        if revision is None:
            return None
        names = set(inspect(conn).get_table_names())
    return revision if {"requests", "events"} <= names else None


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Apply every pending migration; returns (revision before, revision after)."""
    cfg = _config(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        before = MigrationContext.configure(conn).get_current_revision()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        after = MigrationContext.configure(conn).get_current_revision()
    return before, after
