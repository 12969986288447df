"""sweep: claim what time owes — escalation steps, expiry, windows opening, unused grants —
and hand each to its use-case (``escalate.fire_step``, ``expire.expire``, the grant).

Deadlines live in rows (``requests.due_at``, indexed): the next moment each request is
owed something. A tick claims only the rows due, so its cost follows the work due, not
the number pending, and any number of replicas can tick together: each row is claimed by
one of them (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write lock, taken by
``BEGIN IMMEDIATE``), and the claim, the work and the new ``due_at`` commit together, so
a step fires exactly once however many replicas tick and however often.

Nothing is kept in memory between ticks: a process that was down finds the rows still
due when it starts, does what fell due meanwhile in the order it fell due, and records
in each event how late it was (``late_seconds``).

A batch is written in bulk: the batch's Slack messages are read in one query, new rows
are flushed once, and the outbox rows that need their ids are added after that flush,
in the order the work was done.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from signoff.domain.ladder import EXPIRE, late_seconds, next_due, owed
from signoff.domain.model import ExceptionKind, Status
from signoff.usecases.effects import Effects
from signoff.usecases.escalate import fire_step
from signoff.usecases.expire import expire
from signoff.usecases.grant import issue_grant
from signoff.usecases.ports import Context, Repository

if TYPE_CHECKING:
    from signoff.store.tables import RequestRow

log = logging.getLogger(__name__)

BATCH = 200
# A row whose processing fails for an unexpected reason is looked at again this much
# later, so that one bad row never blocks the rows behind it.
POISON_BACKOFF = timedelta(seconds=60)


@dataclass
class SweepReport:
    escalated: int = 0
    expired: int = 0
    granted: int = 0
    grants_unused: int = 0
    failed: int = 0
    lateness: list[float] = field(default_factory=list)

    @property
    def touched(self) -> int:
        return self.escalated + self.expired + self.granted + self.grants_unused

    def add(self, other: SweepReport) -> None:
        self.escalated += other.escalated
        self.expired += other.expired
        self.granted += other.granted
        self.grants_unused += other.grants_unused
        self.failed += other.failed
        self.lateness.extend(other.lateness)


class _Poisoned(Exception):
    """Processing one request failed for a reason other than a lost race."""

    def __init__(self, request_id: str):
        super().__init__(request_id)
        self.request_id = request_id


def sweep(ctx: Context, *, now: datetime | None = None, max_batches: int = 50) -> SweepReport:
    """Process every request due at ``now`` (default: the context clock); idempotent.

    Safe to run concurrently in several processes: each due row is handled by one.
    """
    report = SweepReport()
    skip: set[str] = set()
    for _ in range(max_batches):
        at = now or ctx.clock()
        try:
            # A fresh report per attempt: Store.transaction re-runs the batch after a lost race.
            n, part = ctx.uow.transaction(partial(_batch, ctx, now=at, skip=skip))
        except _Poisoned as bad:
            # The batch was rolled back; set the bad row aside, then do the rest again.
            log.exception("sweep: request %s failed; looking again in %s", bad.request_id, POISON_BACKOFF)
            rid = bad.request_id
            skip.add(rid)
            report.failed += 1
            ctx.uow.transaction(partial(_postpone, request_id=rid, until=at + POISON_BACKOFF))
            continue
        report.add(part)
        if n < BATCH:
            break
    if report.touched:
        ctx.notify()
    return report


def _postpone(repo: Repository, request_id: str, until: datetime) -> None:
    req = repo.get(request_id)
    if req is not None and req.due_at is not None:
        req.due_at = until


@dataclass(order=True)
class _Item:
    at: datetime
    order: int
    req: RequestRow = field(compare=False)
    kind: str = field(compare=False)  # step | expire | other
    k: int | None = field(compare=False, default=None)


def _batch(ctx: Context, repo: Repository, now: datetime, skip: set[str]) -> tuple[int, SweepReport]:
    rows = repo.claim_due(now, BATCH)
    if not rows:
        return 0, SweepReport()
    # When the batch is full, rows beyond it are due no earlier than its last row: doing
    # only what fell due up to there keeps the whole backlog in deadline order.
    horizon = _due(rows[-1]) if len(rows) == BATCH else now
    pending = [r for r in rows if r.status == Status.PENDING and r.id not in skip]
    fx = Effects.of(ctx, repo, now, repo.messages_for([r.id for r in pending]), batch=True)
    report = SweepReport()
    items: list[_Item] = []
    for req in rows:
        if req.id in skip:
            continue
        if req.status != Status.PENDING:
            items.append(_Item(_due(req), len(items), req, "other"))
            continue
        try:
            fx.policy(req)
        except Exception as exc:  # an unreadable policy snapshot: set this row aside
            raise _Poisoned(req.id) from exc
        for o in owed(req.created_at, req.deadline, fx.ladders[req.id], req.steps_fired, min(now, horizon)):
            items.append(_Item(o.at, len(items), req, o.kind, o.k))
    items.sort()

    for item in items:
        try:
            if item.kind == "step":
                assert item.k is not None, "an owed step carries its index"
                with repo.deferred():
                    report.lateness.append(fire_step(fx, item.req, item.k, item.at))
                report.escalated += 1
            elif item.kind == EXPIRE:
                with repo.deferred():
                    report.lateness.append(expire(fx, item.req, item.at))
                report.expired += 1
            else:
                fx.flush()  # the helpers below read the database: let them see this batch
                _other(ctx, fx, item.req, report)
                fx.flush()  # its rows keep their place: written before the next item's
        except Exception as exc:
            if ctx.uow.retryable(exc):
                raise  # a lost race: the whole batch is retried on a fresh transaction
            raise _Poisoned(item.req.id) from exc
    for req in pending:
        if req.status == Status.PENDING:
            req.due_at = next_due(req.created_at, req.deadline, fx.ladders[req.id], req.steps_fired)
    fx.flush()
    return len(rows), report


def _due(req: RequestRow) -> datetime:
    """When a claimed row fell due (``claim_due`` returns only rows whose ``due_at`` is set)."""
    assert req.due_at is not None, "claim_due returns rows that are due"
    return req.due_at


def _other(ctx: Context, fx: Effects, req: RequestRow, report: SweepReport) -> None:
    """Work owed to a request that is no longer pending: a window opening, a grant running out."""
    repo, now = fx.repo, fx.now
    if req.status == Status.APPROVED and not req.grant_token:
        if req.approval_expires_at and now >= req.approval_expires_at:
            fx.move(
                req,
                Status.EXPIRED,
                actor="signoff",
                data={
                    "reason": "approval lapsed before a change window opened",
                    "late_seconds": late_seconds(now, req.approval_expires_at),
                },
            )
            req.due_at = None
            fx.raise_exception(req, ExceptionKind.EXPIRED, "approval lapsed")
            fx.refresh(req)
            report.expired += 1
        elif issue_grant(ctx, fx, req):
            report.granted += 1
        elif req.status == Status.APPROVED and req.due_at is not None and req.due_at <= now:
            req.due_at = None  # nothing more is owed; avoid spinning on it
    elif req.status in (Status.APPROVED, Status.EXECUTING) and req.grant_expires_at and now >= req.grant_expires_at:
        if req.outcome is None:
            repo.append_event(
                req,
                "grant.expired_without_outcome",
                "signoff",
                {"grant_expired_at": req.grant_expires_at.isoformat()},
                now,
            )
            fx.raise_exception(req, ExceptionKind.GRANT_UNUSED, "the grant expired with no outcome reported")
            report.grants_unused += 1
        req.due_at = None
    elif req.due_at is not None and req.due_at <= now:
        # Decided, cancelled or finished: the ladder stopped; nothing more is owed.
        req.due_at = None
