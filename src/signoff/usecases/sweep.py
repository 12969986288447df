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

A batch is written in bulk: the batch's Slack messages are read in one query, new rows
are flushed once, and the outbox rows that need their ids are added after that flush,
in the order the work was done.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from signoff.config import Workflow
from signoff.domain.identifiers import GROUP_RE, USER_RE
from signoff.domain.ladder import EXPIRE, Ladder, next_due, owed
from signoff.domain.model import ExceptionKind, Status
from signoff.store.db import is_retryable
from signoff.store.repo import Repo
from signoff.store.tables import RequestRow, SlackMessageRow
from signoff.usecases.common import (
    exception_note,
    move,
    raise_exception,
    record_exception,
    refresh_messages,
    workflow_snapshot,
)
from signoff.usecases.grant import issue_grant
from signoff.usecases.ports import Context
from signoff.usecases.submit import ladder_of

log = logging.getLogger(__name__)

BATCH = 200
# A row whose processing fails for an unexpected reason is looked at again this much
# later, so that one bad row never blocks the rows behind it.
POISON_BACKOFF = timedelta(seconds=60)
ASKED_ROLES = ("request", "escalation")


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


def late_seconds(now: datetime, due: datetime) -> int | float:
    """How late (seconds, to the microsecond; never negative). A whole number is an int,
    so the stored JSON is already in its RFC 8785 form (``3``, not ``3.0``)."""
    late = max((now - due).total_seconds(), 0.0)
    return int(late) if late.is_integer() else late


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
            n, part = ctx.store.transaction(lambda s: _batch(ctx, Repo(s), at, skip))
        except _Poisoned as bad:
            # The batch was rolled back; set the bad row aside, then do the rest again.
            log.exception("sweep: request %s failed; looking again in %s", bad.request_id, POISON_BACKOFF)
            rid = bad.request_id
            skip.add(rid)
            report.failed += 1
            ctx.store.transaction(lambda s: _postpone(Repo(s), rid, at + POISON_BACKOFF))
            continue
        report.add(part)
        if n < BATCH:
            break
    if report.touched:
        ctx.notify()
    return report


def _postpone(repo: Repo, request_id: str, until: datetime) -> None:
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


def _batch(ctx: Context, repo: Repo, now: datetime, skip: set[str]) -> tuple[int, SweepReport]:
    rows = repo.claim_due(now, BATCH)
    if not rows:
        return 0, SweepReport()
    # When the batch is full, rows beyond it are due no earlier than its last row: doing
    # only what fell due up to there keeps the whole backlog in deadline order.
    horizon = rows[-1].due_at if len(rows) == BATCH else now
    pending = [r for r in rows if r.status == Status.PENDING and r.id not in skip]
    work = _Work(repo, now, repo.messages_for([r.id for r in pending]))
    items: list[_Item] = []
    for req in rows:
        if req.id in skip:
            continue
        if req.status != Status.PENDING:
            items.append(_Item(req.due_at, len(items), req, "other"))
            continue
        try:
            work.policy(req)
        except Exception as exc:  # an unreadable policy snapshot: set this row aside
            raise _Poisoned(req.id) from exc
        for o in owed(req.created_at, req.deadline, work.ladders[req.id], req.steps_fired, min(now, horizon)):
            items.append(_Item(o.at, len(items), req, o.kind, o.k))
    items.sort()

    for item in items:
        try:
            if item.kind == "step":
                with repo.session.no_autoflush:
                    work.fire_step(item.req, item.k, item.at)
            elif item.kind == EXPIRE:
                with repo.session.no_autoflush:
                    work.expire(item.req, item.at)
            else:
                work.flush()  # the helpers below read the database: let them see this batch
                _other(ctx, repo, item.req, now, work.report)
        except Exception as exc:
            if is_retryable(exc):
                raise  # a lost race: the whole batch is retried on a fresh transaction
            raise _Poisoned(item.req.id) from exc
    for req in pending:
        if req.status == Status.PENDING:
            req.due_at = next_due(req.created_at, req.deadline, work.ladders[req.id], req.steps_fired)
    work.flush()
    return len(rows), work.report


