"""Separation of duties through chains at the use-case level, on SQLite and PostgreSQL:
who may approve, the pending list and ``show`` — and the directory (a Slack call) is
never asked while a database session is open."""

from __future__ import annotations

import threading

import pytest

from signoff.usecases import queries
from signoff.usecases.decide import decide
from signoff.usecases.submit import submit
from support import ROUTING, FakeClock, runtime, submission

YAML = f"""
agents:
  - id: bot-a
    sponsor: U0SPONSOR
    secret_env: BOT_A_SECRET
  - id: bot-b
    sponsor: U0SPB
    secret_env: BOT_B_SECRET
workflows:
  - id: prod-restart
{ROUTING}\
    approvers: [U0OWNER, S0REVIEW]
    agents: [bot-a, bot-b]
    timeout: 30m
"""


class Sessions:
    """Counts the database sessions the store has open (reads and transactions alike)."""

    def __init__(self, store):
        self.open = 0
        self._lock = threading.Lock()
        read, transaction = store.read, store.transaction
        store.read = lambda fn, **kw: read(self._held(fn), **kw)
        store.transaction = lambda fn, **kw: transaction(self._held(fn), **kw)

    def _held(self, fn):
        def run(session):
            with self._lock:
                self.open += 1
            try:
                return fn(session)
            finally:
                with self._lock:
                    self.open -= 1

        return run


class Directory:
    """Group members; fails the test when asked while a session is open."""

    def __init__(self, sessions: Sessions, groups: dict[str, set[str]]):
        self.sessions = sessions
        self.groups = groups
        self.asked = []

    def members(self, ref: str) -> set[str]:
        assert self.sessions.open == 0, f"directory asked about {ref} while a database session is open"
        self.asked.append(ref)
        return set(self.groups.get(ref, ()))


@pytest.fixture
def ctx(db_url, monkeypatch):
    monkeypatch.setenv("BOT_A_SECRET", "a")
    monkeypatch.setenv("BOT_B_SECRET", "b")
    rt = runtime(db_url, YAML, clock=FakeClock())
    sessions = Sessions(rt.store)
    rt.context.directory = Directory(sessions, {"S0REVIEW": {"U0SPB", "U0SPONSOR", "U0REVIEWER"}})
    yield rt.context
    rt.store.dispose()


def test_group_members_who_sponsor_a_step_may_not_approve_it_nor_see_it_as_theirs(ctx):
    first = submit(ctx, agent_id="bot-a", body=submission(executor="bot-b")).request
    step = submit(ctx, agent_id="bot-b", body=submission(parent_id=first["id"], title="Chained")).request
    plain = submit(ctx, agent_id="bot-a", body=submission(title="Plain")).request

    # U0SPB approves as a member of S0REVIEW, but not a step bot-b submits or executes.
    for rid in (first["id"], step["id"]):
        assert decide(ctx, request_id=rid, user="U0SPB", decision="approve").outcome == "refused"
        assert decide(ctx, request_id=rid, user="U0SPONSOR", decision="approve").outcome == "refused"
    assert [r["id"] for r in queries.pending_for(ctx, "U0SPB")] == [plain["id"]]
    assert [r["id"] for r in queries.pending_for(ctx, "U0SPONSOR")] == []
    assert {r["id"] for r in queries.pending_for(ctx, "U0REVIEWER")} == {first["id"], step["id"], plain["id"]}
    assert decide(ctx, request_id=step["id"], user="U0REVIEWER", decision="approve").outcome == "approved"
    assert decide(ctx, request_id=plain["id"], user="U0SPB", decision="approve").outcome == "approved"

    # show: the group's members and the sponsors see it; nobody else does.
    for user in ("U0REVIEWER", "U0SPB", "U0SPONSOR", "U0OWNER", "U0SEC"):
        assert queries.show(ctx, step["id"], user)["title"] == "Chained", user
    assert queries.show(ctx, step["id"], "U0STRANGER") is None
    assert queries.show(ctx, step["id"], None) is None
    assert ctx.directory.asked  # the group was looked up (outside every session)
