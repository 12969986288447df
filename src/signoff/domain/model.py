"""The request state machine."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# A status never moves backwards: these are the only edges.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.APPROVED, Status.REJECTED, Status.EXPIRED, Status.CANCELLED}),
    # approved → rejected: the runtime re-check refused; approved → expired: approval lapsed.
    Status.APPROVED: frozenset({Status.EXECUTING, Status.SUCCEEDED, Status.FAILED, Status.REJECTED, Status.EXPIRED}),
    Status.EXECUTING: frozenset({Status.SUCCEEDED, Status.FAILED}),
}

TERMINAL = frozenset({Status.REJECTED, Status.EXPIRED, Status.CANCELLED, Status.SUCCEEDED, Status.FAILED})
OPEN = frozenset({Status.PENDING})
DECIDED = frozenset(Status) - OPEN


def can_move(current: str, new: str) -> bool:
    return Status(new) in TRANSITIONS.get(Status(current), frozenset())


class IllegalTransition(Exception):
    """A status change the state machine has no edge for."""


def transition(current: str, new: Status) -> Status:
    """``new``, when the state machine lets ``current`` move there; IllegalTransition otherwise."""
    if not can_move(current, new):
        raise IllegalTransition(f"{current} → {new}")
    return new


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


# Exceptions security reviews (see docs/evidence.md).
class ExceptionKind(StrEnum):
    REJECTED = "rejected"
    EXPIRED = "expired"
    ESCALATED = "escalated"
    REFUSED_CLICK = "refused_click"
    FAILED = "failed"
    GRANT_UNUSED = "grant_without_outcome"
    POLICY_REFUSED = "policy_refused"
    STEP_UP_REFUSED = "step_up_refused"
