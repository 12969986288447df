"""escalate: a ladder step falls due, and a user group it named is expanded.

The ladder (when each step falls) is ``domain.ladder.Ladder``; the sweep finds the steps
owed and calls ``fire_step`` for each, in order. A step posts the request to its people
(a copy with live buttons each; a reminder in the thread of someone asked before), notes
it in the request's thread, records ``escalation.fired`` and, on the ladder's first pass,
an exception for security review. A user group is looked up in Slack after commit (an
outbox ``slack.expand`` row); its members come back through ``expand_group``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from signoff.domain import notes
from signoff.domain.identifiers import GROUP_RE
from signoff.domain.ladder import late_seconds
from signoff.domain.model import ExceptionKind, Status
from signoff.domain.notes import Note
from signoff.usecases.effects import ASKED_ROLES, Effects
from signoff.usecases.ports import Context, Repository

if TYPE_CHECKING:
    from signoff.store.tables import RequestRow


def fire_step(fx: Effects, req: RequestRow, k: int, due_at: datetime) -> int | float:
    """Step ``k``: post the request to the step's people, note it, record it; from now
    on they may decide (``steps_fired`` is what decide reads). Returns how late it fired
    (seconds)."""
    wf, ladder = fx.policy(req), fx.ladders[req.id]
    index, cycle = ladder.step_index(k), ladder.cycle(k)
    step = wf.escalation[index]
    late = late_seconds(fx.now, due_at)
    req.steps_fired = k + 1

    targets = list(dict.fromkeys(step.to))
    again = []
    if step.remind:
        # Re-ping everyone asked so far: each escalation copy gets a reminder in its
        # thread (the root copies get the thread note below).
        again = [m.target for m in fx.messages(req) if m.role == "escalation" and m.target not in targets]
    reminder = Note(notes.REMINDER, data={"step": k + 1})
    # A sponsor named by a step is not asked: their click would be refused (separation of duties).
    sponsors = fx.set_aside(req)
    for target in targets:
        if GROUP_RE.match(target):
            # Members are looked up through Slack after commit; each gets a DM then.
            fx.enqueue(
                req,
                "slack.expand",
                {"request_id": req.id, "group": target, "step": k},
                dedupe_key=f"expand:{req.id}:{k}:{target}",
            )
        elif target not in sponsors:
            fx.ask(req, target, reminder)
    for target in again:
        fx.ask(req, target, reminder)

    fired = {
        "step": k,
        "ladder_index": index,
        "cycle": cycle,
        "to": targets,
        "reminded": again,
        "remind": step.remind,
        "due_at": due_at.isoformat(),
        "late_seconds": late,
    }
    if skipped := [t for t in targets if t in sponsors]:
        fired["not_asked"] = skipped  # sponsors: they may not decide it
    fx.repo.append_event(req, "escalation.fired", "signoff", fired, fx.now)
    fx.note(
        req,
        Note(
            notes.ESCALATED,
            data={"step": k + 1, "to": targets, "again": len(again), "reminder": bool(step.remind or cycle > 0)},
        ),
    )
    if cycle == 0:
        # One exception per rung; a repeating ladder's later rounds are evidence events only.
        fx.raise_exception(req, ExceptionKind.ESCALATED, f"step {k + 1} to {', '.join(targets)}")
    return late


def expand_group(ctx: Context, *, request_id: str, group: str, members: list[str], step: int | None = None) -> None:
    """A user group named by escalation step ``step``: a DM to each member.

    A member who already has a copy of the request gets a reminder in its thread instead
    of a second copy. Once the request is no longer pending nobody is asked. Idempotent:
    a redelivered expansion of the same (group, step) does nothing more.
    """

    def tx(repo: Repository) -> None:
        now = ctx.clock()
        req = repo.get(request_id)
        if req is None:
            return
        if any(
            e.type == "escalation.expanded" and e.data.get("group") == group and e.data.get("step") == step
            for e in repo.events(req.id)
        ):
            return
        if req.status != Status.PENDING:
            repo.append_event(
                req,
                "escalation.expanded",
                "signoff",
                {"group": group, "step": step, "members": members, "asked": [], "status": req.status},
                now,
            )
            return
        fx = Effects.of(ctx, repo, now, repo.messages_for([req.id]), batch=True)
        # A member who sponsors the request is not asked: their click would be refused.
        sponsors = fx.set_aside(req)
        unique = [u for u in dict.fromkeys(members) if u not in sponsors]
        asked = [u for u in unique if not any(m.target == u and m.role in ASKED_ROLES for m in fx.copies[req.id])]
        reminder = Note(notes.REMINDER, data={"step": step + 1 if step is not None else None})
        expanded = {"group": group, "step": step, "members": members, "asked": asked}
        if skipped := sorted(set(members) & sponsors):
            expanded["not_asked"] = skipped
        with repo.deferred():
            for user in unique:
                fx.ask(req, user, reminder)
            repo.append_event(req, "escalation.expanded", "signoff", expanded, now)
        fx.flush()

    ctx.uow.transaction(tx)
    ctx.notify()
