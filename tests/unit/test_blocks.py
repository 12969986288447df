"""Block Kit rendering: buttons, outcome lines, untrusted text, Slack's size limits."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signoff.slack import blocks
from signoff.slack.blocks import indented_json
from signoff.slack.card import RequestCard, cards
from signoff.slack.ids import REVIEW_MODAL, ActionId

RID = "01J9Z3REQUEST0000000000001"
EVIDENCE = "https://signoff.example/evidence/01J9Z3REQUEST0000000000001?exp=1780000000&sig=abc_DEF-123"
TRUSTED_IDS = {"U0OWNER", "U0PLATFORM", "U0SECURITY", "U0SPONSOR", "U0APPROVER1", "U0APPROVER2"}

ALLOWED_TOKENS = [
    re.compile(r"^<!date\^\d+\^\{date_short_pretty\} \{time\}\|\d{4}-\d\d-\d\d \d\d:\d\d UTC>$"),
    re.compile(r"^<@(U0[A-Z0-9]+)>$"),
    re.compile(r"^<https://signoff\.example/evidence/[^|<>\s]+\|Open the evidence>$"),
]

EVIL = (
    "<!channel> <!here> <!everyone> <@U123> <!subteam^S0EVIL> <http://evil.example|Approve here> "
    "@here @channel @Everyone *✅ Approved by the owner* _italic_ ~strike~ "
    "```\n<!channel> escaped the fence\n``` `inline` &lt;!channel&gt; \u202eevil\u202c"
)


def make_request(**over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "id": RID,
        "status": "pending",
        "workflow": "prod-restart",
        "title": "Restart checkout-api in prod-eu",
        "action": {
            "type": "service.restart",
            "target": "checkout-api",
            "environment": "production",
            "parameters": {"graceful": True},
        },
        "action_sha256": "ab" * 32,
        "risk": "high",
        "justification": "p99 latency doubled after the 14:02 deploy",
        "rollback": {"description": "no rollback needed: restart is idempotent"},
        "parent_id": None,
        "rollback_of": None,
        "submitted_by": "deploy-bot",
        "executor": "deploy-bot",
        "sponsor": "U0SPONSOR",
        "created_at": "2026-03-02T09:00:00Z",
        "deadline": "2026-03-02T10:00:00Z",
        "not_before": None,
        "policy_sha256": "cd" * 32,
        "decisions": [],
        "grant": None,
        "grant_expires_at": None,
        "outcome": None,
        "prompt": "Checkout is slow since the last deploy. Find out why and fix it.",
        "owners": {"owner": "U0OWNER", "platform_owner": "U0PLATFORM", "security_owner": "U0SECURITY"},
        "required_approvals": 1,
        "approvers": ["U0OWNER"],
        "steps_fired": 0,
        "exceptions": [],
        "reviewed_by": None,
        "reviewed_at": None,
        "evidence_url": EVIDENCE,
    }
    r.update(over)
    return r


card = RequestCard.from_view  # the renderer takes cards; the tests write the query's plain data


def evil_request(**over: Any) -> dict[str, Any]:
    big = ("A" * 1000 + EVIL) * 100  # ~ 100 KB+
    return make_request(
        title=EVIL,
        justification=EVIL * 20,
        prompt=EVIL + big,
        action={"type": EVIL, "target": EVIL, "environment": EVIL, "parameters": {"note": EVIL, EVIL: [EVIL]}},
        rollback={"description": EVIL * 30, "action": {"type": EVIL}},
        submitted_by="deploy-bot",
        workflow=EVIL,
        **over,
    )


# ---------------------------------------------------------------------------------------
# helpers


def texts(obj: Any) -> list[str]:
    """Every string Slack will render from a block tree (text objects, fields, options)."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "text" and isinstance(v, str):
                out.append(v)
            else:
                out.extend(texts(v))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(texts(v))
    return out


