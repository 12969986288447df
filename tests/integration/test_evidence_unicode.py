"""Non-ASCII text anywhere in a request never makes an intact chain fail ``evidence verify``,
and tampering with such a request is still caught.

Every free-text field of a request's life carries the text: title, justification, prompt,
the rollback's description and action parameters (keys and values), the action's
parameters, the workflow's description (in the policy snapshot), thread replies and edits,
the outcome's detail and a rejection's reason. The fixed cases run through the CLI on SQLite and PostgreSQL; a
property test puts random Unicode (every plane) into the same fields.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text, update

from signoff.cli import main
from signoff.evidence.verify import verify_store
from signoff.store.repo import Repo
from signoff.store.tables import EventRow, RequestRow
from signoff.usecases.agent_ops import get_request
from signoff.usecases.decide import decide
from signoff.usecases.outcome import record_outcome
from signoff.usecases.reply import record_thread_message
from signoff.usecases.slack_ops import record_posted
from signoff.usecases.submit import submit
from support import DEPLOY_BOT, ROUTING, SECRETS, FakeClock, runtime, submission

CHANNEL = "C0APPROVALS"

TEXTS = {
    "latin": "redémarrer le service « checkout » — déjà fait ?",
    "emoji": "restart 🚀🔥 then 👩‍👩‍👧‍👦 check 🇫🇷",
    "astral": "𝄞 𝕬𝖇𝖈 𠜎𠜱 \U0010fffd \U0001f600",
    "combining": "e\u0301 a\u0308 n\u0303 Z\u0351\u0334\u0322",  # not NFC: free text may be anything
    "rtl": "שלום עולם مرحبا \u202eevil\u202c \u200f",
    "separators": "line\u2028para\u2029end \x85 \ufeff \u00a0",
    "controls": 'tab\tnew\nline\r \x01\x1f\x7f \\ " \': ": {"k": 1}',
    "mixed": "Pаypal (Cyrillic а) ẞ ǅ ﬁ Ω Å",
}

YAML = f"""
agents:
{DEPLOY_BOT}workflows:
  - id: prod-restart
    description: "Redémarrage 🚀 𝄞 — שלום \\u2028 e\\u0301"
{ROUTING}    approvers: [U0OWNER]
    agents: [deploy-bot]
    timeout: 30m
