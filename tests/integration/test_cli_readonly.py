"""The read-only commands (``evidence verify``, ``evidence export``, ``evidence verify-bundle``
without ``--jwks``, ``keys list``) read the database they are given: one that does not exist, or holds no
signoff schema, is exit 2 with a clear message, and nothing is created or changed."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, func, select, text

from signoff.cli import main
from signoff.store import migrate
from signoff.store.db import Store
from signoff.store.tables import KeyRow

RID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def bundle_file(tmp_path):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps({"request": {"id": RID}, "events": [], "signature": {"kid": "k", "value": "x"}}))
    return str(path)


def commands(bundle_file):
    return {
        "verify": ["evidence", "verify"],
        "export": ["evidence", "export", RID],
        "export-html": ["evidence", "export", RID, "--format", "html"],
        "verify-bundle": ["evidence", "verify-bundle", bundle_file],
        "keys-list": ["keys", "list"],
        "keys-jwks": ["keys", "list", "--jwks"],
    }


COMMANDS = ["verify", "export", "export-html", "verify-bundle", "keys-list", "keys-jwks"]


def run(capsys, monkeypatch, url, argv) -> tuple[int, str, str]:
    monkeypatch.setenv("SIGNOFF_DATABASE_URL", url)
    monkeypatch.delenv("SIGNOFF_SIGNING_KEY", raising=False)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def files(path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in path.iterdir()}


@pytest.mark.parametrize("command", COMMANDS)
def test_no_database_is_exit_2_and_creates_nothing(db_url, tmp_path, capsys, monkeypatch, bundle_file, command):
    """SQLite: the file does not exist. PostgreSQL: an empty database (no signoff tables)."""
    before = files(tmp_path)
    code, out, err = run(capsys, monkeypatch, db_url, commands(bundle_file)[command])
    assert code == 2, (out, err)
    assert "OK" not in out and out == ""
    assert "Traceback" not in err
    if db_url.startswith("sqlite"):
        assert "no database at" in err and str(tmp_path / "signoff.db") in err
        assert files(tmp_path) == before
    else:
        assert "holds no signoff schema" in err
        engine = create_engine(db_url)
        try:
            with engine.connect() as conn:
                tables = conn.execute(
                    text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
                ).scalar()
        finally:
            engine.dispose()
        assert tables == 0


def test_verify_in_the_wrong_directory_creates_no_signoff_db(tmp_path):
    """The default URL (sqlite:///signoff.db) in a directory with no database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run(
        [sys.executable, "-m", "signoff.cli", "evidence", "verify"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no database at" in out.stderr and "signoff.db" in out.stderr
    assert "OK" not in out.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_empty_sqlite_file_is_no_schema(tmp_path, capsys, monkeypatch, bundle_file, command):
    db = tmp_path / "signoff.db"
    db.write_bytes(b"")
    before = files(tmp_path)
    code, _out, err = run(capsys, monkeypatch, f"sqlite:///{db}", commands(bundle_file)[command])
    assert code == 2
    assert "holds no signoff schema" in err and str(db) in err
    assert files(tmp_path) == before


def test_another_programs_sqlite_database_is_left_alone(tmp_path, capsys, monkeypatch, bundle_file):
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
    conn.close()
    content = db.read_bytes()
    for command in COMMANDS:
        code, _, err = run(capsys, monkeypatch, f"sqlite:///{db}", commands(bundle_file)[command])
        assert code == 2 and "holds no signoff schema" in err, err
    assert db.read_bytes() == content  # not even switched to WAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.json", "other.db"]


def test_unknown_schema_revision_is_exit_2(db_url, capsys, monkeypatch):
    store = Store(db_url)
    try:
        migrate.upgrade(store.engine)
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_from_elsewhere'"))
    finally:
        store.dispose()
    code, out, err = run(capsys, monkeypatch, db_url, ["evidence", "verify"])
    assert code == 2 and out == ""
    assert "ffff_from_elsewhere" in err and "signoff db upgrade" in err


def test_in_memory_database_is_exit_2(capsys, monkeypatch):
    code, out, err = run(capsys, monkeypatch, "sqlite://", ["evidence", "verify"])
    assert code == 2 and out == ""
    assert "in-memory" in err


def test_unreachable_postgres_database_is_exit_2(pg_url, capsys, monkeypatch):
    from sqlalchemy.engine import make_url

    missing = make_url(pg_url).set(database="signoff_does_not_exist_here").render_as_string(hide_password=False)
    code, out, err = run(capsys, monkeypatch, missing, ["evidence", "verify"])
    assert code == 2 and out == ""
    assert "cannot open the database" in err and "signoff_does_not_exist_here" in err
    assert "Traceback" not in err


def test_a_signoff_database_with_no_requests_verifies_and_stays_unchanged(db_url, capsys, monkeypatch):
    """An upgraded, never used database: verify reads it (OK, 0 requests) and writes nothing,
    not even a signing key; export says the request is unknown."""
    store = Store(db_url)
    try:
        migrate.upgrade(store.engine)
    finally:
        store.dispose()
    code, out, err = run(capsys, monkeypatch, db_url, ["evidence", "verify"])
    assert code == 0, err
    assert out.startswith("OK: 0 request(s)")
    code, out, err = run(capsys, monkeypatch, db_url, ["evidence", "export", RID])
    assert code == 1 and f"no request {RID}" in err
    code, out, err = run(capsys, monkeypatch, db_url, ["keys", "list"])
    assert code == 0 and "no signing key yet" in err
    store = Store(db_url)
    try:
        assert store.read(lambda s: s.scalar(select(func.count()).select_from(KeyRow))) == 0
    finally:
        store.dispose()
