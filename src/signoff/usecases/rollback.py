"""rollback: the owner asks, from Slack, to roll back a request that ran.

After a request ``succeeded`` or ``failed``, its message offers "Roll back" when it
carried ``rollback.action``. The click creates a linked request (``rollback_of``) whose
action is that rollback action, submitted on behalf of — and executed by — the original
executor, through the same policy as any submission (rules may match it with
``match: {rollback: true}``). One live rollback per request: a second click points at
the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from signoff.domain import notes
from signoff.domain.errors import DomainError
from signoff.domain.model import ExceptionKind, Status
from signoff.domain.notes import Note
from signoff.policy.evaluate import plan
from signoff.usecases.decide import deciders
from signoff.usecases.effects import Effects, transaction
from signoff.usecases.ports import Context, RenderReads, Repository
from signoff.usecases.submit import create_request, parse_submission

if TYPE_CHECKING:
    from signoff.store.tables import RequestRow

OFFERED_FROM = (Status.SUCCEEDED, Status.FAILED)
DEAD = (Status.REJECTED, Status.EXPIRED, Status.CANCELLED)


@dataclass(frozen=True)
class RollbackResult:
    outcome: str  # created | refused | already | unknown
    message: str
    request_id: str | None = None


def rollback_action(req: RequestRow) -> dict[str, Any] | None:
    action = (req.rollback or {}).get("action")
    return action if isinstance(action, dict) and action else None


def live_rollback(repo: RenderReads, req: RequestRow) -> RequestRow | None:
    """A rollback of ``req`` that is not dead (rejected, expired, cancelled), if any."""
    return next((r for r in repo.rollbacks_of(req.id) if r.status not in DEAD), None)


def offers_rollback(repo: RenderReads, req: RequestRow) -> bool:
    """Whether the request's message shows a live "Roll back" button."""
    return req.status in OFFERED_FROM and rollback_action(req) is not None and live_rollback(repo, req) is None


def rollback_body(req: RequestRow, user: str) -> dict[str, Any]:
    """The submission a "Roll back" click makes: the rollback action, whose own way back
    is the original action."""
    title = f"Roll back: {req.title}"
    return {
        "workflow": req.workflow,
        "title": title if len(title) <= 200 else title[:199] + "…",
        "action": rollback_action(req),
        "justification": f'Roll back request {req.id} ("{req.title[:200]}"), which {req.status}; '
        f"asked for in Slack by {user}.",
        "risk": req.risk,
        "rollback": {"description": f"re-apply the action of request {req.id}", "action": req.action},
        "rollback_of": req.id,
        "executor": req.executor,
    }


def request_rollback(ctx: Context, *, request_id: str, user: str, channel: str | None = None) -> RollbackResult:
    """Create the rollback request of ``request_id`` for ``user`` (the workflow owner, or
    anyone who may decide its requests, but never a sponsor of its agents or its chain);
    refused privately, and recorded, otherwise."""
    pre = deciders(ctx, request_id)
    if pre is None:
        return RollbackResult("unknown", "This request no longer exists.")
    # A rollback is a new action by the agent: never asked for by a sponsor of the request.
    allowed = (pre.eligible | {pre.workflow.owner}) - pre.sponsors
    config = ctx.config()

    def tx(repo: Repository, fx: Effects) -> RollbackResult:
        now = fx.now
        req = repo.get(request_id)
        if req is None:
            return RollbackResult("unknown", "This request no longer exists.")

        def refuse(reason: str, *, exception: bool = False, outcome: str = "refused") -> RollbackResult:
            fx.refuse(
                req,
                "rollback.refused",
                user,
                {"reason": reason, "channel": channel},
                channel=channel,
                text=f"No rollback requested: {reason}.",
                exception=ExceptionKind.REFUSED_CLICK if exception else None,
                detail=f"{user}: {reason}",
            )
            return RollbackResult(outcome, f"No rollback requested: {reason}.")

        if user not in allowed:
            why = (
                "you sponsor an agent of this request, so you cannot ask for its rollback"
                if user in pre.sponsors
                else "only the workflow owner or its approvers may roll a request back"
            )
            return refuse(why, exception=True)
        if req.status not in OFFERED_FROM:
            return refuse(f"the request is {req.status}; a rollback is offered once it succeeded or failed")
        if rollback_action(req) is None:
            return refuse("the request carried no rollback action")
        existing = live_rollback(repo, req)
        if existing is not None:
            return refuse(f"a rollback is already requested: {existing.id} ({existing.status})", outcome="already")
        body = rollback_body(req, user)
        try:
            sub = parse_submission(body)
            p = plan(config, req.executor, sub, now)
            new = create_request(ctx, fx, p, body, origin={"requested_by": user, "via": "slack"})
        except DomainError as exc:
            return refuse(f"the policy refuses it: {exc.message}")
        fx.note(req, Note(notes.ROLLBACK_REQUESTED, user, {"request": new.id}))
        fx.refresh(req)
        return RollbackResult(
            "created", f"Rollback requested: {new.id}. It goes through approval like any request.", new.id
        )

    result = transaction(ctx, tx)
    ctx.notify()
    return result
