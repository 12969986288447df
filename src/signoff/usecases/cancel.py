"""cancel: the submitting agent withdraws a pending request."""

from __future__ import annotations

from typing import Any

from signoff.domain.errors import Conflict, Forbidden
from signoff.domain.model import Status
from signoff.usecases.agent_ops import visible
from signoff.usecases.common import request_view
from signoff.usecases.effects import Effects, transaction
from signoff.usecases.ports import Context, Repository


def cancel(ctx: Context, *, agent_id: str, request_id: str) -> dict[str, Any]:
    """The submitter withdraws a pending request."""

    def tx(repo: Repository, fx: Effects) -> dict[str, Any]:
        req = visible(repo.get(request_id), agent_id)
        if req.submitted_by != agent_id:
            raise Forbidden("only the submitting agent may cancel a request")
        if req.status != Status.PENDING:
            raise Conflict(f"request is {req.status}; only a pending request can be cancelled")
        fx.move(req, Status.CANCELLED, actor=agent_id)
        req.due_at = None
        fx.refresh(req)
        return request_view(repo, req, viewer=agent_id)

    result = transaction(ctx, tx)
    ctx.notify()
    return result
