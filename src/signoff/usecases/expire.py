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
from signoff.usecases.common import move
from signoff.usecases.effects import Effects
from signoff.usecases.escalate import fire_step
from signoff.usecases.ports import Repository

if TYPE_CHECKING:
    from signoff.store.tables import RequestRow


def expire(fx: Effects, req: RequestRow, deadline: datetime) -> int | float:
    """Expired at ``deadline``: every copy of the message updated, an exception raised.
    Returns how late (seconds)."""
    late = late_seconds(fx.now, deadline)
    move(fx.repo, req, Status.EXPIRED, actor="signoff", now=fx.now,
         data={"deadline": deadline.isoformat(), "late_seconds": late})
    req.due_at = None
    fx.raise_exception(req, ExceptionKind.EXPIRED, "no decision before the timeout")
    fx.refresh(req)
    return late


def expire_if_overdue(repo: Repository, req: RequestRow, now: datetime) -> bool:
    """Settle a pending request whose deadline has passed (steps owed first, then expiry).

    For use-cases that find such a request before the sweep did (a click arriving after
    the deadline): the deadline wins, whatever the sweep's lag. True when it expired.
    """
    if req.status != Status.PENDING or now < req.deadline:
        return False
    fx = Effects(repo, now, repo.messages_for([req.id]))
    fx.policy(req)
    with repo.deferred():
        for o in owed(req.created_at, req.deadline, fx.ladders[req.id], req.steps_fired, now):
            if o.kind == EXPIRE:
                expire(fx, req, o.at)
            else:
                fire_step(fx, req, o.k, o.at)
    fx.flush()
    return True
