"""Idempotency keys and Slack event ids are forgotten once no repeat can arrive; requests
and their evidence never are."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from signoff.store.tables import EventRow, IdempotencyRow, RequestRow, SeenEventRow
from signoff.usecases.prune import SLACK_EVENT_KEEP, prune
from signoff.usecases.submit import IDEMPOTENCY_KEEP, submit
from support import FakeClock, runtime, submission


def _count(rt, table) -> int:
    return rt.store.read(lambda s: s.scalar(select(func.count()).select_from(table)))


def test_prune_forgets_old_keys_and_event_ids_and_keeps_everything_else(db_url, monkeypatch):
    clock = FakeClock()
    rt = runtime(db_url, clock=clock, monkeypatch=monkeypatch)
    try:
        ctx = rt.context
        old = submit(ctx, agent_id="deploy-bot", body=submission(title="old"), idempotency_key="k-old").request
        ctx.uow.transaction(lambda repo: repo.first_sighting("Ev-old", clock()))
        clock.advance(seconds=int((IDEMPOTENCY_KEEP - timedelta(hours=1)).total_seconds()))
        fresh = submit(ctx, agent_id="deploy-bot", body=submission(title="new"), idempotency_key="k-new").request
        ctx.uow.transaction(lambda repo: repo.first_sighting("Ev-new", clock()))
        assert _count(rt, IdempotencyRow) == 2 and _count(rt, SeenEventRow) == 2
        events = _count(rt, EventRow)

        assert prune(ctx).slack_events == 1  # Ev-old is past SLACK_EVENT_KEEP, the old key is not yet
        assert IDEMPOTENCY_KEEP - timedelta(hours=1) > SLACK_EVENT_KEEP
        clock.advance(hours=2)
        pruned = prune(ctx)
        assert (pruned.idempotency_keys, pruned.slack_events) == (1, 0)
        assert prune(ctx).idempotency_keys == 0  # idempotent

        # The newer key still answers a retry with the first request; the old one makes a new request.
        again = submit(ctx, agent_id="deploy-bot", body=submission(title="new"), idempotency_key="k-new")
        assert not again.created and again.request["id"] == fresh["id"]
        # Requests and their evidence are never pruned.
        assert _count(rt, RequestRow) == 2 and _count(rt, EventRow) >= events
        assert rt.store.read(lambda s: s.get(RequestRow, old["id"])) is not None
    finally:
        rt.store.dispose()