def assert_inert(text: str, *, trusted: set[str] = TRUSTED_IDS) -> None:
    """No mention, broadcast or link token except the ones the renderer itself makes."""
    for token in re.findall(r"<[^<>]*>", text):
        m = next((p.match(token) for p in ALLOWED_TOKENS if p.match(token)), None)
        assert m, f"untrusted token {token!r} in {text[:200]!r}"
        if token.startswith("<@"):
            assert m.group(1) in trusted, token
    stripped = text
    for p in ALLOWED_TOKENS:
        stripped = re.sub(p.pattern.strip("^$"), "", stripped)
    for bad in ("<!", "<@", "<http", "<#"):
        assert bad not in stripped, (bad, text[:200])
    assert not re.search(r"@(channel|here|everyone)", text, re.IGNORECASE), text[:200]
    assert "\u202e" not in text
    # fences come in pairs: untrusted text never opens or closes one
    assert text.count("```") % 2 == 0, text


def assert_all_inert(fallback: str, blks: list[dict]) -> None:
    assert_inert(fallback)
    for t in texts(blks):
        assert_inert(t)


def assert_limits(fallback: str, blks: list[dict]) -> None:
    assert len(fallback) <= blocks.MAX_FALLBACK
    assert len(blks) <= blocks.MAX_BLOCKS
    for b in blks:
        if b["type"] == "header":
            assert len(b["text"]["text"]) <= blocks.MAX_HEADER
            assert b["text"]["type"] == "plain_text"
        if b["type"] == "section":
            if "text" in b:
                assert len(b["text"]["text"]) <= blocks.MAX_SECTION
            for f in b.get("fields", []):
                assert len(f["text"]) <= blocks.MAX_FIELD
            assert len(b.get("fields", [])) <= 10
        if b["type"] == "context":
            assert len(b["elements"]) <= 10
            for e in b["elements"]:
                assert len(e["text"]) <= blocks.MAX_CONTEXT
        if b["type"] == "actions":
            for e in b["elements"]:
                assert len(e["value"]) <= blocks.MAX_BUTTON_VALUE
                assert len(e["text"]["text"]) <= blocks.MAX_BUTTON_TEXT
                if "confirm" in e:
                    assert len(e["confirm"]["title"]["text"]) <= blocks.MAX_CONFIRM_TITLE
                    assert len(e["confirm"]["text"]["text"]) <= blocks.MAX_CONFIRM_TEXT
    json.dumps(blks)  # serialisable as the Web API needs


def actions(blks: list[dict]) -> list[dict]:
    return [e for b in blks if b["type"] == "actions" for e in b["elements"]]


def all_text(blks: list[dict]) -> str:
    return "\n".join(texts(blks))


def mrkdwn_text(obj: Any) -> str:
    """Only the mrkdwn text objects: the ones Slack parses for formatting."""
    if isinstance(obj, dict):
        if obj.get("type") == "mrkdwn" and isinstance(obj.get("text"), str):
            return obj["text"]
        return "\n".join(mrkdwn_text(v) for v in obj.values())
    if isinstance(obj, list):
        return "\n".join(mrkdwn_text(v) for v in obj)
    return ""


# ---------------------------------------------------------------------------------------
# the request message


def test_ids():
    assert [a.value for a in ActionId] == [
        "signoff.approve",
        "signoff.reject",
        "signoff.review",
        "signoff.revoke",
        "signoff.rollback",
        "signoff.reject_reason",
        "signoff.step_up",
    ]
    assert REVIEW_MODAL == "signoff.review_modal"


def test_pending_has_both_buttons_with_the_request_id():
    fallback, blks = blocks.request_message(card(make_request()))
    acts = [b for b in blks if b["type"] == "actions"]
    assert len(acts) == 1 and acts[0]["block_id"] == "signoff.decision"
    approve, reject, with_reason = acts[0]["elements"]
    assert (with_reason["action_id"], with_reason["value"]) == ("signoff.reject_reason", RID)
    assert (approve["action_id"], approve["value"], approve["style"]) == ("signoff.approve", RID, "primary")
    assert (reject["action_id"], reject["value"], reject["style"]) == ("signoff.reject", RID, "danger")
    assert approve["text"]["text"] == "Approve" and reject["text"]["text"] == "Reject"
    assert "confirm" in approve  # high risk
    assert "Approval needed" in fallback and "Restart checkout-api in prod-eu" in fallback
    assert_limits(fallback, blks)
    assert_all_inert(fallback, blks)


