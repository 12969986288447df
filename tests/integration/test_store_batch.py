"""Store.transaction(batch=True): group commit on SQLite keeps each caller's own outcome."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from signoff.store import migrate
from signoff.store.db import Conflicted, Store
from signoff.store.tables import IdempotencyRow

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    migrate.upgrade(s.engine)
    yield s
    s.dispose()


def _remember(key: str):
    def tx(session):
        session.add(IdempotencyRow(agent="a", key=key, body_sha256="0" * 64, request_id=key, created_at=NOW))
        session.flush()
        return key

    return tx


def _count(store: Store) -> int:
    return store.read(lambda s: s.scalar(select(func.count()).select_from(IdempotencyRow)))


def _run_concurrently(fns, store):
    results: dict[int, object] = {}
    start = threading.Barrier(len(fns))

    def worker(i, fn):
        start.wait()
        try:
            results[i] = store.transaction(fn, batch=True)
        except Exception as exc:  # the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return results


def test_concurrent_callers_each_get_their_result(store):
    results = _run_concurrently([_remember(f"k{i}") for i in range(40)], store)
    assert results == {i: f"k{i}" for i in range(40)}
    assert _count(store) == 40


def test_a_failing_caller_does_not_undo_the_others(store):
    def boom(session):
        session.add(IdempotencyRow(agent="a", key="boom", body_sha256="0" * 64, request_id="x", created_at=NOW))
        session.flush()
        raise ValueError("refused")

    fns = [_remember(f"k{i}") for i in range(10)] + [boom] + [_remember(f"m{i}") for i in range(10)]
    results = _run_concurrently(fns, store)
    assert isinstance(results[10], ValueError)
    assert sorted(v for v in results.values() if isinstance(v, str)) == sorted(
        [f"k{i}" for i in range(10)] + [f"m{i}" for i in range(10)]
    )
    assert _count(store) == 20
    assert store.read(lambda s: s.get(IdempotencyRow, ("a", "boom"))) is None


def test_a_caller_that_lost_a_race_runs_again_alone(store):
    store.transaction(_remember("dup"))
    attempts = []

    def dup(session):
        attempts.append(1)
        _remember("dup")(session)  # an IntegrityError each time: retried alone, then Conflicted

    results = _run_concurrently([_remember("a1"), dup, _remember("a2")], store)
    assert results[0] == "a1" and results[2] == "a2"
    assert isinstance(results[1], Conflicted)
    assert len(attempts) >= 2
    assert _count(store) == 3


def test_sequential_batched_calls(store):
    for i in range(5):
        assert store.transaction(_remember(f"s{i}"), batch=True) == f"s{i}"
    assert _count(store) == 5


_HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="POSIX advisory locks")
def test_sqlite_writers_of_several_processes_take_turns_on_the_file_lock(tmp_path):
    """Another process holding the writer lock makes this one's transaction wait (without
    the file lock it would go straight through: SQLite itself is not locked)."""
    import subprocess
    import sys

    db = tmp_path / "shared.db"
    s = Store(f"sqlite:///{db}")
    migrate.upgrade(s.engine)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, f"{db}-writer.lock"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        done = threading.Event()
        thread = threading.Thread(target=lambda: (s.transaction(_remember("waited")), done.set()))
        thread.start()
        assert not done.wait(0.5), "the write went ahead while another process held the writer lock"
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert done.wait(10)
        thread.join()
        assert _count(s) == 1
    finally:
        holder.kill()
        holder.wait()
        s.dispose()


def test_commit_listeners_hear_only_what_was_committed(db_url):
    """Store.on_commit gets the events of a committed transaction — of a batch, only those of
    callers whose savepoint held — and nothing of a rolled-back one."""
    import threading

    from signoff.store.db import Committed, written

    store = Store(db_url)
    migrate.upgrade(store.engine)
    heard: list[str] = []
    store.on_commit.append(lambda events: heard.extend(e.request_id for e in events))
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def ok(name):
        def fn(session):
            written(session, Committed("t", name, at))

        return fn

    def bad(session):
        written(session, Committed("t", "rolled-back", at))
        raise ValueError("no")

    store.transaction(ok("one"))
    with pytest.raises(ValueError):
        store.transaction(bad)
    assert heard == ["one"]

    heard.clear()
    barrier = threading.Barrier(6)
    errors = []

    def caller(fn):
        barrier.wait()
        try:
            store.transaction(fn, batch=True)
        except ValueError as exc:
            errors.append(exc)

    fns = [ok(f"b{i}") for i in range(5)] + [bad]
    threads = [threading.Thread(target=caller, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(heard) == [f"b{i}" for i in range(5)] and len(errors) == 1
    store.dispose()
