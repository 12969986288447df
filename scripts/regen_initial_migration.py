"""Regenerate migration 0001 from the tables (only until the first release ships a schema).

Usage: python scripts/regen_initial_migration.py
"""

import os
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from signoff.store.migrate import MIGRATIONS

target = MIGRATIONS / "versions" / "0001_initial_schema.py"
target.unlink(missing_ok=True)
with tempfile.TemporaryDirectory() as tmp:
    url = f"sqlite:///{os.path.join(tmp, 'empty.db')}"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    with create_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
text = target.read_text()
text = "\n".join(line for line in text.splitlines() if not line.startswith("Create Date"))
Path(target).write_text(text + "\n")
print(f"wrote {target}")