@pytest.mark.parametrize("risk, confirm", [("low", False), ("medium", False), ("high", True), ("critical", True)])
def test_confirm_dialog_only_for_high_and_critical(risk, confirm):
    _, blks = blocks.request_message(card(make_request(risk=risk)))
    approve = actions(blks)[0]
    assert ("confirm" in approve) is confirm
    assert blocks.RISK_EMOJI[risk] in all_text(blks)


def test_details_shown():
    _, blks = blocks.request_message(
        card(make_request(required_approvals=2, approvers=["U0OWNER", "U0APPROVER1", "U0APPROVER2"]))
    )
    text = all_text(blks)
    assert blks[0]["type"] == "header" and blks[0]["text"]["text"] == "Restart checkout-api in prod-eu"
    assert "`prod-restart`" in text and "`checkout-api`" in text and "`production`" in text
    assert "`deploy-bot` (human sponsor <@U0SPONSOR>)" in text
    assert "<!date^1772445600^{date_short_pretty} {time}|2026-03-02 10:00 UTC>" in text  # deadline
    assert "2 of 3" in text
    expected = json.dumps(make_request()["action"], sort_keys=True, indent=2)
    assert f"```\n{expected}\n```" in text
    assert "sha256: `" + "ab" * 32 + "`" in text
    assert "no rollback needed: restart is idempotent" in text
    assert "owner <@U0OWNER>, platform owner <@U0PLATFORM>, security owner <@U0SECURITY>" in text
    assert "Prompt excerpt* (agent-supplied" in text and "Find out why and fix it." in text


def test_no_rollback_and_no_prompt():
    _, blks = blocks.request_message(card(make_request(rollback=None, prompt=None, risk="low")))
    text = all_text(blks)
    assert "none given" in text and "Prompt excerpt" not in text


def test_partial_quorum():
    r = make_request(
        required_approvals=2,
        approvers=["U0APPROVER1", "U0APPROVER2"],
        decisions=[{"by": "U0APPROVER1", "decision": "approve", "at": "2026-03-02T09:10:00Z"}],
    )
    _, blks = blocks.request_message(card(r))
    assert "Approvals so far: <@U0APPROVER1> (1 of 2)" in all_text(blks)
    assert [a["action_id"] for a in actions(blks)] == ["signoff.approve", "signoff.reject", "signoff.reject_reason"]


def test_a_typed_confirmation_replaces_the_confirm_dialog():
    _, blks = blocks.request_message(card(make_request(risk="critical", typed_confirmation=True)))
    approve = actions(blks)[0]
    assert "confirm" not in approve and approve["text"]["text"] == "Approve…"
    assert "type the target exactly" in all_text(blks)


def test_modals_carry_the_request_id_and_escape_agent_text():
    r = make_request(action={"type": "db.drop", "target": "<!channel> orders", "environment": "production"})
    view = blocks.confirm_modal(card(r))
    assert view["callback_id"] == "signoff.confirm" and view["private_metadata"] == RID
    assert "<!channel>" not in json.dumps(view)
    reason = blocks.reject_reason_modal(RID)
    assert reason["callback_id"] == "signoff.reject_reason" and reason["private_metadata"] == RID


def test_a_rejection_shows_its_reason_escaped():
    r = make_request(
        status="rejected",
        decisions=[
            {"by": "U0APPROVER1", "decision": "reject", "at": "2026-03-02T09:10:00Z", "reason": "<@U0ALL> not now"}
        ],
    )
    _, blks = blocks.request_message(card(r))
    text = all_text(blks)
    assert "Reason given" in text and "not now" in text and "<@U0ALL>" not in text
    assert not actions(blks)


def test_escalation_role_adds_a_leading_line():
    fallback, blks = blocks.request_message(card(make_request()), role="escalation")
    assert "Escalated to you: no decision yet from the owner." in blks[0]["text"]["text"].replace("*", "")
    assert fallback.startswith("Escalated")
    assert actions(blks)
    _, closed = blocks.request_message(card(make_request(status="cancelled")), role="escalation")
    assert not actions(closed)


APPROVE = {"by": "U0OWNER", "decision": "approve", "at": "2026-03-02T09:05:00Z"}
APPROVED_AT = "<!date^1772442300^{date_short_pretty} {time}|2026-03-02 09:05 UTC>"


