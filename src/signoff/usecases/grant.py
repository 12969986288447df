"""Issuing a grant: re-check runtime policy, then sign a single-action EdDSA JWT.

Called inside the transaction that approved the request (or the sweep that finds a
change window open). Never issues a grant for a request that is not ``approved``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from signoff.domain import notes
from signoff.domain.model import ExceptionKind, Status
from signoff.domain.notes import Note
from signoff.policy.execute import may_execute
from signoff.policy.windows import iso
from signoff.usecases.common import workflow_snapshot
from signoff.usecases.effects import Effects
from signoff.usecases.ports import Context

if TYPE_CHECKING:
    from signoff.store.tables import RequestRow


def issue_grant(ctx: Context, fx: Effects, req: RequestRow) -> bool:
    """Try to issue the grant; True when issued. Refusal rejects the request by policy."""
    repo, now = fx.repo, fx.now
    if req.status != Status.APPROVED or req.grant_token:
        return False
    verdict = may_execute(ctx.config(), req, workflow_snapshot(req), now)
    allowed, reason, not_before = verdict.allowed, verdict.reason, verdict.not_before
    repo.append_event(
        req,
        "policy.checked",
        "signoff",
        {"allowed": allowed, "reason": reason, "not_before": not_before.isoformat() if not_before else None},
        now,
    )
    if not allowed and not_before is not None:
        # Approved outside a change window: wait for it, unless the approval lapses first.
        if req.approval_expires_at is None:
            ttl = workflow_snapshot(req).approval_ttl
            if ttl is not None:
                req.approval_expires_at = (req.decided_at or now) + ttl
        if req.not_before != not_before:
            repo.touch(req)  # executable_from moves
            fx.note(req, Note(notes.WAITING_FOR_WINDOW, data={"at": iso(not_before), "reason": reason}))
        req.not_before = not_before
        req.due_at = min(x for x in (not_before, req.approval_expires_at) if x is not None)
        fx.refresh(req)
        return False
    if not allowed:
        repo.add_decision(req.id, f"policy:{reason}", "reject", now)
        fx.move(req, Status.REJECTED, actor=f"policy:{reason}", data={"reason": reason})
        req.due_at = None
        fx.raise_exception(req, ExceptionKind.POLICY_REFUSED, reason)
        fx.refresh(req)
        return False
    wf = workflow_snapshot(req)
    ttl = wf.execution.grant_ttl
    iat = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": "signoff",
        "sub": req.executor,
        "jti": req.id,
        "iat": iat,
        "nbf": iat,
        "exp": iat + int(ttl.total_seconds()),
        "action_sha256": req.action_sha256,
        "workflow": req.workflow,
    }
    token, kid = ctx.keys.sign_grant(claims)
    req.grant_token = token
    repo.touch(req)
    req.grant_claims = claims
    req.grant_expires_at = datetime.fromtimestamp(claims["exp"], now.tzinfo)
    req.not_before = None
    # The sweep looks again when the grant runs out without an outcome.
    req.due_at = req.grant_expires_at
    repo.append_event(req, "grant.issued", "signoff", {"claims": claims, "kid": kid}, now)
    current = ctx.config().workflow(req.workflow)
    webhook = (current.execution.webhook if current else None) or wf.execution.webhook
    if webhook:
        fx.enqueue(req, "webhook.execute", {"request_id": req.id, "url": webhook}, dedupe_key=f"webhook:{req.id}")
    fx.refresh(req)
    return True
