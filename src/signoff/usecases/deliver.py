"""deliver: the executor webhook's answer — the grant delivered (the request executing),
or never delivered before it expired. (In pull mode the executor's read is the delivery:
``agent_ops.get_request``.)"""

from __future__ import annotations

from typing import Any

from signoff.domain.model import Status
from signoff.usecases.effects import Effects, transaction
from signoff.usecases.ports import Context, Repository


def mark_delivered(ctx: Context, *, request_id: str, detail: dict[str, Any]) -> None:
    """The executor webhook answered 2xx: the grant is delivered, the request executing."""

    def tx(repo: Repository, fx: Effects) -> None:
        now = fx.now
        req = repo.get(request_id)
        if req is None or req.grant_delivered_at is not None:
            return
        req.grant_delivered_at = now
        repo.append_event(req, "grant.delivered", "signoff", {"delivery": "webhook", **detail}, now)
        if req.status == Status.APPROVED:
            fx.move(req, Status.EXECUTING, actor="signoff", data={"delivery": "webhook"})
        fx.refresh(req)

    transaction(ctx, tx)
    ctx.notify()


def record_delivery_failure(ctx: Context, *, request_id: str, reason: str) -> None:
    """The webhook never answered 2xx before the grant expired."""

    def tx(repo: Repository, fx: Effects) -> None:
        now = fx.now
        req = repo.get(request_id)
        if req is None:
            return
        repo.append_event(req, "grant.undelivered", "signoff", {"reason": reason}, now)

    transaction(ctx, tx)
