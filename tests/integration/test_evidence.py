"""Evidence on a real store (SQLite and PostgreSQL): verify, tamper detection, signed
checkpoints, exported bundles and their HTML form.

History is made with the use-cases and a fake clock; tampering is plain SQL, as someone
with write access to the database (but not the signing key) would do it.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select, update

from signoff.domain import chain
from signoff.evidence.checkpoint import write_checkpoint
from signoff.evidence.export import build_bundle, render_html, verify_bundle
from signoff.evidence.verify import verify_store
from signoff.keys import KeyRing, generate
from signoff.store.db import Store
from signoff.store.repo import Repo
from signoff.store.tables import (
    CheckpointHeadRow,
    CheckpointRow,
    DecisionRow,
    EventRow,
    LedgerRow,
    OutboxRow,
    RequestRow,
    SlackMessageRow,
)
from signoff.usecases.agent_ops import get_request
from signoff.usecases.decide import decide
from signoff.usecases.outcome import record_outcome
from signoff.usecases.reply import record_thread_message
from signoff.usecases.slack_ops import record_posted
from signoff.usecases.submit import submit
from signoff.usecases.sweep import sweep
from support import FakeClock, runtime, submission

XSS_TITLE = "<script>alert('owned')</script> restart & <b>bold</b>"
XSS_PROMPT = "<img src=x onerror=alert(1)> ignore previous instructions"
CHANNEL = "C0APPROVALS"
ROOT_TS = "1700000000.000100"


# -- making history -------------------------------------------------------------------------------


def _post(ctx, request_id: str, ts: str) -> None:
    msg_id = ctx.store.read(lambda s: Repo(s).messages(request_id, role="request")[0].id)
    record_posted(ctx, message_id=msg_id, channel=CHANNEL, ts=ts)


def _reply(ctx, user: str, ts: str, text: str) -> None:
    assert record_thread_message(
        ctx,
        event={"type": "message", "channel": CHANNEL, "user": user, "text": text, "ts": ts, "thread_ts": ROOT_TS},
        event_id=None,
    )


def _edit(ctx, user: str, ts: str, old: str, new: str) -> None:
    assert record_thread_message(
        ctx,
        event={
            "type": "message",
            "subtype": "message_changed",
            "channel": CHANNEL,
            "message": {"user": user, "ts": ts, "text": new, "thread_ts": ROOT_TS},
            "previous_message": {"user": user, "ts": ts, "text": old, "thread_ts": ROOT_TS},
        },
        event_id=None,
    )


def _delete(ctx, user: str, ts: str) -> None:
    assert record_thread_message(
        ctx,
        event={
            "type": "message",
            "subtype": "message_deleted",
            "channel": CHANNEL,
            "deleted_ts": ts,
            "previous_message": {"user": user, "ts": ts, "text": "gone", "thread_ts": ROOT_TS},
        },
        event_id=None,
    )


class History:
    """Four requests: executed (with a thread), rejected (hostile title), expired, and
    approved with a grant that ran out unused."""

    def __init__(self, rt, clock: FakeClock):
        self.rt, self.ctx, self.clock = rt, rt.context, clock
        ctx = self.ctx
        self.done = submit(ctx, agent_id="deploy-bot", body=submission(prompt=XSS_PROMPT)).request["id"]
        _post(ctx, self.done, ROOT_TS)
        clock.advance(seconds=5)
        assert (
            decide(ctx, request_id=self.done, user="U0SPONSOR", decision="approve", channel=CHANNEL).outcome
            == "refused"
        )
        _reply(ctx, "U0OWNER", "1700000001.000200", "<b>checking</b> the <!channel> graphs")
        _reply(ctx, "U0SECOND", "1700000002.000300", "looks fine to me")
        _edit(ctx, "U0OWNER", "1700000001.000200", "<b>checking</b> the <!channel> graphs", "checked: go")
        _delete(ctx, "U0SECOND", "1700000002.000300")
        clock.advance(seconds=5)
        assert (
            decide(ctx, request_id=self.done, user="U0OWNER", decision="approve", channel=CHANNEL).outcome == "approved"
        )
        assert decide(ctx, request_id=self.done, user="U0SECOND", decision="approve").outcome == "already"
        clock.advance(seconds=5)
        assert get_request(ctx, agent_id="deploy-bot", request_id=self.done)["status"] == "executing"
        record_outcome(
            ctx, agent_id="deploy-bot", request_id=self.done, body={"status": "succeeded", "detail": "restarted <fine>"}
        )

        clock.advance(seconds=5)
        self.rejected = submit(ctx, agent_id="deploy-bot", body=submission(title=XSS_TITLE)).request["id"]
        assert decide(ctx, request_id=self.rejected, user="U0SECOND", decision="reject").outcome == "rejected"

        clock.advance(seconds=5)
        self.expired = submit(ctx, agent_id="other-bot", body=submission()).request["id"]
        self.unused = submit(ctx, agent_id="deploy-bot", body=submission(title="grant never used")).request["id"]
        assert decide(ctx, request_id=self.unused, user="U0OWNER", decision="approve").outcome == "approved"
        clock.advance(minutes=11)
        sweep(ctx)  # escalates `expired`; the grant of `unused` ran out
        clock.advance(minutes=20)
        sweep(ctx)  # `expired` expires
        self.ids = [self.done, self.rejected, self.expired, self.unused]

    @property
    def store(self) -> Store:
        return self.rt.store

    @property
    def keys(self) -> KeyRing:
        return self.ctx.keys

    def events(self, request_id: str) -> list[EventRow]:
        def read(session):
            rows = Repo(session).events(request_id)
            session.expunge_all()  # keep them readable after the read transaction ends
            return rows

        return self.store.read(read)

    def sql(self, *statements) -> None:
        with self.store.engine.begin() as conn:
            for stmt in statements:
                conn.execute(stmt)

    def verify(self, **kw):
        return verify_store(self.store, self.keys, **kw)

    def checkpoint(self, later=timedelta(minutes=1)):
        return write_checkpoint(self.store, self.keys, self.clock() + later)


@pytest.fixture
def hist(db_url, monkeypatch):
    clock = FakeClock()
    rt = runtime(db_url, clock=clock, monkeypatch=monkeypatch)
    try:
        yield History(rt, clock)
    finally:
        rt.store.dispose()


def _delete_request(h: History, rid: str, *, ledger: bool) -> None:
    stmts = [
        delete(DecisionRow).where(DecisionRow.request_id == rid),
        delete(SlackMessageRow).where(SlackMessageRow.request_id == rid),
        delete(OutboxRow).where(OutboxRow.request_id == rid),
        delete(EventRow).where(EventRow.request_id == rid),
        delete(RequestRow).where(RequestRow.id == rid),
    ]
    if ledger:
        stmts.append(delete(LedgerRow).where(LedgerRow.request_id == rid))
    h.sql(*stmts)


# -- verify -----------------------------------------------------------------------------------------


def test_verify_intact_store(hist):
    seen = []
    result = hist.verify(progress=seen.append)
    total = hist.store.read(lambda s: s.scalar(select(func.count()).select_from(EventRow)))
    assert result.ok, result.failures
    assert result.failure is None
    assert result.checked_requests == 4
    assert result.checked_events == total > 30
    assert seen and seen[-1] == total
    types = {e.type for rid in hist.ids for e in hist.events(rid)}
    assert {
        "request.submitted",
        "click.refused",
        "click.repeated",
        "decision.recorded",
        "grant.issued",
        "request.executing",
        "request.succeeded",
        "request.rejected",
        "escalation.fired",
        "request.expired",
        "grant.expired_without_outcome",
        "exception.raised",
        "thread.reply",
        "thread.edited",
        "thread.deleted",
        "policy.checked",
    } <= types


def test_verify_in_two_processes(hist):
    result = hist.verify(workers=2)
    assert result.ok, result.failures
    assert result.checked_requests == 4
    # and a failure found by the second process is reported too
    last = sorted(hist.ids, key=lambda rid: rid)[-1]
    ev = hist.events(last)[1]
    hist.sql(update(EventRow).where(EventRow.id == ev.id).values(actor="U0INTRUDER"))
    result = hist.verify(workers=2)
    assert not result.ok
    assert f"request {last} event seq 2: hash mismatch" in result.failure


def test_changed_event_data_is_named(hist):
    ev = next(e for e in hist.events(hist.done) if e.type == "decision.recorded")
    hist.sql(update(EventRow).where(EventRow.id == ev.id).values(data={"decision": "reject", "channel": CHANNEL}))
    result = hist.verify()
    assert not result.ok
    assert result.failure.startswith(f"request {hist.done} event seq {ev.seq}: hash mismatch")
    assert "decision.recorded" in result.failure


def test_data_stored_as_canonical_text_verifies_and_tampering_still_shows(hist):
    """verify hashes canonical text as stored (the fast way) and parses anything else."""
    from sqlalchemy import text

    from signoff.domain.canonical import canonical_json

    cast = "CAST(:t AS json)" if hist.store.dialect == "postgresql" else ":t"
    with hist.store.engine.begin() as conn:
        rows = conn.execute(text("SELECT id, data FROM events")).all()
        for id_, data in rows:
            value = json.loads(data) if isinstance(data, str) else data
            conn.execute(
                text(f"UPDATE events SET data = {cast} WHERE id = :i"), {"t": canonical_json(value).decode(), "i": id_}
            )
    result = hist.verify()
    assert result.ok, result.failures
    ev = next(e for e in hist.events(hist.done) if e.type == "decision.recorded")
    with hist.store.engine.begin() as conn:
        conn.execute(
            text(f"UPDATE events SET data = {cast} WHERE id = :i"),
            {"t": '{"channel":"C0APPROVALS","decision":"reject"}', "i": ev.id},
        )
    assert hist.verify().failure.startswith(f"request {hist.done} event seq {ev.seq}: hash mismatch")


def test_deleted_middle_event_is_named(hist):
    ev = hist.events(hist.done)[2]
    hist.sql(delete(EventRow).where(EventRow.id == ev.id))
    result = hist.verify()
    assert not result.ok
    assert result.failure.startswith(f"request {hist.done} event seq 3: missing")


def test_swapped_events_are_named(hist):
    a, b = hist.events(hist.done)[1:3]
    hist.sql(
        update(EventRow).where(EventRow.id == a.id).values(seq=-1),
        update(EventRow).where(EventRow.id == b.id).values(seq=a.seq),
        update(EventRow).where(EventRow.id == a.id).values(seq=b.seq),
    )
    result = hist.verify()
    assert not result.ok
    assert result.failure.startswith(f"request {hist.done} event seq 2: prev_hash does not link to seq 1")


def test_deleted_last_event_is_named(hist):
    events = hist.events(hist.rejected)
    hist.sql(delete(EventRow).where(EventRow.id == events[-1].id))
    result = hist.verify()
    assert not result.ok
    assert result.failure == (
        f"request {hist.rejected} event seq {len(events)}: missing — the request records "
        f"{len(events)} event(s), the chain ends at seq {len(events) - 1}"
    )


def test_rewritten_request_record_is_named(hist):
    hist.sql(update(RequestRow).where(RequestRow.id == hist.rejected).values(title="harmless"))
    result = hist.verify()
    assert not result.ok
    assert result.failure == (
        f"request {hist.rejected}: the request record's title differs from its request.submitted event (seq 1)"
    )
    hist.sql(
        update(RequestRow).where(RequestRow.id == hist.rejected).values(title=XSS_TITLE),
        update(RequestRow).where(RequestRow.id == hist.expired).values(action={"type": "db.drop", "target": "prod"}),
    )
    assert hist.verify().failure == (
        f"request {hist.expired}: the request record's action does not hash to its action_sha256"
    )


def test_deleted_request_is_named(hist):
    _delete_request(hist, hist.rejected, ledger=False)
    result = hist.verify()
    assert not result.ok
    assert result.failure.startswith(f"request {hist.rejected}: deleted — ledger entry seq 2 names it")


def test_deleted_request_with_its_ledger_entry_breaks_the_ledger(hist):
    _delete_request(hist, hist.rejected, ledger=True)
    result = hist.verify()
    assert not result.ok
    assert result.failure.startswith("ledger seq 2: missing")


# -- checkpoints ----------------------------------------------------------------------------------


def test_checkpoint_written_once_and_verified(hist):
    row = hist.checkpoint()
    assert row is not None and row.ledger_seq == 4 and row.kid == hist.keys.active.kid
    assert hist.checkpoint(later=timedelta(minutes=2)) is None  # nothing changed
    assert hist.checkpoint(later=timedelta(minutes=1, seconds=1)) is None  # younger than min_interval
    result = hist.verify()
    assert result.ok, result.failures
    assert result.checkpoint["id"] == row.id
    # new activity → a new checkpoint once it has settled
    hist.clock.advance(minutes=5)
    decide(hist.ctx, request_id=hist.done, user="U0OWNER", decision="reject")
    newer = hist.checkpoint()
    assert newer is not None and newer.id > row.id and newer.heads_digest != row.heads_digest
    # a fresh process (no memory of the last checkpoint) agrees nothing changed since
    other = Store(hist.store.url)
    try:
        assert write_checkpoint(other, hist.keys, hist.clock() + timedelta(minutes=3)) is None
    finally:
        other.dispose()
    assert hist.verify().ok


def test_truncation_hidden_in_the_request_record_is_caught_by_the_checkpoint(hist, caplog):
    hist.checkpoint()
    events = hist.events(hist.done)
    hist.sql(
        delete(EventRow).where(EventRow.id == events[-1].id),
        update(RequestRow)
        .where(RequestRow.id == hist.done)
        .values(event_count=len(events) - 1, head_hash=events[-2].hash),
    )
    result = hist.verify()
    assert not result.ok
    # named down to the event, from the copy of the heads kept with the checkpoint
    assert result.failure.startswith(f"request {hist.done} event seq {len(events)}: gone — checkpoint ")
    assert f"it now ends at seq {len(events) - 1}" in result.failure
    assert len(result.failures) == 1
    # and no new checkpoint launders it, in this process or a fresh one, once there is news
    hist.clock.advance(minutes=5)
    decide(hist.ctx, request_id=hist.rejected, user="U0OWNER", decision="approve")
    with caplog.at_level(logging.ERROR, logger="signoff.evidence.checkpoint"):
        assert hist.checkpoint() is None
    assert any("checkpoint refused" in r.message for r in caplog.records)
    other = Store(hist.store.url)
    try:
        with caplog.at_level(logging.ERROR, logger="signoff.evidence.checkpoint"):
            assert write_checkpoint(other, hist.keys, hist.clock() + timedelta(minutes=1)) is None
    finally:
        other.dispose()
    assert any(
        f"request {hist.done} had {len(events)} event(s), now {len(events) - 1}" in r.message for r in caplog.records
    )


def test_checkpoint_failure_unnamed_when_its_kept_heads_were_changed_too(hist):
    hist.checkpoint()
    events = hist.events(hist.done)
    hist.sql(
        delete(EventRow).where(EventRow.id == events[-1].id),
        update(RequestRow)
        .where(RequestRow.id == hist.done)
        .values(event_count=len(events) - 1, head_hash=events[-2].hash),
        update(CheckpointHeadRow)
        .where(CheckpointHeadRow.request_id == hist.done)
        .values(seq=len(events) - 1, hash=events[-2].hash),
    )
    result = hist.verify()
    assert not result.ok
    assert result.failure.startswith("checkpoint ") and "no longer match the signed heads" in result.failure
    assert "cannot be told" in result.failure


def test_kept_heads_are_not_trusted_and_are_repaired(hist):
    row = hist.checkpoint()
    kept = hist.store.read(lambda s: s.scalar(select(func.count()).select_from(CheckpointHeadRow)))
    assert kept == 4  # one per request, as signed
    hist.sql(delete(CheckpointHeadRow).where(CheckpointHeadRow.request_id == hist.done))
    assert hist.verify().ok  # the store itself is intact; the copy is only a help
    # a process that did not write the checkpoint recomputes what it signed, then repairs the copy
    other = Store(hist.store.url)
    try:
        newer = write_checkpoint(other, hist.keys, hist.clock() + timedelta(minutes=3))
    finally:
        other.dispose()
    assert newer is not None and newer.id > row.id and newer.heads_digest == row.heads_digest
    assert hist.store.read(lambda s: s.scalar(select(func.count()).select_from(CheckpointHeadRow))) == 4
    events = hist.events(hist.rejected)
    hist.sql(
        update(EventRow).where(EventRow.id == events[1].id).values(actor="U0SOMEONE"),
        delete(EventRow).where(EventRow.id == events[-1].id),
        update(RequestRow)
        .where(RequestRow.id == hist.rejected)
        .values(event_count=len(events) - 1, head_hash=events[-2].hash),
    )
    result = hist.verify()
    assert result.failure.startswith(f"request {hist.rejected} event seq 2: hash mismatch")
    assert any(f.startswith(f"request {hist.rejected} event seq {len(events)}: gone") for f in result.failures)


def test_newest_request_deleted_entirely_is_caught_by_the_checkpoint(hist):
    hist.checkpoint()
    newest = hist.store.read(lambda s: s.scalar(select(LedgerRow.request_id).order_by(LedgerRow.seq.desc())))
    _delete_request(hist, newest, ledger=True)
    result = hist.verify()
    assert not result.ok
    assert result.failure.startswith("checkpoint ") and "ledger entry seq 4 is gone" in result.failure


def test_forged_checkpoint_is_caught(hist):
    hist.checkpoint()
    hist.sql(update(CheckpointRow).values(heads_digest="0" * 64))
    result = hist.verify()
    assert not result.ok
    assert "the signature does not verify" in result.failure
    # verified with a JWKS that lacks the key: named as such
    stranger = KeyRing(active=generate(), retired=[])
    assert "no public key with kid" in verify_store(hist.store, stranger.jwks()).failure


# -- bundles ---------------------------------------------------------------------------------------


def test_bundle_verifies_and_carries_the_story(hist):
    bundle = build_bundle(hist.store, hist.keys, hist.done, hist.clock())
    jwks = hist.keys.jwks()
    ok, reason = verify_bundle(bundle, jwks)
    assert ok, reason
    again = json.loads(json.dumps(bundle, indent=2, ensure_ascii=False))  # written to a file and read back
    assert verify_bundle(again, jwks)[0]
    assert verify_bundle(again, hist.keys)[0]

    req = bundle["request"]
    for key in (
        "id",
        "workflow",
        "title",
        "action",
        "action_sha256",
        "risk",
        "justification",
        "prompt",
        "rollback",
        "parent_id",
        "submitted_by",
        "executor",
        "sponsor",
        "status",
        "created_at",
        "deadline",
        "decided_at",
        "policy_sha256",
    ):
        assert key in req
    assert req["prompt"] == XSS_PROMPT
    assert bundle["status"] == req["status"] == "succeeded"
    assert bundle["owners"] == {"owner": "U0OWNER", "platform_owner": "U0PLAT", "security_owner": "U0SEC"}
    assert [(d["by"], d["decision"]) for d in bundle["decisions"]] == [("U0OWNER", "approve")]
    assert [(d["by"], d["reason"] is not None) for d in bundle["refused_clicks"]] == [("U0SPONSOR", True)]
    assert [d["by"] for d in bundle["repeated_clicks"]] == ["U0SECOND"]
    for e in bundle["events"]:
        assert set(e) == {"seq", "at", "type", "actor", "data", "prev_hash", "hash"}
    refused = next(e for e in bundle["events"] if e["type"] == "click.refused")
    assert refused["actor"] == "U0SPONSOR"
    # the thread, with the edit applied and the deletion marked
    thread = bundle["thread"]
    assert [(m["user"], m["text"], m["deleted"]) for m in thread] == [
        ("U0OWNER", "checked: go", False),
        ("U0SECOND", "looks fine to me", True),
    ]
    assert thread[0]["edits"][0]["previous_text"] == "<b>checking</b> the <!channel> graphs"
    assert {"user", "ts", "text"} <= set(thread[0])
    # the grant's claims, never the token
    token = hist.store.read(lambda s: s.get(RequestRow, hist.done).grant_token)
    assert bundle["grant"]["claims"]["jti"] == hist.done and bundle["grant"]["claims"]["sub"] == "deploy-bot"
    assert bundle["grant"]["delivered"]["how"] == "pull"
    if token:
        assert token not in json.dumps(bundle)
    assert bundle["outcome"]["status"] == "succeeded" and bundle["outcome"]["by"] == "deploy-bot"
    ids = {(c["framework"].split()[0], c["id"]) for c in bundle["controls"]}
    assert {
        ("NIST", "GV.OC"),
        ("NIST", "GV.RR"),
        ("OWASP", "ASI01"),
        ("OWASP", "ASI02"),
        ("OWASP", "ASI03"),
        ("CSA", "L7"),
        ("CSA", "L6"),
    } <= ids
    for c in bundle["controls"]:
        assert c["status"] in ("evidenced", "not evidenced", "not applicable")
        assert all(isinstance(x["seq"], int) for x in c["events"])
    assert bundle["integrity"] == {"ok": True, "problems": []}
    assert bundle["signature"]["alg"] == "Ed25519" and bundle["signature"]["kid"] == hist.keys.active.kid


def test_altered_bundle_fails(hist):
    bundle = build_bundle(hist.store, hist.keys, hist.done, hist.clock())
    jwks = hist.keys.jwks()

    changed = copy.deepcopy(bundle)
    next(e for e in changed["events"] if e["type"] == "decision.recorded")["data"]["decision"] = "reject"
    ok, reason = verify_bundle(changed, jwks)
    assert not ok and "signature" in reason

    changed = copy.deepcopy(bundle)
    changed["status"] = "rejected"
    assert not verify_bundle(changed, jwks)[0]

    # re-signed by someone else's key: not in the JWKS
    from signoff.evidence.export import sign_bundle

    stranger = KeyRing(active=generate(), retired=[])
    ok, reason = verify_bundle(sign_bundle(changed, stranger), jwks)
    assert not ok and "no public key" in reason

    # signed with our key over a broken chain (a signer bug): the chain check names it
    broken = copy.deepcopy(bundle)
    del broken["events"][2]
    ok, reason = verify_bundle(sign_bundle(broken, hist.keys), jwks)
    assert not ok and reason.startswith(f"request {hist.done} event seq 3: missing")

    unsigned = {k: v for k, v in bundle.items() if k != "signature"}
    assert verify_bundle(unsigned, jwks) == (False, "the bundle has no signature")


def test_bundle_of_unknown_request(hist):
    with pytest.raises(LookupError):
        build_bundle(hist.store, hist.keys, "no-such-request", hist.clock())


def test_bundle_flags_a_tampered_chain(hist):
    ev = hist.events(hist.rejected)[0]
    hist.sql(update(EventRow).where(EventRow.id == ev.id).values(actor="someone-else"))
    bundle = build_bundle(hist.store, hist.keys, hist.rejected, hist.clock())
    assert bundle["integrity"]["ok"] is False
    assert bundle["integrity"]["problems"][0].startswith(f"request {hist.rejected} event seq 1: hash mismatch")
    # the signature still verifies (it vouches for what the store held), the chain does not
    ok, reason = verify_bundle(bundle, hist.keys.jwks())
    assert not ok and "hash mismatch" in reason


def test_html_escapes_agent_and_user_text(hist):
    html = render_html(build_bundle(hist.store, hist.keys, hist.rejected, hist.clock()))
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html
    assert "http://" not in html.replace("http://127.0.0.1", "") and "<link" not in html and "<script" not in html
    page = render_html(build_bundle(hist.store, hist.keys, hist.done, hist.clock()))
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<b>checking</b>" not in page and "&lt;b&gt;checking&lt;/b&gt;" in page
    for text in (
        "U0OWNER",
        "U0PLAT",
        "U0SEC",
        "succeeded",
        "Timeline",
        "GV.RR",
        "ASI01",
        "Ed25519",
        "decision.recorded",
        "checked: go",
        "restarted &lt;fine&gt;",
    ):
        assert text in page, text
    assert page.count("<tr>") > len(hist.events(hist.done))


def test_events_hash_as_the_reference_chain(hist):
    """The fast canonical form the verifier uses agrees with ``domain.chain`` on real events."""
    from signoff.evidence.canon import event_hash

    for rid in hist.ids:
        for e in hist.events(rid):
            body = chain.event_body(rid, e.seq, e.at, e.type, e.actor, e.data)
            assert chain.link(e.prev_hash, body) == e.hash
            assert event_hash(e.prev_hash, rid, e.seq, e.at, e.type, e.actor, json.dumps(e.data)) == e.hash
