"""outcome: the executor reports what became of the action (``succeeded`` or ``failed``)."""

from __future__ import annotations

from typing import Any

from signoff.domain.errors import Conflict, Forbidden, Invalid
from signoff.domain.model import ExceptionKind, Status
from signoff.usecases.agent_ops import visible
from signoff.usecases.common import request_view
from signoff.usecases.effects import Effects, transaction
from signoff.usecases.ports import Context, Repository


def record_outcome(ctx: Context, *, agent_id: str, request_id: str, body: Any) -> dict[str, Any]:
    """The executor reports ``succeeded`` or ``failed``; once."""
    if not isinstance(body, dict) or body.get("status") not in ("succeeded", "failed"):
        raise Invalid('outcome needs "status": "succeeded" or "failed"', fields=["status"])
    extra = set(body) - {"status", "detail"}
    if extra:
        raise Invalid(f"unknown field(s): {', '.join(sorted(extra))}", fields=sorted(extra))
    detail = body.get("detail")
    if detail is not None and (not isinstance(detail, str) or len(detail) > 4000):
        raise Invalid("detail must be a string of at most 4,000 characters", fields=["detail"])

    def tx(repo: Repository, fx: Effects) -> dict[str, Any]:
        now = fx.now
        req = visible(repo.get(request_id), agent_id)
        if req.executor != agent_id:
            raise Forbidden("only the executor may report the outcome")
        if req.outcome is not None or req.status not in (Status.APPROVED, Status.EXECUTING):
            raise Conflict(f"request is {req.status}; an outcome is accepted once, while approved or executing")
        if not req.grant_token:
            raise Conflict("no grant has been issued for this request yet")
        status = Status(body["status"])
        req.outcome = {
            "status": status.value,
            "detail": detail,
            "at": now.isoformat().replace("+00:00", "Z"),
            "by": agent_id,
        }
        fx.move(req, status, actor=agent_id, data={"detail": detail})
        req.due_at = None
        if status is Status.FAILED:
            fx.raise_exception(req, ExceptionKind.FAILED, detail or "")
        fx.refresh(req)
        return request_view(repo, req, viewer=agent_id)

    result = transaction(ctx, tx)
    ctx.notify()
    return result
