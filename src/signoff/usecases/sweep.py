"""sweep: everything time owes — escalation steps, expiry, windows opening, unused grants.

Deadlines live in rows (``requests.due_at``, indexed). A tick claims only the rows due,
so its cost follows the work due, not the number pending, and any number of replicas can
tick together: each row is claimed by one of them (SKIP LOCKED / SQLite's write lock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from signoff.config import GROUP_RE, USER_RE
from signoff.domain.ladder import next_due
from signoff.domain.model import ExceptionKind, Status
from signoff.store.repo import Repo
from signoff.store.tables import RequestRow
from signoff.usecases.common import move, raise_exception, refresh_messages, thread_note, workflow_snapshot
from signoff.usecases.grant import issue_grant
from signoff.usecases.ports import Context
from signoff.usecases.submit import ladder_of

BATCH = 200


@dataclass
class SweepReport:
    escalated: int = 0
    expired: int = 0
    granted: int = 0
    grants_unused: int = 0
    lateness: list[float] = field(default_factory=list)

    @property
    def touched(self) -> int:
        return self.escalated + self.expired + self.granted + self.grants_unused


def sweep(ctx: Context, *, now: datetime | None = None, max_batches: int = 50) -> SweepReport:
    """Process every request due at ``now`` (default: the context clock)."""
    report = SweepReport()
    for _ in range(max_batches):
        at = now or ctx.clock()
        n = ctx.store.transaction(lambda s: _batch(ctx, Repo(s), at, report))
        if n < BATCH:
            break
    if report.touched:
        ctx.notify()
    return report


def _batch(ctx: Context, repo: Repo, now: datetime, report: SweepReport) -> int:
    rows = repo.claim_due(now, BATCH)
    for req in rows:
        _process(ctx, repo, req, now, report)
    return len(rows)


def _process(ctx: Context, repo: Repo, req: RequestRow, now: datetime, report: SweepReport) -> None:
    if req.status == Status.PENDING:
        _pending(repo, req, now, report)
    elif req.status == Status.APPROVED and not req.grant_token:
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
    else:
        req.due_at = None


def _pending(repo: Repo, req: RequestRow, now: datetime, report: SweepReport) -> None:
    wf = workflow_snapshot(req)
    ladder = ladder_of(wf)
    # Steps fall in order; after downtime several are owed and fire one after another,
    # each recording how late it was. A step due at or after the deadline never fires.
    for k in ladder.due(req.created_at, req.steps_fired, min(now, req.deadline)):
        if req.created_at + ladder.offset(k) >= req.deadline:
            break
        _fire_step(repo, req, wf, k, now, report)
    if now >= req.deadline:
        late = (now - req.deadline).total_seconds()
        move(repo, req, Status.EXPIRED, actor="signoff", now=now,
             data={"deadline": req.deadline.isoformat(), "late_seconds": late})
        req.due_at = None
        raise_exception(repo, req, ExceptionKind.EXPIRED, now, detail="no decision before the timeout")
        refresh_messages(repo, req, now)
        report.expired += 1
        report.lateness.append(late)
        return
    req.due_at = next_due(req.created_at, req.deadline, ladder, req.steps_fired)


def _fire_step(repo: Repo, req: RequestRow, wf, k: int, now: datetime, report: SweepReport) -> None:
    ladder = ladder_of(wf)
    due_at = req.created_at + ladder.offset(k)
    step = wf.escalation[ladder.step_index(k)]
    late = (now - due_at).total_seconds()
    req.steps_fired = k + 1
    targets = list(step.to)
    if step.remind:
        # Re-ping everyone asked so far as well (approvers and earlier steps' people).
        asked = [m.target for m in repo.messages(req.id) if m.role in ("request", "escalation")]
        targets = list(dict.fromkeys(targets + asked))
    repo.append_event(req, "escalation.fired", "signoff",
                      {"step": k, "ladder_index": ladder.step_index(k), "to": targets,
                       "due_at": due_at.isoformat(), "late_seconds": late, "remind": step.remind}, now)
    for target in targets:
        if GROUP_RE.match(target):
            repo.enqueue("slack.expand", {"request_id": req.id, "group": target, "step": k}, now,
                         request_id=req.id, dedupe_key=f"expand:{req.id}:{k}:{target}")
        else:
            role = "escalation"
            msg, created = repo.add_message(req.id, role, target, now)
            if created:
                repo.enqueue("slack.post", {"message_id": msg.id}, now, request_id=req.id)
            else:
                # already has a live copy: remind in its thread
                repo.enqueue("slack.thread", {"message_id": msg.id,
                                              "text": "Reminder: this request still needs a decision."},
                             now, request_id=req.id)
    names = ", ".join(_mention(t) for t in targets)
    thread_note(repo, req, f"Escalated (step {k + 1}): no decision yet, now also asking {names}.", now)
    raise_exception(repo, req, ExceptionKind.ESCALATED, now, detail=f"step {k + 1} to {', '.join(targets)}")
    report.escalated += 1
    report.lateness.append(late)


def _mention(ref: str) -> str:
    if USER_RE.match(ref):
        return f"<@{ref}>"
    if GROUP_RE.match(ref):
        return f"<!subteam^{ref}>"
    return f"<#{ref}>"


def expand_group(ctx: Context, *, request_id: str, group: str, members: list[str]) -> None:
    """A user group named by an escalation step: a DM to each member (each posted once)."""

    def tx(session) -> None:
        repo = Repo(session)
        now = ctx.clock()
        req = repo.get(request_id)
        if req is None:
            return
        for user in members:
            msg, created = repo.add_message(req.id, "escalation", user, now)
            if created:
                repo.enqueue("slack.post", {"message_id": msg.id}, now, request_id=req.id)
        repo.append_event(req, "escalation.expanded", "signoff", {"group": group, "members": members}, now)

    ctx.store.transaction(tx)
    ctx.notify()
