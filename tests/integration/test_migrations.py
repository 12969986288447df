"""The migrations build exactly the schema the tables declare: a database upgraded to head
(as ``serve`` does at start) and src/signoff/store/tables.py compare equal under Alembic's
autogenerate — no table, column, type, nullability, server default, index or constraint
missing or extra. A change to the tables without its migration (or the reverse) fails here."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from signoff.store.migrate import current_revision, head_revision, upgrade
from signoff.store.tables import Base

# The comparisons autogenerate makes for a new revision (store/migrations/env.py says the same).
COMPARE = {"compare_type": True, "compare_server_default": True}


def test_the_migrated_schema_is_the_tables_schema(db_url):
    engine = create_engine(db_url)
    try:
        upgrade(engine)
        assert current_revision(engine) == head_revision(engine)
        with engine.connect() as conn:
            drift = compare_metadata(MigrationContext.configure(conn, opts=COMPARE), Base.metadata)
    finally:
        engine.dispose()
    assert drift == [], "the migrations and store/tables.py differ; add a migration:\n" + "\n".join(map(repr, drift))