class _Work:
    """The steps and expiries of one batch, written in bulk (see the module docstring)."""

    def __init__(self, repo: Repo, now: datetime, copies: dict[str, list[SlackMessageRow]]):
        self.repo = repo
        self.now = now
        self.copies = copies
        self.wfs: dict[str, Workflow] = {}
        self.ladders: dict[str, Ladder] = {}
        self.report = SweepReport()
        # outbox rows owed, in order: (kind, payload, message whose id goes in the payload)
        self.intents: list[tuple[str, dict[str, Any], SlackMessageRow | None, str]] = []

    def policy(self, req: RequestRow) -> Workflow:
        wf = self.wfs.get(req.id)
        if wf is None:
            wf = self.wfs[req.id] = workflow_snapshot(req)
            self.ladders[req.id] = ladder_of(wf)
        return wf

    # -------------------------------------------------------------- outbox and messages
    def enqueue(self, req: RequestRow, kind: str, payload: dict[str, Any], msg: SlackMessageRow | None = None):
        self.intents.append((kind, payload, msg, req.id))

    def message(self, req: RequestRow, role: str, target: str) -> tuple[SlackMessageRow, bool]:
        """The copy of ``req`` for (role, target); created (unflushed) when new."""
        for m in self.copies.setdefault(req.id, []):
            if m.role == role and m.target == target:
                return m, False
        m = SlackMessageRow(request_id=req.id, role=role, target=target, created_at=self.now)
        self.repo.session.add(m)
        self.copies[req.id].append(m)
        return m, True

    def flush(self) -> None:
        """Write the batch's rows; then the outbox rows that needed their message ids."""
        self.repo.session.flush()
        # The people who can decide hear first: the batch's new escalation copies go out
        # ahead of its notes and security threads (each request's rows keep their order).
        first = [i for i in self.intents if i[0] == "slack.post" and i[2] is not None and i[2].role == "escalation"]
        rest = [i for i in self.intents if not (i[0] == "slack.post" and i[2] is not None
                                                and i[2].role == "escalation")]
        self.repo.enqueue_many([(kind, {**payload, "message_id": msg.id} if msg is not None else payload, rid)
                                for kind, payload, msg, rid in first + rest], self.now)
        self.intents.clear()

    def note(self, req: RequestRow, text: str) -> None:
        """A note in the thread of the request's root message(s)."""
        for m in self.copies.get(req.id, []):
            if m.role == "request":
                self.enqueue(req, "slack.thread", {"text": text}, m)

    def refresh(self, req: RequestRow) -> None:
        """Every Slack copy of the request is re-rendered from its current state."""
        for m in self.copies.get(req.id, []):
            self.enqueue(req, "slack.update", {}, m)

    def raise_exception(self, req: RequestRow, kind: ExceptionKind, detail: str) -> None:
        """``common.raise_exception`` for the batch: one security thread per request, notes after."""
        target = record_exception(self.repo, req, kind, self.now, detail, self.policy(req))
        msg, created = self.message(req, "exception", target)
        if created:
            self.enqueue(req, "slack.post", {}, msg)
        else:
            self.enqueue(req, "slack.update", {}, msg)
            self.enqueue(req, "slack.thread", {"text": exception_note(kind, detail)}, msg)

    def ask(self, req: RequestRow, target: str, reminder: str) -> None:
        """A copy of the request for ``target`` with live buttons; someone who has a copy
        already gets a reminder in its thread instead of a second copy."""
        existing = next((m for m in self.copies.get(req.id, []) if m.role in ASKED_ROLES and m.target == target),
                        None)
        if existing is None:
            msg, _ = self.message(req, "escalation", target)
            self.enqueue(req, "slack.post", {}, msg)
        elif existing.role == "escalation":
            self.enqueue(req, "slack.thread", {"text": reminder}, existing)
        # a root copy (role "request") gets the thread note

    # -------------------------------------------------------------- what time owes
    def fire_step(self, req: RequestRow, k: int, due_at: datetime) -> None:
        """Step ``k``: post the request to the step's people, note it, record it; from now
        on they may decide (``steps_fired`` is what decide reads)."""
        wf, ladder = self.policy(req), self.ladders[req.id]
        index, cycle = ladder.step_index(k), ladder.cycle(k)
        step = wf.escalation[index]
        late = late_seconds(self.now, due_at)
        req.steps_fired = k + 1

        targets = list(dict.fromkeys(step.to))
        again = []
        if step.remind:
            # Re-ping everyone asked so far: each escalation copy gets a reminder in its
            # thread (the root copies get the thread note below).
            again = [m.target for m in self.copies.get(req.id, [])
                     if m.role == "escalation" and m.target not in targets]
        reminder = f"Reminder: this request still needs a decision (escalation step {k + 1})."
        for target in targets:
            if GROUP_RE.match(target):
                # Members are looked up through Slack after commit; each gets a DM then.
                self.repo.enqueue("slack.expand", {"request_id": req.id, "group": target, "step": k}, self.now,
                                  request_id=req.id, dedupe_key=f"expand:{req.id}:{k}:{target}")
            else:
                self.ask(req, target, reminder)
        for target in again:
            self.ask(req, target, reminder)

        self.repo.append_event(req, "escalation.fired", "signoff",
                               {"step": k, "ladder_index": index, "cycle": cycle, "to": targets,
                                "reminded": again, "remind": step.remind, "due_at": due_at.isoformat(),
                                "late_seconds": late}, self.now)
        names = ", ".join(_mention(t) for t in targets)
        if step.remind or cycle > 0:
            self.note(req, f"Reminder (escalation step {k + 1}): still no decision; asking again: {names}"
                      + (f" and {len(again)} other(s) asked before." if again else "."))
        else:
            self.note(req, f"Escalated (step {k + 1}): no decision yet, now also asking {names}.")
        if cycle == 0:
            # One exception per rung; a repeating ladder's later rounds are evidence events only.
            self.raise_exception(req, ExceptionKind.ESCALATED, f"step {k + 1} to {', '.join(targets)}")
        self.report.escalated += 1
        self.report.lateness.append(late)

    def expire(self, req: RequestRow, deadline: datetime) -> None:
        """No decision by the deadline: expired (a denial), every copy of the message updated."""
        late = late_seconds(self.now, deadline)
        move(self.repo, req, Status.EXPIRED, actor="signoff", now=self.now,
             data={"deadline": deadline.isoformat(), "late_seconds": late})
        req.due_at = None
        self.raise_exception(req, ExceptionKind.EXPIRED, "no decision before the timeout")
        self.refresh(req)
        self.report.expired += 1
        self.report.lateness.append(late)


