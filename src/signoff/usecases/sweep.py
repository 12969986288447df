"""sweep: everything time owes — escalation steps, expiry, windows opening, unused grants.

Deadlines live in rows (``requests.due_at``, indexed): the next moment each request is
owed something. A tick claims only the rows due, so its cost follows the work due, not
the number pending, and any number of replicas can tick together: each row is claimed by
one of them (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write lock, taken by
``BEGIN IMMEDIATE``), and the claim, the work and the new ``due_at`` commit together, so
a step fires exactly once however many replicas tick and however often.

Nothing is kept in memory between ticks: a process that was down finds the rows still
due when it starts, does what fell due meanwhile in the order it fell due, and records
in each event how late it was (``late_seconds``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from signoff.config import GROUP_RE, USER_RE
from signoff.domain.ladder import EXPIRE, Ladder, next_due, owed
from signoff.domain.model import ExceptionKind, Status
from signoff.store.db import _retryable
from signoff.store.repo import Repo
from signoff.store.tables import RequestRow
from signoff.usecases.common import move, raise_exception, refresh_messages, thread_note, workflow_snapshot
from signoff.usecases.grant import issue_grant
from signoff.usecases.ports import Context
from signoff.usecases.submit import ladder_of

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


def sweep(ctx: Context, *, now: datetime | None = None, max_batches: int = 50) -> SweepReport:
    """Process every request due at ``now`` (default: the context clock); idempotent.

    Safe to run concurrently in several processes: each due row is handled by one.
    """
    report = SweepReport()
    for _ in range(max_batches):
        at = now or ctx.clock()
        # A fresh report per attempt: Store.transaction re-runs the batch after a lost race.
        n, part = ctx.store.transaction(lambda s: _batch(ctx, Repo(s), at))
        report.add(part)
        if n < BATCH:
            break
    if report.touched:
        ctx.notify()
    return report


@dataclass(order=True)
class _Item:
    at: datetime
    order: int
    req: RequestRow = field(compare=False)
    kind: str = field(compare=False)  # step | expire | other
    k: int | None = field(compare=False, default=None)


def _batch(ctx: Context, repo: Repo, now: datetime) -> tuple[int, SweepReport]:
    report = SweepReport()
    rows = repo.claim_due(now, BATCH)
    if not rows:
        return 0, report
    # When the batch is full, rows beyond it are due no earlier than its last row: doing
    # only what fell due up to there keeps the whole backlog in deadline order.
    horizon = rows[-1].due_at if len(rows) == BATCH else now
    items: list[_Item] = []
    broken: set[str] = set()
    ladders: dict[str, Ladder] = {}

    def poisoned(req: RequestRow) -> None:
        log.exception("sweep: request %s failed; looking again in %s", req.id, POISON_BACKOFF)
        broken.add(req.id)
        report.failed += 1
        req.due_at = now + POISON_BACKOFF

    for req in rows:
        if req.status != Status.PENDING:
            items.append(_Item(req.due_at, len(items), req, "other"))
            continue
        try:
            ladders[req.id] = _ladder(req)
        except Exception:  # an unreadable policy snapshot: set this row aside
            poisoned(req)
            continue
        for o in owed(req.created_at, req.deadline, ladders[req.id], req.steps_fired, min(now, horizon)):
            items.append(_Item(o.at, len(items), req, o.kind, o.k))
    items.sort()

    for item in items:
        req = item.req
        if req.id in broken:
            continue
        savepoint = repo.session.begin_nested()
        try:
            if item.kind == "step":
                _fire_step(repo, req, item.k, item.at, now, report)
            elif item.kind == EXPIRE:
                _expire(repo, req, item.at, now, report)
            else:
                _other(ctx, repo, req, now, report)
            savepoint.commit()
        except Exception as exc:
            savepoint.rollback()
            if _lost_race(exc):
                raise  # the whole batch is retried on a fresh transaction
            poisoned(req)
    for req in rows:
        if req.status == Status.PENDING and req.id not in broken:
            req.due_at = next_due(req.created_at, req.deadline, ladders[req.id], req.steps_fired)
    return len(rows), report


def _lost_race(exc: Exception) -> bool:
    # Conflicts with a concurrent writer (a click, another replica) are not a bad row.
    return _retryable(exc)


def _ladder(req: RequestRow) -> Ladder:
    return ladder_of(workflow_snapshot(req))


def _other(ctx: Context, repo: Repo, req: RequestRow, now: datetime, report: SweepReport) -> None:
    """Work owed to a request that is no longer pending: a window opening, a grant running out."""
    if req.status == Status.APPROVED and not req.grant_token:
        if req.approval_expires_at and now >= req.approval_expires_at:
            move(repo, req, Status.EXPIRED, actor="signoff", now=now,
                 data={"reason": "approval lapsed before a change window opened",
                       "late_seconds": (now - req.approval_expires_at).total_seconds()})
            req.due_at = None
            raise_exception(repo, req, ExceptionKind.EXPIRED, now, detail="approval lapsed")
            refresh_messages(repo, req, now)
            report.expired += 1
        elif issue_grant(ctx, repo, req, now):
            report.granted += 1
        elif req.status == Status.APPROVED and req.due_at is not None and req.due_at <= now:
            req.due_at = None  # nothing more is owed; avoid spinning on it
    elif req.status in (Status.APPROVED, Status.EXECUTING) and req.grant_expires_at and now >= req.grant_expires_at:
        if req.outcome is None:
            repo.append_event(req, "grant.expired_without_outcome", "signoff",
                              {"grant_expired_at": req.grant_expires_at.isoformat()}, now)
            raise_exception(repo, req, ExceptionKind.GRANT_UNUSED, now,
                            detail="the grant expired with no outcome reported")
            report.grants_unused += 1
        req.due_at = None
    elif req.due_at is not None and req.due_at <= now:
        # Decided, cancelled or finished: the ladder stopped; nothing more is owed.
        req.due_at = None


def expire_if_overdue(repo: Repo, req: RequestRow, now: datetime) -> bool:
    """Settle a pending request whose deadline has passed (steps owed first, then expiry).

    For use-cases that find such a request before the sweep did (a click arriving after
    the deadline): the deadline wins, whatever the sweep's lag. True when it expired.
    """
    if req.status != Status.PENDING or now < req.deadline:
        return False
    report = SweepReport()
    for o in owed(req.created_at, req.deadline, _ladder(req), req.steps_fired, now):
        if o.kind == EXPIRE:
            _expire(repo, req, o.at, now, report)
        else:
            _fire_step(repo, req, o.k, o.at, now, report)
    return True


def _expire(repo: Repo, req: RequestRow, deadline: datetime, now: datetime, report: SweepReport) -> None:
    """No decision by the deadline: expired (a denial), every copy of the message updated."""
    late = max((now - deadline).total_seconds(), 0.0)
    move(repo, req, Status.EXPIRED, actor="signoff", now=now,
         data={"deadline": deadline.isoformat(), "late_seconds": late})
    req.due_at = None
    raise_exception(repo, req, ExceptionKind.EXPIRED, now, detail="no decision before the timeout")
    refresh_messages(repo, req, now)
    report.expired += 1
    report.lateness.append(late)


def _fire_step(repo: Repo, req: RequestRow, k: int, due_at: datetime, now: datetime,
               report: SweepReport) -> None:
    """Step ``k``: post the request to the step's people, note it, record it; from now on
    they may decide (``steps_fired`` is what decide reads)."""
    wf = workflow_snapshot(req)
    ladder = ladder_of(wf)
    index, cycle = ladder.step_index(k), ladder.cycle(k)
    step = wf.escalation[index]
    late = max((now - due_at).total_seconds(), 0.0)
    req.steps_fired = k + 1

    copies = {m.target: m for m in repo.messages(req.id) if m.role in ("request", "escalation")}
    targets = list(dict.fromkeys(step.to))
    again = []
    if step.remind:
        # Re-ping everyone asked so far: each escalation copy gets a reminder in its thread
        # (the root copies get the thread note below).
        again = [t for t, m in copies.items() if m.role == "escalation" and t not in targets]
    reminder = f"Reminder: this request still needs a decision (escalation step {k + 1})."
    for target in targets:
        if GROUP_RE.match(target):
            # Members are looked up through Slack after commit; each gets a DM then.
            repo.enqueue("slack.expand", {"request_id": req.id, "group": target, "step": k}, now,
                         request_id=req.id, dedupe_key=f"expand:{req.id}:{k}:{target}")
        else:
            _ask(repo, req, target, copies, reminder, now)
    for target in again:
        _ask(repo, req, target, copies, reminder, now)

    repo.append_event(req, "escalation.fired", "signoff",
                      {"step": k, "ladder_index": index, "cycle": cycle, "to": targets, "reminded": again,
                       "remind": step.remind, "due_at": due_at.isoformat(), "late_seconds": late}, now)
    names = ", ".join(_mention(t) for t in targets)
    if step.remind or cycle > 0:
        text = f"Reminder (escalation step {k + 1}): still no decision; asking again: {names}" + (
            f" and {len(again)} other(s) asked before." if again else ".")
    else:
        text = f"Escalated (step {k + 1}): no decision yet, now also asking {names}."
    thread_note(repo, req, text, now)
    if cycle == 0:
        # One exception per rung; a repeating ladder's later rounds are evidence events only.
        raise_exception(repo, req, ExceptionKind.ESCALATED, now, detail=f"step {k + 1} to {', '.join(targets)}")
    report.escalated += 1
    report.lateness.append(late)


def _ask(repo: Repo, req: RequestRow, target: str, copies: dict, reminder: str, now: datetime) -> None:
    """A copy of the request for ``target`` with live buttons; one who has a copy already
    gets a reminder in its thread instead of a second copy."""
    existing = copies.get(target)
    if existing is None:
        msg, created = repo.add_message(req.id, "escalation", target, now)
        copies[target] = msg
        if created:
            repo.enqueue("slack.post", {"message_id": msg.id}, now, request_id=req.id)
    elif existing.role == "escalation":
        repo.enqueue("slack.thread", {"message_id": existing.id, "text": reminder}, now, request_id=req.id)
    # a root copy (role "request") gets the thread note


def _mention(ref: str) -> str:
    if USER_RE.match(ref):
        return f"<@{ref}>"
    if GROUP_RE.match(ref):
        return f"<!subteam^{ref}>"
    return f"<#{ref}>"


def expand_group(ctx: Context, *, request_id: str, group: str, members: list[str], step: int | None = None) -> None:
    """A user group named by escalation step ``step``: a DM to each member.

    A member who already has a copy of the request gets a reminder in its thread instead
    of a second copy. Once the request is no longer pending nobody is asked. Idempotent:
    a redelivered expansion of the same (group, step) does nothing more.
    """

    def tx(session) -> None:
        repo = Repo(session)
        now = ctx.clock()
        req = repo.get(request_id)
        if req is None:
            return
        if any(e.type == "escalation.expanded" and e.data.get("group") == group and e.data.get("step") == step
               for e in repo.events(req.id)):
            return
        if req.status != Status.PENDING:
            repo.append_event(req, "escalation.expanded", "signoff",
                              {"group": group, "step": step, "members": members, "asked": [],
                               "status": req.status}, now)
            return
        copies = {m.target: m for m in repo.messages(req.id) if m.role in ("request", "escalation")}
        unique = list(dict.fromkeys(members))
        asked = [u for u in unique if u not in copies]
        reminder = "Reminder: this request still needs a decision" + (
            f" (escalation step {step + 1})." if step is not None else ".")
        for user in unique:
            _ask(repo, req, user, copies, reminder, now)
        repo.append_event(req, "escalation.expanded", "signoff",
                          {"group": group, "step": step, "members": members, "asked": asked}, now)

    ctx.store.transaction(tx)
    ctx.notify()
