"""Digests against the fake Slack, on SQLite and PostgreSQL, with a fake clock that the
pacer follows too: a burst to one channel becomes a few posts and then digest messages,
every request shown exactly once and within digest_after, each with its evidence event;
a decision updates its digest in place; digest_after 0 keeps one post per request; an
exception burst to the security channel is digested the same way."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from signoff.outbox.dispatcher import Dispatcher
from signoff.slack.app import web_client
from signoff.slack.delivery import SlackDelivery
from signoff.slack.pacing import Pacer
from signoff.store.repo import Repo
from signoff.store.tables import EventRow, OutboxRow
from signoff.usecases.decide import decide
from signoff.usecases.submit import submit
from support import BASIC_YAML, FakeClock, runtime, submission


def _yaml(digest_after: str) -> str:
    return BASIC_YAML.replace("    timeout: 30m\n", f"    timeout: 30m\n    digest_after: {digest_after}\n")


class Env:
    def __init__(self, db_url, monkeypatch, fake, digest_after: str = "5s"):
        self.clock = FakeClock()
        self.rt = runtime(db_url, _yaml(digest_after), clock=self.clock, monkeypatch=monkeypatch)
        self.ctx = self.rt.context
        self.fake = fake
        self.pacer = Pacer(clock=lambda: self.clock().timestamp())
        delivery = SlackDelivery(self.ctx, web_client("xoxb-test", fake.url), self.pacer)
        self.dispatcher = Dispatcher(self.ctx, delivery.handlers(), workers=4)
        self.dispatcher.plan = delivery.plan
        self.t0 = self.clock()

    def submit(self, n: int) -> list[str]:
        return [
            submit(self.ctx, agent_id="deploy-bot", body=submission(title=f"Restart #{i}")).request["id"]
            for i in range(n)
        ]

    def run(self, until, seconds: float = 60.0, step: float = 0.25) -> float:
        """Deliver, moving the clock by ``step`` whenever nothing is due, until ``until()``;
        returns the fake seconds that took."""
        start = self.clock()
        while not until():
            if not self.dispatcher.run_once():
                self.clock.advance(seconds=step)
            assert (self.clock() - start).total_seconds() <= seconds, "not delivered in time"
        return (self.clock() - start).total_seconds()

    def posted_events(self, rid: str, role: str) -> list[SimpleNamespace]:
        return self.ctx.store.read(
            lambda s: [
                SimpleNamespace(type=e.type, data=dict(e.data))
                for e in Repo(s).events(rid)
                if e.type == "slack.posted" and e.data["role"] == role
            ]
        )

    def all_shown(self, rids: list[str], role: str) -> bool:
        """Whether every request in ``rids`` has a ``slack.posted`` event for ``role`` (one read)."""

        def read(s):
            rows = s.execute(select(EventRow.request_id, EventRow.data).where(EventRow.type == "slack.posted")).all()
            return {rid for rid, data in rows if data.get("role") == role}

        return set(rids) <= self.ctx.store.read(read)

    def owed(self) -> int:
        return self.ctx.store.read(
            lambda s: len(s.execute(select(OutboxRow.id).where(OutboxRow.state == "pending")).all())
        )

    def shown(self, channel: str) -> dict[str, list[dict]]:
        """Request id -> the messages in ``channel`` that carry its buttons."""
        out: dict[str, list[dict]] = {}
        for m in self.fake.messages(channel):
            if m.get("thread_ts") and m.get("thread_ts") != m["ts"]:
                continue
            for rid in {
                e["value"]
                for b in m.get("blocks") or []
                if b["type"] == "actions"
                for e in b["elements"]
                if e.get("action_id") in ("signoff.approve", "signoff.review")
            }:
                out.setdefault(rid, []).append(m)
        return out


def _digests(fake, channel: str) -> list[dict]:
    return [
        m for m in fake.messages(channel) if ((m.get("metadata") or {}).get("event_payload") or {}).get("digest_id")
    ]


@pytest.mark.timeout(120)
def test_a_burst_to_one_channel_is_digested_and_every_request_shown_once(db_url, monkeypatch, fake_slack):
    env = Env(db_url, monkeypatch, fake_slack)
    try:
        rids = env.submit(30)
        took = env.run(lambda: env.all_shown(rids, "request"))
        assert took <= 5.0 + 1.0, f"the last request reached the channel after {took} s"

        shown = env.shown("C0APPROVALS")
        assert set(shown) == set(rids) and all(len(v) == 1 for v in shown.values()), "each shown exactly once"
        digests = _digests(fake_slack, "C0APPROVALS")
        singles = [m for m in fake_slack.messages("C0APPROVALS") if m not in digests and not m.get("thread_ts")]
        assert 1 <= len(singles) <= 6 and 2 <= len(digests) <= 4, (len(singles), len(digests))
        assert len(singles) + len(digests) <= 7, "no more posts than pacing lets through in 5 s"
        assert all(
            1 < len({e["value"] for b in d["blocks"] if b["type"] == "actions" for e in b["elements"]}) <= 10
            for d in digests
        )

        # evidence: one slack.posted per request, naming the digest message it is in
        by_ts = {d["ts"]: d for d in digests}
        in_digest = 0
        for rid in rids:
            (event,) = env.posted_events(rid, "request")
            assert event.data["channel"] == "C0APPROVALS"
            assert shown[rid][0]["ts"] == event.data["ts"]
            if "digest" in event.data:
                in_digest += 1
                digest = by_ts[event.data["ts"]]
                assert str(event.data["digest"]["id"]) == digest["metadata"]["event_payload"]["digest_id"]
        assert in_digest == 30 - len(singles)

        # a decision: the digest is updated in place, that section decided, no buttons for it
        digest = digests[0]
        members = [
            e["value"]
            for b in digest["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
            if e["action_id"] == "signoff.approve"
        ]
        assert decide(env.ctx, request_id=members[1], user="U0OWNER", decision="reject").outcome == "rejected"
        env.run(lambda: fake_slack.message("C0APPROVALS", digest["ts"]).get("edited"))
        updated = fake_slack.message("C0APPROVALS", digest["ts"])
        live = {e["value"] for b in updated["blocks"] if b["type"] == "actions" for e in b["elements"]}
        assert live == set(members) - {members[1]}
        assert "Rejected by <@U0OWNER>" in str(updated["blocks"])
        assert updated["blocks"][0]["text"]["text"].startswith(f"{len(members) - 1} of {len(members)}")
        assert not [
            m
            for m in fake_slack.messages("C0APPROVALS")
            if m["ts"] != digest["ts"] and members[1] in str(m.get("blocks"))
        ], "shown nowhere else"
    finally:
        env.dispatcher.pool.shutdown()
        env.rt.store.dispose()


@pytest.mark.timeout(120)
def test_a_request_decided_before_its_digest_is_posted_is_shown_decided(db_url, monkeypatch, fake_slack):
    env = Env(db_url, monkeypatch, fake_slack)
    try:
        rids = env.submit(12)
        env.dispatcher.run_once()  # plans: a few posts, the rest in a digest not posted yet
        pending_digest = [r for r in rids if not env.posted_events(r, "request")]
        late = pending_digest[-1]
        assert decide(env.ctx, request_id=late, user="U0OWNER", decision="approve").outcome == "approved"
        env.run(lambda: env.all_shown(rids, "request"))
        env.run(lambda: not env.owed(), seconds=30)
        assert "digest" in env.posted_events(late, "request")[0].data, "it was shown in a digest"
        assert late not in env.shown("C0APPROVALS"), "no live buttons for a decided request, anywhere"
    finally:
        env.dispatcher.pool.shutdown()
        env.rt.store.dispose()


@pytest.mark.timeout(120)
def test_digest_after_zero_posts_one_by_one(db_url, monkeypatch, fake_slack):
    env = Env(db_url, monkeypatch, fake_slack, digest_after="0")
    try:
        rids = env.submit(12)
        took = env.run(lambda: env.all_shown(rids, "request"))
        assert _digests(fake_slack, "C0APPROVALS") == []
        assert len(fake_slack.messages("C0APPROVALS")) == 12
        assert took >= 12 - 2 - 1, "paced: about one a second after a burst of two"
        assert all("digest" not in env.posted_events(r, "request")[0].data for r in rids)
    finally:
        env.dispatcher.pool.shutdown()
        env.rt.store.dispose()


@pytest.mark.timeout(120)
def test_an_exception_burst_to_the_security_channel_is_digested(db_url, monkeypatch, fake_slack):
    env = Env(db_url, monkeypatch, fake_slack)
    try:
        rids = env.submit(14)
        env.run(lambda: env.all_shown(rids, "request"))
        env.clock.advance(seconds=30)  # the approvals channel's bucket is full again
        for rid in rids:
            assert decide(env.ctx, request_id=rid, user="U0OWNER", decision="reject").outcome == "rejected"
        took = env.run(lambda: env.all_shown(rids, "exception"))
        assert took <= 6.0
        digests = _digests(fake_slack, "C0SEC")
        assert digests, "exceptions digested"
        shown = env.shown("C0SEC")
        assert set(shown) == set(rids) and all(len(v) == 1 for v in shown.values())
        for d in digests:
            assert d["blocks"][0]["text"]["text"].startswith("🛡️")
            assert {e["action_id"] for b in d["blocks"] if b["type"] == "actions" for e in b["elements"]} == {
                "signoff.review"
            }
        digested = [r for r in rids if "digest" in env.posted_events(r, "exception")[0].data]
        assert len(digested) >= 8
    finally:
        env.dispatcher.pool.shutdown()
        env.rt.store.dispose()


@pytest.mark.timeout(120)
def test_requests_arriving_before_a_digest_is_posted_join_it(db_url, monkeypatch, fake_slack):
    env = Env(db_url, monkeypatch, fake_slack)
    try:
        first = env.submit(12)
        env.dispatcher.run_once()  # a few posts, the rest in a digest not posted yet
        late = env.submit(2)
        env.run(lambda: env.all_shown(first + late, "request"))
        digest_of = {r: env.posted_events(r, "request")[0].data.get("digest", {}).get("id") for r in first + late}
        (digest_id,) = {d for r, d in digest_of.items() if d is not None and r in first}
        assert digest_of[late[0]] == digest_of[late[1]] == digest_id, "they joined the digest still owed"
        assert len(_digests(fake_slack, "C0APPROVALS")) == 1
        shown = env.shown("C0APPROVALS")
        assert set(shown) == set(first + late) and all(len(v) == 1 for v in shown.values())
    finally:
        env.dispatcher.pool.shutdown()
        env.rt.store.dispose()


@pytest.mark.timeout(120)
def test_escalation_dms_notes_and_replies_of_a_digested_burst(db_url, monkeypatch, fake_slack):
    from signoff.demo.slack_standin import dm_channel
    from signoff.usecases.reply import record_thread_message
    from signoff.usecases.sweep import sweep

    env = Env(db_url, monkeypatch, fake_slack)
    try:
        rids = env.submit(14)
        env.run(lambda: env.all_shown(rids, "request"))
        digest = _digests(fake_slack, "C0APPROVALS")[0]
        members = sorted({e["value"] for b in digest["blocks"] if b["type"] == "actions" for e in b["elements"]})
        # a reply in the digest's thread is evidence for every request it shows
        assert record_thread_message(
            env.ctx,
            event={
                "type": "message",
                "channel": "C0APPROVALS",
                "user": "U0OWNER",
                "text": "looking at these",
                "ts": "1700009999.000100",
                "thread_ts": digest["ts"],
            },
            event_id="Ev1",
        )
        for rid in members:
            replies = env.ctx.store.read(
                lambda s, rid=rid: [e.data["text"] for e in Repo(s).events(rid) if e.type == "thread.reply"]
            )
            assert replies == ["looking at these"]

        env.clock.advance(minutes=10)
        sweep(env.ctx)  # step 1 for all 14: a DM each to U0ESC, notes in the threads, exceptions
        env.run(lambda: env.all_shown(rids, "escalation") and env.all_shown(rids, "exception"))
        dm = dm_channel("U0ESC")
        assert _digests(fake_slack, dm), "the escalation DMs to one person are digested"
        shown = env.shown(dm)
        assert set(shown) == set(rids) and all(len(v) == 1 for v in shown.values())
        assert "Escalated to you" in str(_digests(fake_slack, dm)[0]["blocks"])
        env.run(
            lambda: (
                len(
                    [
                        m
                        for m in fake_slack.messages("C0APPROVALS")
                        if m.get("thread_ts") == digest["ts"] and m["ts"] != digest["ts"]
                    ]
                )
                >= len(members)
            )
        )
        notes = [
            m["text"]
            for m in fake_slack.messages("C0APPROVALS")
            if m.get("thread_ts") == digest["ts"] and m["ts"] != digest["ts"]
        ]
        for rid in members:
            assert sum(rid in n and "Escalated (step 1)" in n for n in notes) == 1, "its note, naming it"
    finally:
        env.dispatcher.pool.shutdown()
        env.rt.store.dispose()


@pytest.mark.timeout(120)
def test_a_digest_that_reached_slack_before_a_crash_is_found_not_repeated(db_url, monkeypatch, fake_slack):
    from datetime import timedelta

    from sqlalchemy import update

    from signoff.store.tables import SlackDigestRow

    env = Env(db_url, monkeypatch, fake_slack)
    try:
        rids = env.submit(12)
        env.dispatcher.run_once()  # the digest is formed, its post owed
        (digest_id,) = env.ctx.store.read(lambda s: [d.id for d in s.scalars(select(SlackDigestRow))])
        # an earlier process posted it, then died before recording anything
        earlier = web_client("xoxb-test", fake_slack.url).chat_postMessage(
            channel="C0APPROVALS",
            text="earlier attempt",
            metadata={"event_type": "signoff_message", "event_payload": {"digest_id": str(digest_id)}},
        )
        env.ctx.store.transaction(
            lambda s: s.execute(
                update(OutboxRow)
                .where(OutboxRow.kind == "slack.digest")
                .values(in_flight=True, claimed_by="gone", claimed_until=env.clock() - timedelta(seconds=1))
            )
        )
        env.run(lambda: env.all_shown(rids, "request"))
        assert len(_digests(fake_slack, "C0APPROVALS")) == 1, "not posted again"
        in_digest = [r for r in rids if "digest" in env.posted_events(r, "request")[0].data]
        assert in_digest and all(env.posted_events(r, "request")[0].data["ts"] == earlier["ts"] for r in in_digest)
    finally:
        env.dispatcher.pool.shutdown()
        env.rt.store.dispose()
