"""expire: no decision by the deadline — the request is expired (a denial).

The sweep expires requests when their deadline falls due; ``expire_if_overdue`` lets a
use-case that meets an overdue request first (a click after the deadline) settle it the
same way, so the deadline wins whatever the sweep's lag.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from signoff.domain.ladder import EXPIRE, late_seconds, owed
from signoff.domain.model import ExceptionKind, Status
from signoff.usecases.effects import Effects
from signoff.usecases.escalate import fire_step

if TYPE_CHECKING:
    from signoff.store.tables import RequestRow


def expire(fx: Effects, req: RequestRow, deadline: datetime) -> int | float:
    """Expired at ``deadline``: every copy of the message updated, an exception raised.
    Returns how late (seconds)."""
    late = late_seconds(fx.now, deadline)
    fx.move(req, Status.EXPIRED, actor="signoff", data={"deadline": deadline.isoformat(), "late_seconds": late})
    req.due_at = None
    fx.raise_exception(req, ExceptionKind.EXPIRED, "no decision before the timeout")
    fx.refresh(req)
    return late


def expire_if_overdue(fx: Effects, req: RequestRow) -> bool:
    """Settle a pending request whose deadline has passed (steps owed first, then expiry).

    For use-cases that find such a request before the sweep did (a click arriving after
    the deadline): the deadline wins, whatever the sweep's lag. True when it expired. Its
    effects are written as a sweep's batch would write them, before the caller goes on.
    """
    if req.status != Status.PENDING or fx.now < req.deadline:
        return False
    fx.policy(req)
    with fx.as_batch():
        for o in owed(req.created_at, req.deadline, fx.ladders[req.id], req.steps_fired, fx.now):
            if o.kind == EXPIRE:
                expire(fx, req, o.at)
            else:
                assert o.k is not None, "an owed step carries its index"
                fire_step(fx, req, o.k, o.at)
    return True
