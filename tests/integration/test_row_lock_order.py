"""A click's transaction takes the request's row lock before it writes any row that
points at the request.

On PostgreSQL an INSERT into a child table (a decision) takes FOR KEY SHARE on the request
row it references. Two clicks that each inserted their decision, then asked for the row
lock (FOR UPDATE) to append the event, waited on each other: a deadlock, and under load a
lost click (seen in the racing-clicks test). The lock must come first, so the second click
waits for the first to commit and then loses the version check cleanly (and is retried).
"""

from __future__ import annotations

import pytest
from sqlalchemy import event

from signoff.usecases.decide import decide
from signoff.usecases.submit import submit
from support import FakeClock, runtime, submission


@pytest.fixture
def pg_runtime(db_url, monkeypatch):
    if not db_url.startswith("postgresql"):
        pytest.skip("the row lock is PostgreSQL's (SQLite writers hold the database lock)")
    rt = runtime(db_url, clock=FakeClock(), monkeypatch=monkeypatch)
    yield rt
    rt.store.dispose()


def _statements(engine):
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        seen.append(" ".join(statement.split()).upper())

    event.listen(engine, "before_cursor_execute", before)
    return seen, lambda: event.remove(engine, "before_cursor_execute", before)


def test_a_click_locks_the_request_before_inserting_its_decision(pg_runtime):
    ctx = pg_runtime.context
    rid = submit(ctx, agent_id="deploy-bot", body=submission()).request["id"]
    seen, stop = _statements(pg_runtime.store.engine)
    try:
        result = decide(ctx, request_id=rid, user="U0OWNER", decision="approve")
    finally:
        stop()
    assert result.outcome == "recorded" or result.outcome == "approved", result
    lock = next(i for i, s in enumerate(seen) if s.startswith("SELECT") and "FOR UPDATE" in s and "REQUESTS" in s)
    insert = next(i for i, s in enumerate(seen) if s.startswith("INSERT INTO DECISIONS"))
    assert lock < insert, seen[: insert + 1]
