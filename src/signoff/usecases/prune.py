"""prune: forget what only guards against repeats, once no repeat can still arrive.

Idempotency keys (and the keys byte-for-byte replays of a signed submission leave) answer
a retry with the first request for ``IDEMPOTENCY_KEEP``; a signed request is refused as
stale after five minutes anyway. Slack event ids (and the thread messages seen) make a
redelivered event a no-op; Slack redelivers within minutes. Nothing here is evidence:
the requests, their events and decisions are never pruned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from signoff.usecases.ports import Context, Repository
from signoff.usecases.submit import IDEMPOTENCY_KEEP

SLACK_EVENT_KEEP = timedelta(hours=24)


@dataclass(frozen=True)
class Pruned:
    idempotency_keys: int
    slack_events: int


def prune(ctx: Context, *, now: datetime | None = None) -> Pruned:
    """Delete idempotency keys older than ``IDEMPOTENCY_KEEP`` and Slack event ids older
    than ``SLACK_EVENT_KEEP``; idempotent, safe on several replicas at once."""
    at = now or ctx.clock()

    def tx(repo: Repository) -> Pruned:
        return Pruned(
            repo.forget_idempotency_before(at - IDEMPOTENCY_KEEP), repo.forget_seen_events_before(at - SLACK_EVENT_KEEP)
        )

    return ctx.uow.transaction(tx)
