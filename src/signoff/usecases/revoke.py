"""revoke: the owner withdraws an automatic approval before the action executes.

A request approved by a rule's ``auto_approve`` is posted as information with a
"Revoke" button. Until the grant is delivered (the request is still ``approved``), the
workflow owner or anyone who may decide its requests can revoke it: the grant is
withdrawn (never delivered nor shown again) and the request becomes ``rejected``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from signoff.domain import notes
from signoff.domain.model import ExceptionKind, Status
from signoff.domain.notes import Note
from signoff.usecases.decide import deciders
from signoff.usecases.effects import Effects, transaction
from signoff.usecases.ports import Context, RenderReads, Repository

if TYPE_CHECKING:
    from signoff.store.tables import RequestRow

POLICY_RULE = "policy:rule:"


@dataclass(frozen=True)
class RevokeResult:
    outcome: str  # revoked | refused | already | unknown
    message: str
    status: str | None = None


def auto_approved_by(repo: RenderReads, req: RequestRow) -> str | None:
    """The rule that approved ``req`` by policy, if one did."""
    for d in repo.decisions(req.id):
        if d.decision == "approve" and d.by.startswith(POLICY_RULE):
            return d.by.removeprefix(POLICY_RULE)
    return None


def revocable(repo: RenderReads, req: RequestRow) -> bool:
    return req.status == Status.APPROVED and req.grant_delivered_at is None and auto_approved_by(repo, req) is not None


def revoke(ctx: Context, *, request_id: str, user: str, channel: str | None = None) -> RevokeResult:
    """Withdraw an automatic approval; refused (privately, and recorded) for anyone else
    and once the action is executing."""
    pre = deciders(ctx, request_id)
    if pre is None:
        return RevokeResult("unknown", "This request no longer exists.")
    # Revoking only withdraws an approval, like a rejection: the agent's sponsors may too.
    allowed = pre.eligible | {pre.workflow.owner}

    def tx(repo: Repository, fx: Effects) -> RevokeResult:
        now = fx.now
        req = repo.get(request_id)
        if req is None:
            return RevokeResult("unknown", "This request no longer exists.")
        rule = auto_approved_by(repo, req)

        def refuse(outcome: str, reason: str, *, exception: bool) -> RevokeResult:
            fx.refuse(
                req,
                "revoke.refused",
                user,
                {"reason": reason, "status": req.status, "channel": channel},
                channel=channel,
                text=f"Not revoked: {reason}.",
                exception=ExceptionKind.REFUSED_CLICK if exception else None,
                detail=f"{user}: {reason}",
            )
            return RevokeResult(outcome, f"Not revoked: {reason}.", req.status)

        if user not in allowed:
            return refuse(
                "refused", "only the workflow owner or its approvers may revoke an automatic approval", exception=True
            )
        if rule is None:
            return refuse("refused", "only an automatic approval can be revoked", exception=False)
        if req.status != Status.APPROVED or req.grant_delivered_at is not None:
            return refuse("already", f"the request is already {req.status}", exception=False)
        repo.add_decision(req.id, user, "reject", now)
        repo.append_event(
            req,
            "grant.revoked",
            user,
            {"rule": rule, "jti": (req.grant_claims or {}).get("jti"), "channel": channel},
            now,
        )
        req.grant_token = None  # never delivered nor shown from now on
        req.due_at = None
        req.not_before = None
        fx.move(req, Status.REJECTED, actor=user, data={"reason": "automatic approval revoked"})
        fx.raise_exception(req, ExceptionKind.REJECTED, f"automatic approval (rule {rule}) revoked by {user}")
        fx.note(req, Note(notes.REVOKED, user))
        fx.refresh(req)
        return RevokeResult("revoked", "You revoked this automatic approval; the grant is withdrawn.", req.status)

    result = transaction(ctx, tx)
    ctx.notify()
    return result
