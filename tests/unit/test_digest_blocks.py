"""Digest rendering: one section and one set of buttons per request, decided ones without
buttons, agent text inert, within Slack's limits at the most a digest holds."""

from __future__ import annotations

import pytest
from test_blocks import APPROVE, EXC, actions, all_text, assert_all_inert, assert_limits, evil_request, make_request

from signoff.slack import blocks
from signoff.slack.card import RequestCard
from signoff.slack.ids import ActionId

REJECT = {"by": "U0APPROVER1", "decision": "reject", "at": "2026-03-02T09:05:00Z", "reason": "not now"}


def _items(n: int, **over) -> list[tuple[str, dict]]:
    return [("request", make_request(id=f"01REQ{i:04d}", title=f"Restart service {i}", **over)) for i in range(n)]


def _cards(items: list[tuple[str, dict]]) -> list[tuple[str, RequestCard]]:
    return [(role, RequestCard.from_view(r)) for role, r in items]


def _buttons_by_request(blks: list[dict]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in actions(blks):
        out.setdefault(e["value"], set()).add(e["action_id"])
    return out


def test_each_pending_request_has_its_own_approve_and_reject():
    items = _items(blocks.DIGEST_MAX)
    fallback, blks = blocks.digest_message("decide", _cards(items))
    by = _buttons_by_request(blks)
    assert set(by) == {r["id"] for _role, r in items}
    for ids in by.values():
        assert {ActionId.APPROVE.value, ActionId.REJECT.value, ActionId.REJECT_REASON.value} <= ids
    assert blks[0]["type"] == "header" and blks[0]["text"]["text"] == "10 requests need a decision"
    block_ids = [b["block_id"] for b in blks if "block_id" in b]
    assert len(block_ids) == len(set(block_ids)), "block ids are unique within a message"
    for i in range(blocks.DIGEST_MAX):
        assert f"Restart service {i}" in all_text(blks)
    assert "Restart service 0" in fallback
    assert_limits(fallback, blks)


def test_a_decided_request_shows_its_outcome_and_no_buttons():
    items = _items(3)
    items[1] = ("request", {**items[1][1], "status": "rejected", "decisions": [REJECT]})
    items[2] = ("request", {**items[2][1], "status": "approved", "decisions": [APPROVE]})
    _fallback, blks = blocks.digest_message("decide", _cards(items))
    by = _buttons_by_request(blks)
    assert set(by) == {items[0][1]["id"]}
    text = all_text(blks)
    assert "Rejected by <@U0APPROVER1>" in text and "not now" in text
    assert "Approved by <@U0OWNER>" in text
    assert blks[0]["text"]["text"] == "1 of 3 requests still need a decision"
    all_decided = [("request", {**r, "status": "expired"}) for _role, r in items]
    _fb, blks = blocks.digest_message("decide", _cards(all_decided))
    assert actions(blks) == []
    assert blks[0]["text"]["text"] == "3 requests, all decided"


def test_never_more_than_the_maximum_per_message():
    fallback, blks = blocks.digest_message("decide", _cards(_items(blocks.DIGEST_MAX + 5)))
    assert len(_buttons_by_request(blks)) == blocks.DIGEST_MAX
    assert_limits(fallback, blks)


def test_typed_confirmation_and_escalation_marks():
    items = [
        ("escalation", make_request(id="01REQA", risk="critical", typed_confirmation=True)),
        ("request", make_request(id="01REQB", risk="high")),
    ]
    _fb, blks = blocks.digest_message("decide", _cards(items))
    approve = {e["value"]: e for e in actions(blks) if e["action_id"] == ActionId.APPROVE.value}
    assert approve["01REQA"]["text"]["text"] == "Approve…" and "confirm" not in approve["01REQA"]
    assert "confirm" in approve["01REQB"], "high risk keeps its confirm dialog"
    assert "Escalated to you" in all_text(blks)


@pytest.mark.parametrize("status", ["pending", "rejected", "failed"])
def test_hostile_agent_text_stays_inert_and_within_limits(status):
    items = [
        (
            "request",
            evil_request(
                id=f"01EVIL{i}",
                status=status,
                decisions=[REJECT],
                outcome={"status": "failed", "detail": "x" * 5000, "by": "deploy-bot"},
            ),
        )
        for i in range(blocks.DIGEST_MAX)
    ]
    fallback, blks = blocks.digest_message("decide", _cards(items))
    assert_all_inert(fallback, blks)
    assert_limits(fallback, blks)


def test_exception_digest_has_review_buttons_until_reviewed():
    items = [("exception", make_request(id=f"01EXC{i}", exceptions=EXC)) for i in range(4)]
    items[0] = ("exception", {**items[0][1], "reviewed_by": "U0SECURITY", "reviewed_at": "2026-03-02T09:30:00Z"})
    fallback, blks = blocks.digest_message("exception", _cards(items))
    by = _buttons_by_request(blks)
    assert set(by) == {f"01EXC{i}" for i in (1, 2, 3)}
    assert all(ids == {ActionId.REVIEW.value} for ids in by.values())
    assert "Reviewed by <@U0SECURITY>" in all_text(blks)
    assert "Open the evidence" in all_text(blks)
    assert blks[0]["text"]["text"] == "🛡️ 3 of 4 exceptions still to review"
    assert_limits(fallback, blks)
    evil = [("exception", evil_request(id=f"01EV{i}", exceptions=EXC * 20)) for i in range(blocks.DIGEST_MAX)]
    fallback, blks = blocks.digest_message("exception", _cards(evil))
    assert_all_inert(fallback, blks)
    assert_limits(fallback, blks)


def test_slack_sdk_models_accept_digest_blocks():
    models = pytest.importorskip("slack_sdk.models.blocks")
    items = _items(2) + [("request", make_request(id="01DONE", status="rejected", decisions=[REJECT]))]
    for kind in ("decide", "exception"):
        for b in blocks.digest_message(kind, _cards(items))[1]:
            parsed = models.Block.parse(b)
            parsed.validate_json()
            assert parsed.to_dict() == b


def test_thread_note_names_its_request_and_escapes_the_title():
    note = blocks.digest_thread_note("01REQ1", "<!channel> *bold*", "Escalated (step 1).")
    assert "01REQ1" in note and "Escalated (step 1)." in note
    assert "<!channel>" not in note
