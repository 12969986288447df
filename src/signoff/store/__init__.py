"""Persistence: SQLAlchemy tables, engine, unit of work, Alembic migrations."""