@pytest.mark.parametrize(
    "over, expected",
    [
        (
            {"status": "approved", "decisions": [APPROVE]},
            [f"✅ Approved by <@U0OWNER> at {APPROVED_AT}", "Grant issued"],
        ),
        (
            {
                "status": "rejected",
                "decisions": [{"by": "U0OWNER", "decision": "reject", "at": "2026-03-02T09:05:00Z"}],
            },
            [f"❌ Rejected by <@U0OWNER> at {APPROVED_AT}"],
        ),
        (
            {
                "status": "rejected",
                "decisions": [
                    APPROVE,
                    {"by": "policy:executor no longer allowed", "decision": "reject", "at": "2026-03-02T09:06:00Z"},
                ],
            },
            ["✅ Approved by <@U0OWNER>", "❌ Rejected by policy (executor no longer allowed) at <!date^"],
        ),
        (
            {"status": "expired"},
            [
                (
                    "⌛ Expired at <!date^1772445600^{date_short_pretty} {time}|2026-03-02 10:00 UTC>"
                    " — no decision (denied)"
                )
            ],
        ),
        (
            {"status": "expired", "required_approvals": 2, "decisions": [APPROVE]},
            ["quorum not reached: <@U0OWNER> (1 of 2) (denied)"],
        ),
        (
            {"status": "expired", "decisions": [APPROVE], "grant_expires_at": "2026-03-02T09:20:00Z"},
            ["✅ Approved by <@U0OWNER>", "⌛ Approval lapsed"],
        ),
        ({"status": "cancelled"}, ["🚫 Cancelled by the agent `deploy-bot`"]),
        ({"status": "executing", "decisions": [APPROVE]}, ["✅ Approved by <@U0OWNER>", "▶️ Executing"]),
        (
            {
                "status": "succeeded",
                "decisions": [APPROVE],
                "outcome": {
                    "status": "succeeded",
                    "detail": "restarted 6/6 pods",
                    "at": "2026-03-02T09:07:00Z",
                    "by": "deploy-bot",
                },
            },
            ["✅ Approved by <@U0OWNER>", "✅ Succeeded — reported by `deploy-bot` at <!date^", "restarted 6/6 pods"],
        ),
        (
            {
                "status": "failed",
                "decisions": [APPROVE],
                "outcome": {
                    "status": "failed",
                    "detail": "pod crashloop",
                    "at": "2026-03-02T09:07:00Z",
                    "by": "deploy-bot",
                },
            },
            ["✅ Approved by <@U0OWNER>", "💥 Failed", "pod crashloop"],
        ),
    ],
)
def test_no_buttons_after_a_decision_and_the_outcome_names_who(over, expected):
    fallback, blks = blocks.request_message(card(make_request(**over)))
    assert not any(b["type"] == "actions" for b in blks)
    last = blks[-1]["text"]["text"]
    for piece in expected:
        assert piece in last, (piece, last)
    assert "Approval needed" not in fallback
    assert_limits(fallback, blks)
    assert_all_inert(fallback, blks)


# ---------------------------------------------------------------------------------------
# untrusted text


@pytest.mark.parametrize(
    "status", ["pending", "approved", "rejected", "expired", "cancelled", "executing", "succeeded", "failed"]
)
@pytest.mark.parametrize("role", ["request", "escalation"])
def test_injection_cannot_mention_link_or_break_out(status, role):
    over: dict[str, Any] = {"status": status, "decisions": [APPROVE]}
    if status in ("succeeded", "failed"):
        over["outcome"] = {"status": status, "detail": EVIL * 50, "at": "2026-03-02T09:07:00Z", "by": "deploy-bot"}
    r = evil_request(**over)
    fallback, blks = blocks.request_message(card(r), role=role)
    assert_all_inert(fallback, blks)
    assert_limits(fallback, blks)
    # the header is plain text and cannot be parsed for tokens at all
    assert blks[1 if role == "escalation" else 0]["type"] == "header"


def test_escaped_text_still_reads_the_same():
    _, blks = blocks.request_message(card(make_request(justification="a < b && c > d <!channel>")))
    assert "a &lt; b &amp;&amp; c &gt; d &lt;!channel&gt;" in all_text(blks)