"""


def unicode_submission(t: str) -> dict:
    return submission(
        title=t[:200],
        justification=t,
        prompt=t,
        action={
            "type": "service.restart",
            "target": "checkout-api",
            "environment": "production",
            "parameters": {
                t: t,
                "note": [t, {t: t}],
                "n": 2**53 - 1,
                "tiny": 1e-7,
                "huge": 1e300,
                "neg": -0.0,
                "half": 0.5,
            },
        },
        rollback={
            "description": t,
            "action": {
                "type": "service.restart",
                "target": "checkout-api",
                "parameters": {t: t, "tiny": 1e-7, "n": -(2**53 - 1)},
            },
        },
    )


def live_through(ctx, clock: FakeClock, t: str, n: int) -> str:
    """A request from submission to outcome with ``t`` in every free-text field."""
    rid = submit(ctx, agent_id="deploy-bot", body=unicode_submission(t)).request["id"]
    root = f"1700000{n:03d}.000100"
    msg_id = ctx.store.read(lambda s: Repo(s).messages(rid, role="request")[0].id)
    record_posted(ctx, message_id=msg_id, channel=CHANNEL, ts=root)
    reply_ts = f"1700000{n:03d}.000200"
    assert record_thread_message(
        ctx,
        event={"type": "message", "channel": CHANNEL, "user": "U0OWNER", "text": t, "ts": reply_ts, "thread_ts": root},
        event_id=None,
    )
    assert record_thread_message(
        ctx,
        event={
            "type": "message",
            "subtype": "message_changed",
            "channel": CHANNEL,
            "message": {"user": "U0OWNER", "ts": reply_ts, "text": t + " ✏️", "thread_ts": root},
            "previous_message": {"user": "U0OWNER", "ts": reply_ts, "text": t, "thread_ts": root},
        },
        event_id=None,
    )
    clock.advance(seconds=1)
    assert decide(ctx, request_id=rid, user="U0OWNER", decision="approve", channel=CHANNEL).outcome == "approved"
    assert get_request(ctx, agent_id="deploy-bot", request_id=rid)["status"] == "executing"
    record_outcome(ctx, agent_id="deploy-bot", request_id=rid, body={"status": "failed", "detail": t})
    # and one rejected, with the text as the reason
    other = submit(ctx, agent_id="deploy-bot", body=unicode_submission(t)).request["id"]
    assert (
        decide(ctx, request_id=other, user="U0OWNER", decision="reject", channel=CHANNEL, reason=t).outcome
        == "rejected"
    )
    return rid


@pytest.fixture
def unicode_store(db_url, monkeypatch):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    clock = FakeClock()
    rt = runtime(db_url, YAML, clock=clock, monkeypatch=monkeypatch)
    ids = {name: live_through(rt.context, clock, t, n) for n, (name, t) in enumerate(TEXTS.items())}
    monkeypatch.setenv("SIGNOFF_DATABASE_URL", db_url)
    monkeypatch.delenv("SIGNOFF_SIGNING_KEY", raising=False)
    try:
        yield rt, ids
    finally:
        rt.store.dispose()


def cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_unicode_in_every_field_verifies_through_the_cli(unicode_store, capsys, tmp_path):
    _rt, ids = unicode_store
    code, out, err = cli(capsys, "evidence", "verify")
    assert code == 0, err
    assert f"OK: {2 * len(TEXTS)} request(s)" in out
    for name, rid in ids.items():
        bundle_file = tmp_path / f"{name}.json"
        code, _, err = cli(capsys, "evidence", "export", rid, "-o", str(bundle_file))
        assert code == 0, err
        bundle = json.loads(bundle_file.read_text(encoding="utf-8"))
        assert bundle["request"]["title"] == TEXTS[name][:200]
        assert bundle["request"]["rollback"]["description"] == TEXTS[name]
        code, _, err = cli(capsys, "evidence", "verify-bundle", str(bundle_file))
        assert code == 0, err


def test_real_changes_to_unicode_requests_are_still_caught(unicode_store, capsys):
    """One change on each of four requests: three to request records, one to an event."""
    rt, ids = unicode_store

    def read(rid):
        return rt.store.read(
            lambda s: s.execute(
                select(RequestRow.title, RequestRow.action, RequestRow.rollback).where(RequestRow.id == rid)
            ).one()
        )

    changed = {}
    with rt.store.engine.begin() as conn:

        def set_row(rid, **values):
            conn.execute(update(RequestRow).where(RequestRow.id == rid).values(**values))

        _, _, rollback = read(ids["astral"])
        set_row(ids["astral"], rollback={**rollback, "description": rollback["description"] + "𝄞"})
        changed[ids["astral"]] = "the request record's rollback differs"
        title, _, _ = read(ids["emoji"])
        set_row(ids["emoji"], title=title.replace("🚀", "🛸"))
        changed[ids["emoji"]] = "the request record's title differs"
        _, action, _ = read(ids["latin"])
        set_row(ids["latin"], action={**action, "parameters": dict(action["parameters"], tiny=2e-7)})
        changed[ids["latin"]] = "the request record's action does not hash to its action_sha256"
    rid = ids["rtl"]
    id_, seq, data = rt.store.read(
        lambda s: s.execute(
            select(EventRow.id, EventRow.seq, EventRow.data).where(
                EventRow.request_id == rid, EventRow.type == "thread.reply"
            )
        ).one()
    )
    with rt.store.engine.begin() as conn:
        conn.execute(
            update(EventRow)
            .where(EventRow.id == id_)
            .values(data=dict(data, text=data["text"].replace("\u202e", "\u202d")))
        )
    changed[rid] = f"event seq {seq}: hash mismatch"

    code, out, err = cli(capsys, "evidence", "verify")
    assert code == 1
    assert "FAILED: request " in err and "OK" not in out
    failures = verify_store(rt.store, rt.context.keys).failures
    assert len(failures) == len(changed), failures
    for rid, what in changed.items():
        assert any(f.startswith(f"request {rid}") and what in f for f in failures), (rid, what, failures)


def test_unicode_stored_escaped_or_reordered_still_verifies(unicode_store, capsys):
    """Data text that is not the canonical form (\\u escapes, spaces, keys in code-point
    order) takes the full path and still verifies."""
    rt, _ids = unicode_store
    cast = "CAST(:t AS json)" if rt.store.dialect == "postgresql" else ":t"
    with rt.store.engine.begin() as conn:
        for id_, data in conn.execute(text("SELECT id, data FROM events")).all():
            value = json.loads(data) if isinstance(data, str) else data
            conn.execute(
                text(f"UPDATE events SET data = {cast} WHERE id = :i"),
                {"t": json.dumps(value, sort_keys=True), "i": id_},
            )
        for id_, rollback in conn.execute(text("SELECT id, rollback FROM requests")).all():
            value = json.loads(rollback) if isinstance(rollback, str) else rollback
            conn.execute(
                text(f"UPDATE requests SET rollback = {cast} WHERE id = :i"), {"t": json.dumps(value), "i": id_}
            )
    code, _out, err = cli(capsys, "evidence", "verify")
    assert code == 0, err


# -- property: random Unicode in every free-text field --------------------------------------------

# what the agent API refuses in text: NUL and lone surrogates (category Cs)
free_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)


def test_random_unicode_in_every_field_keeps_verify_green(db_url, monkeypatch):
    clock = FakeClock()
    rt = runtime(db_url, YAML, clock=clock, monkeypatch=monkeypatch)
    ctx = rt.context
    counter = iter(range(10_000))

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(title=free_text, body=free_text, key=free_text, reply=free_text, detail=free_text)
    def check(title, body, key, reply, detail):
        n = next(counter)
        # a title of only whitespace is refused as empty: keep one visible character
        sub = submission(
            title=("T" + title)[:200],
            justification=body,
            prompt=body + title,
            action={
                "type": "service.restart",
                "target": "checkout-api",
                "parameters": {key: body, "list": [reply, detail]},
            },
            rollback={
                "description": detail,
                "action": {"type": "service.restart", "target": "checkout-api", "parameters": {key: reply}},
            },
        )
        rid = submit(ctx, agent_id="deploy-bot", body=sub).request["id"]
        root = f"1800{n:06d}.000100"
        msg_id = ctx.store.read(lambda s: Repo(s).messages(rid, role="request")[0].id)
        record_posted(ctx, message_id=msg_id, channel=CHANNEL, ts=root)
        record_thread_message(
            ctx,
            event={
                "type": "message",
                "channel": CHANNEL,
                "user": "U0OWNER",
                "text": reply,
                "ts": f"1800{n:06d}.000200",
                "thread_ts": root,
            },
            event_id=None,
        )
        assert decide(ctx, request_id=rid, user="U0OWNER", decision="approve", channel=CHANNEL).outcome == "approved"
        get_request(ctx, agent_id="deploy-bot", request_id=rid)
        record_outcome(ctx, agent_id="deploy-bot", request_id=rid, body={"status": "succeeded", "detail": detail})
        other = submit(ctx, agent_id="deploy-bot", body=sub).request["id"]
        assert (
            decide(ctx, request_id=other, user="U0OWNER", decision="reject", channel=CHANNEL, reason=reply).outcome
            == "rejected"
        )
        result = verify_store(rt.store, ctx.keys)
        assert result.ok, result.failures

    try:
        check()
    finally:
        rt.store.dispose()
