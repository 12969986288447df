"""Use-cases on the in-memory unit of work (tests/fakes/uow.py): no database.

They pin what each use-case records and owes Slack, at the level of the port."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.fakes.uow import FakeRepository, FakeUnitOfWork
from tests.support import BASIC_YAML, SECRETS, T0, FakeClock, submission

from signoff.config import parse_config
from signoff.domain import notes
from signoff.domain.model import Status
from signoff.domain.notes import Note
from signoff.keys import KeyRing, generate
from signoff.slack import notes as slack_notes
from signoff.usecases.decide import decide
from signoff.usecases.effects import RECONCILE_AFTER, Effects
from signoff.usecases.ports import Context
from signoff.usecases.review import review
from signoff.usecases.revoke import revoke
from signoff.usecases.rollback import request_rollback
from signoff.usecases.submit import submit
from signoff.usecases.sweep import sweep


@pytest.fixture
def world(monkeypatch):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    config = parse_config(BASIC_YAML)
    uow, clock = FakeUnitOfWork(), FakeClock()
    ctx = Context(uow=uow, config=lambda: config, keys=KeyRing(active=generate(), retired=[]), clock=clock)
    return ctx, uow, clock


def submitted(ctx, **over) -> str:
    return submit(ctx, agent_id="deploy-bot", body=submission(**over)).request["id"]


def test_submit_records_a_pending_request_and_owes_its_post(world):
    ctx, uow, _clock = world
    result = submit(ctx, agent_id="deploy-bot", body=submission(), idempotency_key="k-1")
    rid = result.request["id"]
    assert result.created and result.request["status"] == "pending"
    assert uow.event_types(rid) == ["request.submitted"]
    assert uow.outbox_kinds(rid) == ["slack.post"]
    (msg,) = uow.messages
    assert (msg.role, msg.target) == ("request", "C0APPROVALS")
    assert uow.outbox[0]["payload"] == {"message_id": msg.id}
    assert uow.ledger == [rid]
    assert uow.requests[rid].due_at == T0 + timedelta(minutes=10)  # the first escalation step


def test_submit_again_with_the_same_key_answers_the_first_request(world):
    ctx, uow, _clock = world
    first = submit(ctx, agent_id="deploy-bot", body=submission(), idempotency_key="k-1")
    again = submit(ctx, agent_id="deploy-bot", body=submission(), idempotency_key="k-1")
    assert not again.created and again.request["id"] == first.request["id"]
    assert len(uow.requests) == 1


def test_an_approval_decides_issues_the_grant_and_refreshes_every_copy(world):
    ctx, uow, _clock = world
    rid = submitted(ctx)
    result = decide(ctx, request_id=rid, user="U0OWNER", decision="approve", channel="C0APPROVALS")
    assert (result.outcome, result.status) == ("approved", "approved")
    req = uow.requests[rid]
    assert req.grant_token and req.grant_claims["jti"] == rid
    assert [d.by for d in uow.decisions] == ["U0OWNER"]
    assert uow.event_types(rid)[-3:] == ["request.approved", "policy.checked", "grant.issued"]
    assert uow.outbox_kinds(rid)[-1] == "slack.update"


def test_a_second_click_is_already_decided_and_changes_nothing(world):
    ctx, uow, _clock = world
    rid = submitted(ctx)
    decide(ctx, request_id=rid, user="U0OWNER", decision="approve")
    decisions, status = len(uow.decisions), uow.requests[rid].status
    again = decide(ctx, request_id=rid, user="U0SECOND", decision="reject", channel="C0APPROVALS")
    assert again.outcome == "already"
    assert (len(uow.decisions), uow.requests[rid].status) == (decisions, status)
    assert uow.event_types(rid)[-1] == "click.repeated"
    assert uow.outbox[-1]["kind"] == "slack.ephemeral"


def test_the_sponsor_is_refused_and_the_refusal_goes_to_security(world):
    ctx, uow, _clock = world
    rid = submitted(ctx)
    result = decide(ctx, request_id=rid, user="U0SPONSOR", decision="approve", channel="C0APPROVALS")
    assert result.outcome == "refused"
    assert uow.requests[rid].status == "pending" and not uow.decisions
    assert "click.refused" in uow.event_types(rid) and "exception.raised" in uow.event_types(rid)
    security = [m for m in uow.messages if m.role == "exception"]
    assert [m.target for m in security] == ["C0SEC"]


def test_sweep_fires_the_due_step_then_expires_at_the_deadline(world):
    ctx, uow, _clock = world
    rid = submitted(ctx)
    assert sweep(ctx, now=T0 + timedelta(minutes=9)).touched == 0
    report = sweep(ctx, now=T0 + timedelta(minutes=10))
    assert report.escalated == 1 and uow.requests[rid].steps_fired == 1
    asked = [m for m in uow.messages if m.role == "escalation"]
    assert [m.target for m in asked] == ["U0ESC"]
    posts = [o for o in uow.outbox if o["kind"] == "slack.post" and o["payload"] == {"message_id": asked[0].id}]
    assert len(posts) == 1
    assert sweep(ctx, now=T0 + timedelta(minutes=10)).touched == 0  # twice does no harm
    report = sweep(ctx, now=T0 + timedelta(minutes=31))
    assert (report.escalated, report.expired) == (1, 1)
    assert uow.requests[rid].status == "expired" and uow.requests[rid].due_at is None
    assert uow.event_types(rid).count("escalation.fired") == 2


def test_a_click_after_the_deadline_loses_to_the_expiry(world):
    ctx, uow, clock = world
    rid = submitted(ctx)
    clock.advance(minutes=31)  # no sweep ran
    result = decide(ctx, request_id=rid, user="U0OWNER", decision="approve")
    assert (result.outcome, result.status) == ("already", "expired")
    assert not uow.decisions


def test_a_transaction_that_raises_leaves_nothing_behind(world):
    ctx, uow, _clock = world
    rid = submitted(ctx)
    before = (len(uow.events), len(uow.outbox), uow.requests[rid].status)

    def broken(repo):
        req = repo.get(rid)
        req.status = "approved"
        repo.append_event(req, "request.approved", "U0OWNER", {}, T0)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        uow.transaction(broken)
    assert (len(uow.events), len(uow.outbox), uow.requests[rid].status) == before


# ------------------------------------------------------------------ refusals, recorded once
def _since(uow, rid, mark_events, mark_outbox):
    return (uow.event_types(rid)[mark_events:], [o["kind"] for o in uow.outbox[mark_outbox:]])


def test_a_stranger_s_revoke_is_refused_recorded_once_and_goes_to_security(world):
    ctx, uow, _clock = world
    rid = submitted(ctx)
    marks = len(uow.event_types(rid)), len(uow.outbox)
    result = revoke(ctx, request_id=rid, user="U0STRANGER", channel="C0APPROVALS")
    assert result.outcome == "refused" and result.message.startswith("Not revoked: only the workflow owner")
    events, kinds = _since(uow, rid, *marks)
    assert events == ["revoke.refused", "exception.raised"]
    assert kinds == ["slack.ephemeral", "slack.post"]  # the answer, then the security thread
    assert uow.outbox[marks[1]]["payload"] == {"channel": "C0APPROVALS", "user": "U0STRANGER", "text": result.message}


def test_revoking_what_no_rule_approved_is_refused_privately_without_an_exception(world):
    ctx, uow, _clock = world
    rid = submitted(ctx)
    marks = len(uow.event_types(rid)), len(uow.outbox)
    result = revoke(ctx, request_id=rid, user="U0OWNER", channel="C0APPROVALS")
    assert result.outcome == "refused" and "only an automatic approval" in result.message
    assert _since(uow, rid, *marks) == (["revoke.refused"], ["slack.ephemeral"])
    assert uow.requests[rid].exceptions == []


def test_a_rollback_asked_for_by_a_stranger_is_refused_once_and_goes_to_security(world):
    ctx, uow, _clock = world
    rid = submitted(ctx)
    marks = len(uow.event_types(rid)), len(uow.outbox)
    result = request_rollback(ctx, request_id=rid, user="U0STRANGER", channel="C0APPROVALS")
    assert result.outcome == "refused" and result.request_id is None
    assert _since(uow, rid, *marks) == (["rollback.refused", "exception.raised"], ["slack.ephemeral", "slack.post"])
    assert len(uow.requests) == 1  # no rollback request


def test_a_rollback_of_a_pending_request_is_refused_without_an_exception_and_no_channel_no_answer(world):
    ctx, uow, _clock = world
    rid = submitted(ctx)
    marks = len(uow.event_types(rid)), len(uow.outbox)
    result = request_rollback(ctx, request_id=rid, user="U0OWNER")
    assert result.outcome == "refused" and "the request is pending" in result.message
    assert _since(uow, rid, *marks) == (["rollback.refused"], [])


def test_a_review_by_anyone_but_the_security_owner_is_refused_once(world):
    ctx, uow, _clock = world
    rid = submitted(ctx)
    marks = len(uow.event_types(rid)), len(uow.outbox)
    result = review(ctx, request_id=rid, user="U0OWNER", channel="C0SEC")
    assert not result.ok
    assert _since(uow, rid, *marks) == (["review.refused"], ["slack.ephemeral"])
    assert uow.requests[rid].reviewed_by is None


# ------------------------------------------------------------------ notes are facts
def test_thread_notes_are_queued_as_facts_and_worded_by_the_slack_adapter(world):
    ctx, uow, _clock = world
    submitted(ctx)
    sweep(ctx, now=T0 + timedelta(minutes=10))
    (root,) = [m for m in uow.messages if m.role == "request"]
    (note,) = [o["payload"] for o in uow.outbox if o["kind"] == "slack.thread"]
    assert note == {
        "message_id": root.id,
        "note": {
            "kind": "escalated",
            "actor": None,
            "data": {"step": 1, "to": ["U0ESC"], "again": 0, "reminder": False},
        },
    }
    # no note_text in this context: worded at delivery
    assert slack_notes.thread_text(note) == "Escalated (step 1): no decision yet, now also asking <@U0ESC>."


def test_with_a_note_text_the_text_is_stored_with_the_facts(world):
    ctx, uow, _clock = world
    ctx.note_text = slack_notes.text
    rid = submitted(ctx)
    sweep(ctx, now=T0 + timedelta(minutes=10))
    sweep(ctx, now=T0 + timedelta(minutes=20))
    notes_ = [o["payload"] for o in uow.outbox if o["kind"] == "slack.thread"]
    assert [n["text"] for n in notes_] == [
        "Escalated (step 1): no decision yet, now also asking <@U0ESC>.",
        "Escalated (step 2): no decision yet, now also asking <@U0PLAT>.",
        "New exception: escalated — step 2 to U0PLAT",
    ]
    assert all(slack_notes.thread_text(n) == n["text"] for n in notes_)
    assert uow.requests[rid].steps_fired == 2


def test_a_row_queued_by_an_older_version_delivers_its_stored_text():
    assert slack_notes.thread_text({"message_id": 1, "text": "<@U1> approved (1 of 2)."}) == "<@U1> approved (1 of 2)."
    # a note this version cannot word falls back to the text stored with it
    assert slack_notes.thread_text({"message_id": 1, "note": {"kind": "from-the-future"}, "text": "hi"}) == "hi"
    with pytest.raises(ValueError):
        slack_notes.thread_text({"message_id": 1, "note": {"kind": "from-the-future"}})


# ------------------------------------------------------------------ the collector's order
def test_a_single_use_case_s_rows_are_written_in_the_order_asked(world):
    ctx, uow, _clock = world
    rid = submitted(ctx)
    req = uow.requests[rid]
    repo = FakeRepository(uow)
    fx = Effects(repo, T0)
    before = len(uow.outbox)
    fx.refresh(req)
    fx.move(req, Status.CANCELLED, actor="deploy-bot")  # a reconciliation, delayed
    fx.refresh(req)  # once per copy per transaction
    fx.answer(req, "C0APPROVALS", "U0OWNER", "hello")
    assert len(uow.outbox) == before  # nothing written until the flush
    fx.flush()
    rows = uow.outbox[before:]
    assert [o["kind"] for o in rows] == ["slack.update", "slack.reconcile", "slack.ephemeral"]
    assert rows[1]["due"] == T0 + RECONCILE_AFTER


def test_a_batch_posts_its_new_escalation_copies_first(world):
    ctx, uow, _clock = world
    rid = submitted(ctx)
    req = uow.requests[rid]
    repo = FakeRepository(uow)
    fx = Effects(repo, T0, batch=True)
    fx.note(req, Note(notes.REMINDER, data={"step": 1}))
    fx.ask(req, "U0ESC", Note(notes.REMINDER, data={"step": 1}))
    fx.enqueue(req, "slack.expand", {"request_id": rid, "group": "S0GROUP", "step": 0}, dedupe_key="x")
    before = len(uow.outbox)
    assert [o["kind"] for o in uow.outbox[before - 1 :]] == ["slack.expand"]  # deduplicated: written at once
    fx.flush()
    (esc,) = [m for m in uow.messages if m.role == "escalation"]
    assert [(o["kind"], o["payload"].get("message_id")) for o in uow.outbox[before:]] == [
        ("slack.post", esc.id),
        ("slack.thread", 1),
    ]