def test_fence_breakout_is_contained():
    good = mrkdwn_text(blocks.request_message(card(make_request()))[1])
    bad = mrkdwn_text(
        blocks.request_message(
            card(
                make_request(
                    justification="x\n```\n*Approved* <@U123>\n```",
                    prompt="```",
                    rollback={"description": "``````"},
                    action={"type": "a`b", "target": "```", "parameters": {"k": "```"}},
                )
            )
        )[1]
    )
    assert good.count("```") == bad.count("```")
    assert "*Action*\n`aˋb`" in bad  # inline code has no raw backtick inside
    assert '"type": "a`b"' in bad  # the exact action keeps it: one backtick cannot close a fence


def test_large_prompt_is_cut_with_a_visible_notice():
    prompt = "p" * 100_000
    _, blks = blocks.request_message(card(make_request(prompt=prompt)))
    section = next(b for b in blks if "Prompt excerpt" in b.get("text", {}).get("text", ""))
    text = section["text"]["text"]
    assert "p" * 500 in text and "p" * 501 not in text
    assert "… (truncated, 99500 more characters)" in text


def test_long_texts_are_cut_within_limits_with_a_notice():
    r = make_request(
        title="T" * 200,
        justification="J" * 4000,
        rollback={"description": "R" * 4000},
        action={"type": "t", "target": "x", "parameters": {"blob": "B" * 200_000}},
    )
    fallback, blks = blocks.request_message(card(r))
    assert_limits(fallback, blks)
    assert blks[0]["text"]["text"].endswith("more characters)")
    text = all_text(blks)
    assert text.count("truncated") >= 4
    assert "sha256: `" + "ab" * 32 + "`" in text  # the hash survives a cut action


def test_every_cut_keeps_the_text_well_formed():
    # escaping triples the size: cuts must not split an entity nor leave a fence open
    _, blks = blocks.request_message(card(make_request(justification="<&>" * 2000, prompt="<" * 3000)))
    for t in texts(blks):
        assert not re.search(r"&(?!(amp|lt|gt);)", t), t[-80:]
        assert t.count("```") % 2 == 0


def test_bidi_and_invisible_characters_are_visible_in_the_action():
    r = make_request(action={"type": "t", "target": "checkout-api\u200b", "parameters": {"x": "\u202e@here"}})
    text = all_text(blocks.request_message(card(r))[1])
    assert "checkout-api\\u200b" in text and "\\u202e\\u0040here" in text


def test_button_value_respects_the_limit():
    r = make_request(id="X" * 5000)
    fallback, blks = blocks.request_message(card(r))
    assert_limits(fallback, blks)


# ---------------------------------------------------------------------------------------
# exception thread, modal, home, slash commands

EXC = [
    {"kind": "rejected", "at": "2026-03-02T09:05:00Z", "detail": ""},
    {"kind": "refused_click", "at": "2026-03-02T09:04:00Z", "detail": "U0SPONSOR is the agent's sponsor"},
]


def test_exception_message_with_review_button():
    fallback, blks = blocks.exception_message(card(make_request(status="rejected", exceptions=EXC)))
    (button,) = actions(blks)
    assert (button["action_id"], button["value"], button["text"]["text"]) == ("signoff.review", RID, "Mark reviewed")
    text = all_text(blks)
    assert "Restart checkout-api in prod-eu" in text and RID in text and "`prod-restart`" in text
    assert "`rejected`" in text and "`refused_click`" in text
    assert f"<{EVIDENCE.replace('&', '&amp;')}|Open the evidence>" in text
    assert "security owner <@U0SECURITY>" in text and "<@U0SPONSOR>" in text and "`deploy-bot`" in text
    assert "Security review needed" in fallback
    assert_limits(fallback, blks)
    assert_all_inert(fallback, blks)


def test_exception_message_once_reviewed():
    r = make_request(status="rejected", exceptions=EXC, reviewed_by="U0SECURITY", reviewed_at="2026-03-02T11:00:00Z")
    fallback, blks = blocks.exception_message(card(r))
    assert not actions(blks)
    assert "Reviewed by <@U0SECURITY> at <!date^" in all_text(blks)
    assert_all_inert(fallback, blks)


def test_exception_message_with_hostile_content():
    exc = [{"kind": EVIL, "at": "not a date " + EVIL, "detail": EVIL * 10}] * 40
    r = evil_request(status="failed", exceptions=exc, evidence_url="http://evil.example|x> <!channel>")
    fallback, blks = blocks.exception_message(card(r))
    assert_limits(fallback, blks)
    assert_all_inert(fallback, blks)
    assert "Open the evidence" not in all_text(blks)
    assert "more exception(s)" in all_text(blks)


