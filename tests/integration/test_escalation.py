"""Escalation ladders, expiry and their races, on SQLite and PostgreSQL, with a fake clock.

The sweep is driven by hand (``sweep(ctx, now=…)``); nothing here sleeps to wait for time.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from signoff.store.repo import Repo
from signoff.store.tables import OutboxRow, RequestRow, SlackMessageRow
from signoff.usecases import decide as decide_module
from signoff.usecases import sweep as sweep_module
from signoff.usecases.agent_ops import get_request
from signoff.usecases.cancel import cancel
from signoff.usecases.decide import decide
from signoff.usecases.escalate import expand_group
from signoff.usecases.submit import submit
from signoff.usecases.sweep import sweep
from support import BASIC_YAML, T0, FakeClock, runtime, submission

MIN = timedelta(minutes=1)

GROUP_YAML = BASIC_YAML.replace("to: [U0ESC]", "to: [S0ONCALL, C0WIDER]")

REMIND_YAML = BASIC_YAML.replace(
    """      - after: 20m
        to: [U0PLAT]""",
    """      - after: 20m
        to: [U0PLAT]
        remind: true""",
)

REPEAT_YAML = BASIC_YAML.replace("timeout: 30m", "timeout: 65m\n    repeat: true")


class FakeDirectory:
    def __init__(self, members: dict[str, set[str]] | None = None):
        self.groups = members or {}
        self.calls = 0

    def members(self, ref: str) -> set[str]:
        self.calls += 1
        return set(self.groups.get(ref, set()))


@pytest.fixture
def make(db_url, monkeypatch):
    """make(yaml=…) -> (ctx, clock); every runtime is disposed of at the end."""
    made = []

    def _make(yaml_text: str = BASIC_YAML, directory=None):
        clock = FakeClock()
        rt = runtime(db_url, yaml_text, clock=clock, monkeypatch=monkeypatch)
        if directory is not None:
            rt.context.directory = directory
        made.append(rt)
        return rt.context, clock

    yield _make
    for rt in made:
        rt.store.dispose()


# ---------------------------------------------------------------- helpers


def new_request(ctx, **over) -> str:
    return submit(ctx, agent_id="deploy-bot", body=submission(**over)).request["id"]


def _detached(s, found):
    """Rows loaded and detached, so they stay readable after the read ends."""
    for obj in found if isinstance(found, list) else [found]:
        if obj is not None:
            s.expunge(obj)
    return found


def row(ctx, rid: str) -> RequestRow:
    return ctx.store.read(lambda s: _detached(s, Repo(s).get(rid)))


def events(ctx, rid: str) -> list:
    return ctx.store.read(lambda s: _detached(s, Repo(s).events(rid)))


def types(ctx, rid: str) -> list[str]:
    return [e.type for e in events(ctx, rid)]


def outbox(ctx, rid: str, kind: str | None = None) -> list[OutboxRow]:
    def read(s):
        q = select(OutboxRow).where(OutboxRow.request_id == rid).order_by(OutboxRow.id)
        if kind:
            q = q.where(OutboxRow.kind == kind)
        return _detached(s, list(s.scalars(q)))

    return ctx.store.read(read)


def messages(ctx, rid: str, role: str | None = None) -> list[SlackMessageRow]:
    return ctx.store.read(lambda s: _detached(s, Repo(s).messages(rid, role)))


def snapshot(ctx, rid: str) -> tuple:
    """Everything a sweep could change about a request."""
    r = row(ctx, rid)
    return (r.status, r.steps_fired, r.due_at, r.event_count, len(outbox(ctx, rid)), len(messages(ctx, rid)))


def fired(ctx, rid: str) -> list[dict]:
    return [e.data for e in events(ctx, rid) if e.type == "escalation.fired"]


# ---------------------------------------------------------------- each step fires once


def test_each_step_fires_once_and_repeated_sweeps_do_no_harm(make):
    ctx, clock = make()
    rid = new_request(ctx)
    assert row(ctx, rid).due_at == T0 + 10 * MIN

    clock.advance(minutes=9, seconds=59)
    before = snapshot(ctx, rid)
    assert sweep(ctx).touched == 0
    assert snapshot(ctx, rid) == before

    clock.now = T0 + 10 * MIN
    assert sweep(ctx).escalated == 1
    [step] = fired(ctx, rid)
    assert step["step"] == 0 and step["to"] == ["U0ESC"] and step["late_seconds"] == 0
    esc = messages(ctx, rid, "escalation")
    assert [m.target for m in esc] == ["U0ESC"]
    assert [o.payload for o in outbox(ctx, rid, "slack.post")][-2:] != []
    assert any(o.payload == {"message_id": esc[0].id} for o in outbox(ctx, rid, "slack.post"))
    assert row(ctx, rid).steps_fired == 1 and row(ctx, rid).due_at == T0 + 20 * MIN

    after_first = snapshot(ctx, rid)
    for minutes in (10, 10, 15, 19):
        clock.now = T0 + minutes * MIN
        assert sweep(ctx).touched == 0
    assert snapshot(ctx, rid) == after_first

    clock.now = T0 + 20 * MIN
    assert sweep(ctx).escalated == 1
    assert sweep(ctx).touched == 0
    assert [d["step"] for d in fired(ctx, rid)] == [0, 1]
    assert [m.target for m in messages(ctx, rid, "escalation")] == ["U0ESC", "U0PLAT"]
    assert row(ctx, rid).due_at == T0 + 30 * MIN  # next: the expiry


def test_escalation_notes_the_root_thread_and_raises_an_exception(make):
    ctx, clock = make()
    rid = new_request(ctx)
    clock.now = T0 + 10 * MIN
    sweep(ctx)
    [root] = messages(ctx, rid, "request")
    notes = [o.payload for o in outbox(ctx, rid, "slack.thread") if o.payload["message_id"] == root.id]
    assert len(notes) == 1 and "<@U0ESC>" in notes[0]["text"]
    raised = [e.data for e in events(ctx, rid) if e.type == "exception.raised"]
    assert [d["kind"] for d in raised] == ["escalated"]
    [exc] = messages(ctx, rid, "exception")
    assert exc.target == "C0SEC"
    assert row(ctx, rid).exceptions[0]["kind"] == "escalated"


# ---------------------------------------------------------------- who may approve when


def test_escalated_person_may_approve_after_the_step_fired_not_before(make):
    ctx, clock = make()
    rid = new_request(ctx)
    clock.now = T0 + 5 * MIN
    early = decide(ctx, request_id=rid, user="U0ESC", decision="approve", channel="DESC")
    assert early.outcome == "refused"
    assert row(ctx, rid).status == "pending"

    clock.now = T0 + 10 * MIN
    sweep(ctx)
    later = decide(ctx, request_id=rid, user="U0ESC", decision="approve", channel="DESC")
    assert later.outcome == "approved"
    r = row(ctx, rid)
    assert r.status == "approved" and r.grant_token
    assert "click.refused" in types(ctx, rid)

    # The decision stopped the ladder: the next step and the expiry never come.
    assert r.due_at == r.grant_expires_at  # only the grant's own deadline is left
    clock.now = T0 + 20 * MIN
    sweep(ctx)
    assert [d["step"] for d in fired(ctx, rid)] == [0]
    assert "request.expired" not in types(ctx, rid)


def test_owner_approves_during_a_step_and_every_copy_is_updated(make):
    ctx, clock = make()
    rid = new_request(ctx)
    clock.now = T0 + 12 * MIN
    sweep(ctx)
    result = decide(ctx, request_id=rid, user="U0OWNER", decision="approve")
    assert result.outcome == "approved"
    updated = {o.payload["message_id"] for o in outbox(ctx, rid, "slack.update")}
    assert {m.id for m in messages(ctx, rid)} <= updated


def test_cancel_stops_the_ladder(make):
    ctx, clock = make()
    rid = new_request(ctx)
    clock.now = T0 + 10 * MIN
    sweep(ctx)
    cancel(ctx, agent_id="deploy-bot", request_id=rid)
    for minutes in (20, 30, 90):
        clock.now = T0 + minutes * MIN
        sweep(ctx)
    assert [d["step"] for d in fired(ctx, rid)] == [0]
    assert row(ctx, rid).status == "cancelled" and row(ctx, rid).due_at is None


# ---------------------------------------------------------------- expiry


def test_expiry_denies_updates_every_copy_and_never_grants(make):
    ctx, clock = make()
    rid = new_request(ctx)
    clock.now = T0 + 30 * MIN
    report = sweep(ctx)
    assert report.escalated == 2 and report.expired == 1

    r = row(ctx, rid)
    assert r.status == "expired" and r.due_at is None and r.grant_token is None
    kinds = types(ctx, rid)
    assert kinds.count("request.expired") == 1
    assert "grant.issued" not in kinds and "decision.recorded" not in kinds
    expired = next(e for e in events(ctx, rid) if e.type == "request.expired")
    assert expired.actor == "signoff" and expired.data["deadline"] == (T0 + 30 * MIN).isoformat()

    # Every copy — the root, each escalation target's, the exception thread — is refreshed.
    msgs = messages(ctx, rid)
    assert {m.role for m in msgs} == {"request", "escalation", "exception"}
    updated = {o.payload["message_id"] for o in outbox(ctx, rid, "slack.update")}
    assert {m.id for m in msgs} <= updated
    assert "expired" in [d["kind"] for d in r.exceptions]

    # The agent sees "expired" with no grant, and a late click changes nothing.
    view = get_request(ctx, agent_id="deploy-bot", request_id=rid)
    assert view["status"] == "expired" and view["grant"] is None
    late = decide(ctx, request_id=rid, user="U0OWNER", decision="approve", channel="C0APPROVALS")
    assert late.outcome == "already" and late.status == "expired"
    assert row(ctx, rid).grant_token is None
    assert "grant.issued" not in types(ctx, rid)

    # Further sweeps do nothing.
    clock.advance(hours=2)
    before = snapshot(ctx, rid)
    assert sweep(ctx).touched == 0
    assert snapshot(ctx, rid) == before


def test_a_click_after_the_deadline_loses_even_before_the_sweep_ran(make):
    ctx, clock = make()
    rid = new_request(ctx)
    clock.now = T0 + 30 * MIN  # deadline reached; no sweep has run yet
    result = decide(ctx, request_id=rid, user="U0OWNER", decision="approve")
    assert result.outcome == "already" and result.status == "expired"
    r = row(ctx, rid)
    assert r.status == "expired" and r.grant_token is None
    # The owed steps were recorded first, in order, then the expiry.
    kinds = types(ctx, rid)
    assert kinds.index("request.expired") > max(i for i, k in enumerate(kinds) if k == "escalation.fired")
    assert [d["step"] for d in fired(ctx, rid)] == [0, 1]
    assert sweep(ctx).touched == 0


def test_a_click_just_before_the_deadline_wins(make):
    ctx, clock = make()
    rid = new_request(ctx)
    clock.now = T0 + 30 * MIN - timedelta(milliseconds=1)
    assert decide(ctx, request_id=rid, user="U0OWNER", decision="approve").outcome == "approved"
    clock.now = T0 + 30 * MIN
    sweep(ctx)
    assert row(ctx, rid).status == "approved"
    assert "request.expired" not in types(ctx, rid)


# ---------------------------------------------------------------- downtime


def assert_done_in_due_order(ctx, ids) -> None:
    """The steps and expiries of ``ids`` were done (event ids are global) in the order they fell due."""
    done = []
    for rid in ids:
        for e in events(ctx, rid):
            if e.type == "escalation.fired":
                done.append((e.id, e.data["due_at"]))
            elif e.type == "request.expired":
                done.append((e.id, e.data["deadline"]))
    done.sort()
    assert [due for _, due in done] == sorted(due for _, due in done)


def test_after_downtime_owed_work_is_done_at_once_in_deadline_order(make):
    ctx, clock = make()
    ids = []
    for offset in (0, 3, 6, 9):
        clock.now = T0 + offset * MIN
        ids.append(new_request(ctx))
    # "down" from minute 9 to minute 37: steps at 10..29 and expiries at 30..36 were missed
    clock.now = T0 + 37 * MIN
    report = sweep(ctx)
    assert report.escalated == 8 and report.expired == 3
    for rid, offset in zip(ids, (0, 3, 6, 9), strict=True):
        data = fired(ctx, rid)
        assert [d["step"] for d in data] == [0, 1]
        for d in data:
            due = T0 + (offset + (10 if d["step"] == 0 else 20)) * MIN
            assert d["due_at"] == due.isoformat()
            assert d["late_seconds"] == (clock.now - due).total_seconds()
    for rid, offset in zip(ids[:3], (0, 3, 6), strict=True):
        exp = next(e for e in events(ctx, rid) if e.type == "request.expired")
        assert exp.data["late_seconds"] == (clock.now - T0 - (offset + 30) * MIN).total_seconds()
    assert row(ctx, ids[3]).status == "pending" and row(ctx, ids[3]).due_at == T0 + 39 * MIN

    # Across requests, the work was done in the order it fell due (event ids are global).
    assert_done_in_due_order(ctx, ids)


def test_a_backlog_larger_than_a_batch_stays_in_deadline_order(make, monkeypatch):
    monkeypatch.setattr(sweep_module, "BATCH", 3)
    ctx, clock = make()
    ids = []
    for i in range(7):
        clock.now = T0 + i * 2 * MIN
        ids.append(new_request(ctx))
    clock.now = T0 + 50 * MIN
    report = sweep(ctx)
    assert report.escalated == 14 and report.expired == 7
    assert_done_in_due_order(ctx, ids)


def test_a_broken_row_does_not_block_the_others(make):
    ctx, clock = make()
    bad, good = new_request(ctx), new_request(ctx)

    def corrupt(s):
        s.execute(update(RequestRow).where(RequestRow.id == bad).values(policy={"nonsense": True}))

    ctx.store.transaction(corrupt)
    clock.now = T0 + 30 * MIN
    report = sweep(ctx)
    assert report.failed == 1 and report.expired == 1
    assert row(ctx, good).status == "expired"
    assert row(ctx, bad).status == "pending" and row(ctx, bad).due_at > clock.now


# ---------------------------------------------------------------- groups, channels, remind, repeat


def test_group_targets_are_expanded_through_the_outbox(make):
    directory = FakeDirectory({"S0ONCALL": {"U0ON1", "U0ON2"}, "C0WIDER": {"U0WIDE"}})
    ctx, clock = make(GROUP_YAML, directory)
    rid = new_request(ctx)
    clock.now = T0 + 10 * MIN
    sweep(ctx)
    [expand] = outbox(ctx, rid, "slack.expand")
    assert expand.payload == {"request_id": rid, "group": "S0ONCALL", "step": 0}
    # the channel gets a post of its own
    assert [m.target for m in messages(ctx, rid, "escalation")] == ["C0WIDER"]
    sweep(ctx)
    assert len(outbox(ctx, rid, "slack.expand")) == 1

    # The outbox handler looks the group up in Slack, then each member gets a DM.
    expand_group(ctx, request_id=rid, group="S0ONCALL", members=["U0ON1", "U0ON2"], step=0)
    before = snapshot(ctx, rid)
    expand_group(ctx, request_id=rid, group="S0ONCALL", members=["U0ON1", "U0ON2"], step=0)  # redelivery
    assert snapshot(ctx, rid) == before
    assert sorted(m.target for m in messages(ctx, rid, "escalation")) == ["C0WIDER", "U0ON1", "U0ON2"]
    posted = {o.payload["message_id"] for o in outbox(ctx, rid, "slack.post")}
    assert {m.id for m in messages(ctx, rid, "escalation")} <= posted

    assert decide(ctx, request_id=rid, user="U0ON2", decision="approve").outcome == "approved"


SPONSOR_STEP_YAML = BASIC_YAML.replace("to: [U0ESC]", "to: [U0SPONSOR, U0ESC, S0ONCALL]")


def test_a_step_never_asks_the_requests_sponsor_directly_or_through_a_group(make):
    # The agent's sponsor is named by the step and is in its group: a copy with buttons
    # would only earn a refused click, so neither the step nor the group's expansion asks them.
    ctx, clock = make(SPONSOR_STEP_YAML, FakeDirectory({"S0ONCALL": {"U0SPONSOR", "U0ON1"}}))
    rid = new_request(ctx)
    clock.now = T0 + 10 * MIN
    sweep(ctx)
    assert [m.target for m in messages(ctx, rid, "escalation")] == ["U0ESC"]
    [step] = fired(ctx, rid)
    assert step["to"] == ["U0SPONSOR", "U0ESC", "S0ONCALL"] and step["not_asked"] == ["U0SPONSOR"]
    expand_group(ctx, request_id=rid, group="S0ONCALL", members=["U0SPONSOR", "U0ON1"], step=0)
    assert sorted(m.target for m in messages(ctx, rid, "escalation")) == ["U0ESC", "U0ON1"]
    last = events(ctx, rid)[-1]
    assert last.type == "escalation.expanded"
    assert last.data["asked"] == ["U0ON1"] and last.data["not_asked"] == ["U0SPONSOR"]
    # Their click stays refused; the people asked decide.
    assert decide(ctx, request_id=rid, user="U0SPONSOR", decision="approve").outcome == "refused"
    assert decide(ctx, request_id=rid, user="U0ON1", decision="approve").outcome == "approved"


def test_a_group_expanded_after_expiry_asks_nobody(make):
    ctx, clock = make(GROUP_YAML, FakeDirectory())
    rid = new_request(ctx)
    clock.now = T0 + 30 * MIN
    sweep(ctx)
    expand_group(ctx, request_id=rid, group="S0ONCALL", members=["U0ON1"], step=0)
    assert "U0ON1" not in {m.target for m in messages(ctx, rid)}
    last = events(ctx, rid)[-1]
    assert last.type == "escalation.expanded" and last.data["asked"] == []


def test_a_repeated_group_step_reminds_members_with_a_copy_and_asks_new_ones(make):
    ctx, clock = make(GROUP_YAML.replace("timeout: 30m", "timeout: 45m\n    repeat: true"), FakeDirectory())
    rid = new_request(ctx)
    clock.now = T0 + 10 * MIN
    sweep(ctx)
    expand_group(ctx, request_id=rid, group="S0ONCALL", members=["U0ON1"], step=0)
    [first] = [m for m in messages(ctx, rid, "escalation") if m.target == "U0ON1"]
    clock.now = T0 + 30 * MIN  # round two, rung one
    sweep(ctx)
    assert [o.payload["step"] for o in outbox(ctx, rid, "slack.expand")] == [0, 2]
    expand_group(ctx, request_id=rid, group="S0ONCALL", members=["U0ON1", "U0ON3"], step=2)
    assert sorted(m.target for m in messages(ctx, rid, "escalation")) == ["C0WIDER", "U0ON1", "U0ON3", "U0PLAT"]
    reminders = [o for o in outbox(ctx, rid, "slack.thread") if o.payload["message_id"] == first.id]
    assert len(reminders) == 1
    # the channel copy from round one was reminded too, not posted again
    [wider] = [m for m in messages(ctx, rid, "escalation") if m.target == "C0WIDER"]
    assert len([o for o in outbox(ctx, rid, "slack.post") if o.payload["message_id"] == wider.id]) == 1
    assert len([o for o in outbox(ctx, rid, "slack.thread") if o.payload["message_id"] == wider.id]) == 1


def test_remind_re_pings_everyone_asked_so_far(make):
    ctx, clock = make(REMIND_YAML)
    rid = new_request(ctx)
    clock.now = T0 + 10 * MIN
    sweep(ctx)
    [esc] = messages(ctx, rid, "escalation")
    clock.now = T0 + 20 * MIN
    sweep(ctx)
    reminders = [o for o in outbox(ctx, rid, "slack.thread") if o.payload["message_id"] == esc.id]
    assert len(reminders) == 1 and "Reminder" in reminders[0].payload["text"]
    # no second copy for anyone
    assert sorted(m.target for m in messages(ctx, rid, "escalation")) == ["U0ESC", "U0PLAT"]
    step = fired(ctx, rid)[1]
    assert step["remind"] is True and step["reminded"] == ["U0ESC"]


def test_repeat_loops_the_ladder_until_the_timeout(make):
    ctx, clock = make(REPEAT_YAML)
    rid = new_request(ctx)
    seen = []
    for minutes in range(0, 70):
        clock.now = T0 + minutes * MIN
        if sweep(ctx).escalated:
            seen.append(minutes)
    # period 20m: rungs at 10, 20, then 30, 40, then 50, 60; the timeout is 65m
    assert seen == [10, 20, 30, 40, 50, 60]
    assert [d["cycle"] for d in fired(ctx, rid)] == [0, 0, 1, 1, 2, 2]
    assert row(ctx, rid).status == "expired"
    # one copy per person; later rounds remind in its thread
    assert sorted(m.target for m in messages(ctx, rid, "escalation")) == ["U0ESC", "U0PLAT"]
    # later rounds are evidence events, not new exceptions
    kinds = [d["kind"] for d in row(ctx, rid).exceptions]
    assert kinds.count("escalated") == 2 and kinds.count("expired") == 1


# ---------------------------------------------------------------- a decision racing an expiry


def _outcome(ctx, rid) -> str:
    r = row(ctx, rid)
    kinds = Counter(types(ctx, rid))
    decided = kinds["request.approved"] + kinds["request.expired"]
    assert decided == 1, f"{rid}: {kinds}"
    if r.status == "approved":
        assert r.grant_token and kinds["grant.issued"] == 1 and kinds["decision.recorded"] == 1
    else:
        assert r.status == "expired"
        assert r.grant_token is None and kinds["grant.issued"] == 0 and kinds["decision.recorded"] == 0
    return r.status


def test_a_decision_committing_inside_the_sweeps_window_loses_cleanly(make, monkeypatch, db_url):
    """Deterministic interleaving: the click has read the request (pending) and is about
    to write when the sweep expires it. The version check makes exactly one win."""
    ctx, clock = make()
    rid = new_request(ctx)
    clock.now = T0 + 30 * MIN - timedelta(seconds=1)  # the click is in time …
    sweep_at = T0 + 30 * MIN  # … the sweep's clock says expired
    original = decide_module.may_decide
    state = {"calls": 0}

    def may_decide_then_race(**kw):
        state["calls"] += 1
        if state["calls"] == 1:
            t = threading.Thread(target=lambda: sweep(ctx, now=sweep_at))
            t.start()
            if db_url.startswith("sqlite"):
                # SQLite: the click's transaction holds the write lock; the sweep waits.
                t.join(0.3)
                state["thread"] = t
            else:
                t.join()  # PostgreSQL: the sweep claims the row and commits first
        return original(**kw)

    monkeypatch.setattr(decide_module, "may_decide", may_decide_then_race)
    result = decide(ctx, request_id=rid, user="U0OWNER", decision="approve")
    if "thread" in state:
        state["thread"].join()
    status = _outcome(ctx, rid)
    if db_url.startswith("sqlite"):
        assert result.outcome == "approved" and status == "approved"
    else:
        # the click's write found a newer version, was retried, and saw the expiry
        assert state["calls"] == 1
        assert result.outcome == "already" and status == "expired"


def test_clicks_racing_the_expiry_in_threads_end_in_exactly_one_outcome(make):
    ctx, clock = make()
    ids = [new_request(ctx) for _ in range(12)]
    clock.now = T0 + 30 * MIN - timedelta(milliseconds=1)  # clicks are (just) in time
    barrier = threading.Barrier(len(ids) + 1)
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def click(rid):
        try:
            barrier.wait()
            results[rid] = decide(ctx, request_id=rid, user="U0OWNER", decision="approve").outcome
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def sweeper():
        try:
            barrier.wait()
            for _ in range(5):
                sweep(ctx, now=T0 + 30 * MIN)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=click, args=(rid,)) for rid in ids] + [threading.Thread(target=sweeper)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    sweep(ctx, now=T0 + 30 * MIN)
    for rid in ids:
        status = _outcome(ctx, rid)
        assert results[rid] == ("approved" if status == "approved" else "already")
