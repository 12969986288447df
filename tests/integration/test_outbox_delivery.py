"""The outbox delivering to the fake Slack: posts recorded together, order per request,
crash duplicates, Retry-After. On SQLite and PostgreSQL, with a fake clock."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from signoff.outbox.dispatcher import Dispatcher
from signoff.slack.app import web_client
from signoff.slack.delivery import SlackDelivery
from signoff.store.repo import Repo
from signoff.store.tables import EventRow, OutboxRow, SlackMessageRow
from signoff.usecases import slack_ops
from signoff.usecases.decide import decide
from signoff.usecases.submit import submit
from support import FakeClock, runtime, submission


def plain(row, table) -> SimpleNamespace:
    return SimpleNamespace(**{c.key: getattr(row, c.key) for c in table.__table__.columns})


class Env:
    def __init__(self, db_url, monkeypatch, fake):
        self.clock = FakeClock()
        self.rt = runtime(db_url, clock=self.clock, monkeypatch=monkeypatch)
        self.ctx = self.rt.context
        self.fake = fake
        self.client = web_client("xoxb-test", fake.url)
        self.dispatcher = Dispatcher(self.ctx, SlackDelivery(self.ctx, self.client).handlers(), workers=4)

    def submit(self, n: int = 1) -> list[str]:
        return [
            submit(self.ctx, agent_id="deploy-bot", body=submission(title=f"Restart #{i}")).request["id"]
            for i in range(n)
        ]

    def rows(self, kind: str | None = None) -> list[SimpleNamespace]:
        def read(s):
            q = select(OutboxRow).order_by(OutboxRow.id)
            if kind:
                q = q.where(OutboxRow.kind == kind)
            return [plain(r, OutboxRow) for r in s.scalars(q)]

        return self.ctx.store.read(read)

    def messages(self, rid: str) -> list[SimpleNamespace]:
        return self.ctx.store.read(lambda s: [plain(m, SlackMessageRow) for m in Repo(s).messages(rid)])

    def events(self, rid: str, type_: str) -> list[SimpleNamespace]:
        return self.ctx.store.read(lambda s: [plain(e, EventRow) for e in Repo(s).events(rid) if e.type == type_])

    def drain(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            if self.dispatcher.run_once():
                continue
            if not [r for r in self.rows() if r.state == "pending"]:
                return
            self.clock.advance(seconds=0.5)
        raise AssertionError("outbox not drained")

    def close(self):
        self.dispatcher.stop()
        self.client.close()
        self.rt.store.dispose()


@pytest.fixture
def env(db_url, monkeypatch, fake_slack):
    e = Env(db_url, monkeypatch, fake_slack)
    yield e
    e.close()


def count_write_transactions(monkeypatch, store) -> list[int]:
    seen = [0]
    original = store.transaction

    def counting(fn, **kw):
        seen[0] += 1
        return original(fn, **kw)

    monkeypatch.setattr(store, "transaction", counting)
    return seen


def test_posts_are_recorded_together_with_one_evidence_event_each(env, monkeypatch):
    rids = env.submit(12)
    writes = count_write_transactions(monkeypatch, env.ctx.store)
    assert env.dispatcher.run_once() == 12
    posts = env.fake.calls_to("chat.postMessage")
    assert len(posts) == 12 and all(c.ok for c in posts)
    # one claim, then the results of several posts per transaction (not 2 per post)
    assert writes[0] < 12
    by_rid = {c.params["metadata"]["event_payload"]["request_id"]: c for c in posts}
    for rid in rids:
        (msg,) = env.messages(rid)
        call = by_rid[rid]
        assert (msg.channel, msg.ts) == (call.response["channel"], call.response["ts"])
        assert msg.posted_at is not None
        (ev,) = env.events(rid, "slack.posted")
        assert ev.data == {"role": "request", "target": "C0APPROVALS", "channel": msg.channel, "ts": msg.ts}
    assert {r.state for r in env.rows()} == {"done"}
    assert not any(r.in_flight or r.claimed_by for r in env.rows())


def test_a_request_s_rows_go_in_order_in_one_pass(env):
    (rid,) = env.submit(1)
    # the post and an update of the same message owed together: the update must see
    # where the post went (recorded before it runs), not be deferred or sent first
    decide(env.ctx, request_id=rid, user="U0OWNER", decision="approve")
    kinds = [r.kind for r in env.rows()]
    assert kinds[0] == "slack.post" and "slack.update" in kinds
    env.dispatcher.run_once()
    calls = [c for c in env.fake.calls if c.method in ("chat.postMessage", "chat.update")]
    assert calls[0].method == "chat.postMessage"
    assert any(c.method == "chat.update" for c in calls)
    update_call = next(c for c in calls if c.method == "chat.update")
    assert update_call.params["ts"] == calls[0].response["ts"]
    assert all(r.attempts == 0 for r in env.rows())
    env.drain()
    assert len(env.events(rid, "slack.posted")) == 1


def test_a_post_that_reached_slack_before_a_crash_is_found_not_repeated(env):
    (rid,) = env.submit(1)
    (msg,) = env.messages(rid)
    # an earlier process posted, then died before recording anything
    env.client.chat_postMessage(
        channel="C0APPROVALS",
        text="earlier attempt",
        metadata={"event_type": "signoff_message", "event_payload": {"request_id": rid, "message_id": str(msg.id)}},
    )
    posted_ts = env.fake.calls_to("chat.postMessage")[-1].response["ts"]
    env.ctx.store.transaction(
        lambda s: s.execute(
            update(OutboxRow).values(
                in_flight=True, claimed_by="gone", claimed_until=env.clock() - timedelta(seconds=1)
            )
        )
    )
    env.fake.clear_calls()
    env.drain()
    assert env.fake.calls_to("conversations.history")
    assert not env.fake.calls_to("chat.postMessage")
    (msg,) = env.messages(rid)
    assert msg.ts == posted_ts
    assert len(env.events(rid, "slack.posted")) == 1


def test_a_failed_record_is_retried_by_looking_first(env, monkeypatch):
    (rid,) = env.submit(1)
    real = slack_ops.record_posted_in
    calls = []

    def broken_once(session, now, **kw):
        calls.append(kw)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return real(session, now, **kw)

    monkeypatch.setattr("signoff.slack.delivery.record_posted_in", broken_once)
    env.dispatcher.run_once()
    (row,) = env.rows("slack.post")
    assert row.state == "pending" and row.in_flight and row.attempts == 1
    assert "recording failed" in row.last_error
    env.drain()
    assert len(env.fake.calls_to("chat.postMessage")) == 1, "posted once: the retry found it"
    assert env.fake.calls_to("conversations.history")
    assert len(env.events(rid, "slack.posted")) == 1
    assert env.rows("slack.post")[0].state == "done"


def test_rate_limit_waits_for_retry_after_and_counts_no_attempt(env):
    """Waiting out a 429 is not a failure: no attempt counted, no backoff beyond Retry-After."""
    (rid,) = env.submit(1)
    env.fake.rate_limit_next("chat.postMessage", retry_after=9)
    env.dispatcher.run_once()
    (row,) = env.rows("slack.post")
    assert row.state == "pending" and row.attempts == 0 and not row.in_flight
    assert row.next_attempt_at.replace(tzinfo=None) == (env.clock() + timedelta(seconds=9)).replace(tzinfo=None)
    assert env.dispatcher.run_once() == 0  # not due yet
    env.clock.advance(seconds=9)
    env.drain()
    assert len([c for c in env.fake.calls_to("chat.postMessage") if c.ok]) == 1
    assert len(env.events(rid, "slack.posted")) == 1
