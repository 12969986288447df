"""submit, decide and sweep on the in-memory unit of work (tests/fakes/uow.py): no database.

They pin what each use-case records and owes Slack, at the level of the port."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.fakes.uow import FakeUnitOfWork
from tests.support import BASIC_YAML, SECRETS, T0, FakeClock, submission

from signoff.config import parse_config
from signoff.keys import KeyRing, generate
from signoff.usecases.decide import decide
from signoff.usecases.ports import Context
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
