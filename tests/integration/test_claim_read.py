"""The outbox renders a claim's Slack rows from one read (``slack_ops.read_messages``):
what it shows must equal the per-message read, and a request's rows after one that
writes directly must read afresh."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from signoff.outbox.dispatcher import Claim, Dispatcher, Job
from signoff.slack.app import web_client
from signoff.slack.delivery import SlackDelivery
from signoff.store.tables import OutboxRow, SlackMessageRow
from signoff.usecases.decide import decide
from signoff.usecases.slack_ops import message_context, read_messages
from signoff.usecases.submit import submit
from signoff.usecases.sweep import sweep
from support import FakeClock, runtime, submission


@pytest.fixture
def env(db_url, monkeypatch, fake_slack):
    clock = FakeClock()
    rt = runtime(db_url, clock=clock, monkeypatch=monkeypatch)
    client = web_client("xoxb-test", fake_slack.url)
    delivery = SlackDelivery(rt.context, client)
    dispatcher = Dispatcher(rt.context, delivery.handlers(), workers=4)
    yield rt.context, clock, dispatcher, delivery, fake_slack
    dispatcher.stop()
    client.close()
    rt.store.dispose()


def _drain(ctx, clock, dispatcher) -> None:
    for _ in range(50):
        if dispatcher.run_once():
            continue
        pending = ctx.store.read(lambda s: s.scalars(select(OutboxRow.id).where(OutboxRow.state == "pending")).all())
        if not pending:
            return
        clock.advance(seconds=0.5)
    raise AssertionError("outbox not drained")


def _message_ids(ctx) -> list[int]:
    return ctx.store.read(lambda s: list(s.scalars(select(SlackMessageRow.id).order_by(SlackMessageRow.id))))


def test_claim_read_renders_what_message_context_renders(env):
    ctx, clock, dispatcher, _delivery, _slack = env
    rids = [submit(ctx, agent_id="deploy-bot", body=submission(title=f"Restart #{i}")).request["id"] for i in range(4)]
    _drain(ctx, clock, dispatcher)
    decide(ctx, request_id=rids[0], user="U0OWNER", decision="approve")
    decide(ctx, request_id=rids[1], user="U0OWNER", decision="reject")
    clock.advance(minutes=11)
    sweep(ctx)  # rids[2], rids[3]: escalation DMs and exception threads
    ids = _message_ids(ctx)
    assert len(ids) > 4
    for stage in ("queued", "delivered"):
        read = read_messages(ctx, ids + [10_000])
        for mid in ids:
            assert read.context(mid) == message_context(ctx, mid), (stage, mid)
        assert read.context(10_000) is None and message_context(ctx, 10_000) is None
        _drain(ctx, clock, dispatcher)


def test_escalation_rows_of_one_claim_post_then_thread(env):
    ctx, clock, dispatcher, _delivery, slack = env
    rid = submit(ctx, agent_id="deploy-bot", body=submission()).request["id"]
    _drain(ctx, clock, dispatcher)
    clock.advance(minutes=11)
    sweep(ctx)
    kinds = ctx.store.read(
        lambda s: s.execute(select(OutboxRow.kind, OutboxRow.state).where(OutboxRow.request_id == rid)).all()
    )
    assert sorted(k for k, st in kinds if st == "pending") == ["slack.post", "slack.post", "slack.thread"]
    assert dispatcher.run_once() == 3  # one claim, one group
    states = ctx.store.read(lambda s: s.scalars(select(OutboxRow.state).where(OutboxRow.request_id == rid)).all())
    assert set(states) == {"done"}
    posted = ctx.store.read(
        lambda s: s.execute(
            select(SlackMessageRow.role, SlackMessageRow.ts).where(SlackMessageRow.request_id == rid)
        ).all()
    )
    assert all(ts for _role, ts in posted)
    root_ts = next(ts for role, ts in posted if role == "request")
    threads = [c for c in slack.calls if c.method == "chat.postMessage" and c.params.get("thread_ts")]
    assert [c.params["thread_ts"] for c in threads] == [root_ts]


def test_rows_after_a_direct_write_read_afresh(env):
    ctx, _clock, _dispatcher, delivery, _slack = env
    rid_a = submit(ctx, agent_id="deploy-bot", body=submission(title="A")).request["id"]
    rid_b = submit(ctx, agent_id="deploy-bot", body=submission(title="B")).request["id"]
    mid_a, mid_b = _message_ids(ctx)
    claim = Claim()
    claim.jobs = [
        Job(1, "slack.post", rid_a, {"message_id": mid_a}, 0, False, claim),
        Job(2, "slack.expand", rid_a, {"request_id": rid_a, "group": "S1"}, 0, False, claim),
        Job(3, "slack.update", rid_a, {"message_id": mid_a}, 0, False, claim),
        Job(4, "slack.update", rid_b, {"message_id": mid_b}, 0, False, claim),
        Job(5, "slack.update", None, {"message_id": mid_b}, 0, False, claim),
    ]
    usable = [j.id for j in claim.jobs if delivery._claim_read(j) is not None]
    assert usable == [1, 4]


def test_one_failed_record_among_several_is_found_and_the_rest_are_kept(env):
    ctx, clock, dispatcher, _delivery, _slack = env
    from signoff.outbox.dispatcher import Record, Result
    from signoff.store.tables import EventRow
    from signoff.usecases.slack_ops import record_posted_in

    rids = [submit(ctx, agent_id="deploy-bot", body=submission(title=f"R{i}")).request["id"] for i in range(3)]
    jobs = dispatcher._claim()
    assert [j.kind for j in jobs] == ["slack.post"] * 3
    runs: list[int] = []

    def record(job, fail: bool) -> Record:
        mid = job.payload["message_id"]

        def write(session):
            runs.append(mid)
            record_posted_in(session, clock(), message_id=mid, channel="C0APPROVALS", ts=f"1.{mid}")
            if fail:
                raise RuntimeError("disk on fire")

        return Record(write, key=mid)

    results = [Result(job, "done", record=record(job, i == 1)) for i, job in enumerate(jobs)]
    assert dispatcher._finish_many(results) == {jobs[1].id}
    mids = [j.payload["message_id"] for j in jobs]
    assert runs == mids[:2] + mids  # together up to the failure, then each in its own savepoint

    def read(s):
        ts = dict(s.execute(select(SlackMessageRow.id, SlackMessageRow.ts)).all())
        events = s.scalars(select(EventRow.request_id).where(EventRow.type == "slack.posted")).all()
        rows = {
            r.id: r
            for r in s.execute(select(OutboxRow.id, OutboxRow.state, OutboxRow.in_flight, OutboxRow.last_error)).all()
        }
        return ts, sorted(events), rows

    ts, events, rows = ctx.store.read(read)
    assert ts == {mids[0]: f"1.{mids[0]}", mids[1]: None, mids[2]: f"1.{mids[2]}"}
    assert events == sorted([rids[0], rids[2]])
    assert rows[jobs[0].id].state == rows[jobs[2].id].state == "done"
    failed = rows[jobs[1].id]
    assert failed.state == "pending" and failed.in_flight and "recording failed" in failed.last_error