def _other(ctx: Context, repo: Repo, req: RequestRow, now: datetime, report: SweepReport) -> None:
    """Work owed to a request that is no longer pending: a window opening, a grant running out."""
    if req.status == Status.APPROVED and not req.grant_token:
        if req.approval_expires_at and now >= req.approval_expires_at:
            move(repo, req, Status.EXPIRED, actor="signoff", now=now,
                 data={"reason": "approval lapsed before a change window opened",
                       "late_seconds": late_seconds(now, req.approval_expires_at)})
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
    work = _Work(repo, now, repo.messages_for([req.id]))
    work.policy(req)
    with repo.session.no_autoflush:
        for o in owed(req.created_at, req.deadline, work.ladders[req.id], req.steps_fired, now):
            if o.kind == EXPIRE:
                work.expire(req, o.at)
            else:
                work.fire_step(req, o.k, o.at)
    work.flush()
    return True


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
        work = _Work(repo, now, repo.messages_for([req.id]))
        unique = list(dict.fromkeys(members))
        asked = [u for u in unique if not any(m.target == u and m.role in ASKED_ROLES
                                              for m in work.copies[req.id])]
        reminder = "Reminder: this request still needs a decision" + (
            f" (escalation step {step + 1})." if step is not None else ".")
        with session.no_autoflush:
            for user in unique:
                work.ask(req, user, reminder)
            repo.append_event(req, "escalation.expanded", "signoff",
                              {"group": group, "step": step, "members": members, "asked": asked}, now)
        work.flush()

    ctx.store.transaction(tx)
    ctx.notify()