def test_review_modal():
    view = blocks.review_modal(RID)
    assert view["type"] == "modal" and view["callback_id"] == "signoff.review_modal"
    assert view["private_metadata"] == RID
    assert view["submit"]["text"] == "Mark reviewed"
    (inp,) = [b for b in view["blocks"] if b["type"] == "input"]
    assert inp["block_id"] == "comment" and inp["optional"] is True
    assert inp["element"] == {"type": "plain_text_input", "action_id": "comment", "multiline": True, "max_length": 3000}
    assert len(view["title"]["text"]) <= 24


def test_ephemeral_text():
    assert blocks.ephemeral_text("You may not approve") == "You may not approve"
    assert_inert(blocks.ephemeral_text(EVIL * 200))
    assert len(blocks.ephemeral_text(EVIL * 200)) <= blocks.MAX_SECTION


def test_home_view_shape():
    pending = [make_request(id=f"R{i}", title=f"Request {i}") for i in range(3)]
    view = blocks.home_view(cards(pending), None)
    assert view["type"] == "home"
    text = all_text(view["blocks"])
    assert "Request 0" in text and "`R2`" in text and "🟠 high" in text and "`pending`" in text
    assert "Exceptions to review" not in text
    assert not actions(view["blocks"])

    exc = [make_request(id="E1", status="rejected", exceptions=EXC)]
    view = blocks.home_view([], cards(exc))
    text = all_text(view["blocks"])
    assert "Nothing is waiting" in text and "Exceptions to review" in text and "`E1`" in text
    assert "`refused_click`" in text
    assert "No unreviewed exceptions." in all_text(blocks.home_view([], [])["blocks"])


def test_home_view_many_and_hostile_items_stay_within_limits():
    many = [evil_request(id=f"R{i}") for i in range(60)]
    view = blocks.home_view(cards(many), cards(copy.deepcopy(many)))
    assert len(view["blocks"]) <= blocks.MAX_BLOCKS
    assert_all_inert("", view["blocks"])
    assert_limits("", view["blocks"])
    assert "… and 40 more" in all_text(view["blocks"])


def test_summary_lines_and_detail_text():
    assert blocks.request_summary_lines([]) == ""
    lines = blocks.request_summary_lines(cards([make_request(), make_request(id="R2", title="Second")]))
    assert lines.count("\n") == 1 and RID in lines and "Second" in lines
    detail = blocks.request_detail_text(card(make_request(status="approved", decisions=[APPROVE])))
    assert "Restart checkout-api in prod-eu" in detail and "approve" in detail and "<@U0OWNER>" in detail
    assert "sha256" in detail and "```" in detail

    hostile = [evil_request(id=f"R{i}") for i in range(200)]
    text = blocks.request_summary_lines(cards(hostile))
    assert len(text) <= blocks.MAX_FALLBACK and "more" in text
    assert_inert(text)
    detail = blocks.request_detail_text(
        card(evil_request(status="failed", decisions=[APPROVE], outcome={"status": "failed", "detail": EVIL * 100}))
    )
    assert len(detail) <= blocks.MAX_FALLBACK
    assert_inert(detail)


@pytest.mark.parametrize(
    "r",
    [
        make_request(),
        make_request(risk="low", required_approvals=2, decisions=[APPROVE]),
        make_request(
            status="failed",
            decisions=[APPROVE],
            outcome={"status": "failed", "detail": "x", "at": "2026-03-02T09:07:00Z", "by": "deploy-bot"},
        ),
        evil_request(exceptions=EXC),
    ],
)
def test_slack_sdk_models_accept_the_blocks(r):
    """slack_sdk's own Block Kit models parse, validate and round-trip every block unchanged."""
    models = pytest.importorskip("slack_sdk.models.blocks")
    views = pytest.importorskip("slack_sdk.models.views")
    for render in (blocks.request_message, blocks.exception_message):
        for b in render(card(r))[1]:
            parsed = models.Block.parse(b)
            parsed.validate_json()
            assert parsed.to_dict() == b
    for view in (blocks.review_modal(RID), blocks.home_view(cards([r]), cards([r]))):
        parsed = views.View(**view)
        parsed.validate_json()
        assert parsed.to_dict() == view


def _action_ids(blocks: list[dict]) -> list[str]:
    return [e.get("action_id") for b in blocks if b.get("type") == "actions" for e in b.get("elements", [])]


def test_follow_up_buttons_after_a_decision():
    from signoff.slack.blocks import request_message

    _, blocks = request_message(card(make_request(status="approved", revocable=True, auto_approved_by="nightly")))
    assert _action_ids(blocks) == ["signoff.revoke"]
    assert "Approved by policy" in str(blocks) and "nightly" in str(blocks)
    _, blocks = request_message(card(make_request(status="succeeded", can_roll_back=True)))
    assert _action_ids(blocks) == ["signoff.rollback"]
    _, blocks = request_message(card(make_request(status="succeeded", can_roll_back=True)), role="escalation")
    assert _action_ids(blocks) == []
    _, blocks = request_message(card(make_request(status="rejected")))
    assert _action_ids(blocks) == []


# ---------------------------------------------------------------------------------------
# look-alike identifiers


def _field(blks: list[dict], label: str) -> str:
    for b in blks:
        for f in b.get("fields", []):
            if f["text"].startswith(f"*{label}*\n"):
                return f["text"].split("\n", 1)[1]
    raise AssertionError(f"no field {label!r}")


def test_mixed_scripts_are_named_in_a_visible_warning():
    r = make_request(action={"type": "service.restart", "target": "checkоut-api", "environment": "prоduction"})
    for status in ("pending", "approved"):
        fallback, blks = blocks.request_message(card({**r, "status": status}))
        text = all_text(blks)
        assert ":warning: mixed scripts in target: Latin + Cyrillic" in text
        assert ":warning: mixed scripts in environment: Latin + Cyrillic" in text
        assert "action type" not in text
        assert_all_inert(fallback, blks)
        assert_limits(fallback, blks)
    # the approval dialog of a high-risk request says it too
    confirm = actions(blocks.request_message(card(r))[1])[0]["confirm"]["text"]["text"]
    assert "mixed scripts in target, environment" in confirm.lower()


def test_single_script_identifiers_carry_no_warning():
    for env in ("production", "среда", "本番環境", None):
        r = make_request(action={"type": "service.restart", "target": "checkout-api", "environment": env})
        assert "mixed scripts" not in all_text(blocks.request_message(card(r))[1])


def test_invisible_characters_in_identifier_fields_are_shown():
    r = make_request(
        action={"type": "db.drop\u2060", "target": "checkout-api\u200b", "environment": "prod\ufeff"},
        executor="deploy-bot\u200d",
    )
    blks = blocks.request_message(card(r))[1]
    assert _field(blks, "Target") == "`checkout-api\\u200b`"
    assert _field(blks, "Action") == "`db.drop\\u2060`"
    assert _field(blks, "Environment") == "`prod\\ufeff`"
    assert _field(blks, "Executor") == "`deploy-bot\\u200d`"


def test_step_up_shows_approve_as_a_link_and_reject_as_a_button():
    r = {
        "id": "req-1",
        "status": "pending",
        "title": "t",
        "risk": "critical",
        "action": {"type": "a", "target": "b"},
        "step_up_url": "https://signoff.example.com/step-up/req-1",
    }
    _, bl = blocks.request_message(card(r))
    [actions] = [b for b in bl if b.get("type") == "actions"]
    approve, reject, reject_reason = actions["elements"]
    assert approve["action_id"] == "signoff.step_up" and approve["value"] == "req-1"
    assert approve["url"] == "https://signoff.example.com/step-up/req-1" and "confirm" not in approve
    assert reject["action_id"] == "signoff.reject" and "url" not in reject
    assert reject_reason["action_id"] == "signoff.reject_reason"
    decided = blocks.request_message(card({**r, "status": "approved"}))[1]
    assert not any(b.get("type") == "actions" for b in decided)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_json_values)
def test_indented_json_writes_what_json_dumps_writes(value):
    """The action's JSON in a message: the same characters as json.dumps with these options
    (NaN and infinities included, which it leaves to json.dumps)."""
    assert indented_json(value) == json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, default=str)
