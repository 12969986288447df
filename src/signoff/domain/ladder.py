"""Escalation ladder arithmetic. Pure: no I/O, no clock — every moment is an argument.

Steps are counted from 0 over the whole life of a request: step ``k`` is rung ``k % n``
of the ladder in cycle ``k // n`` (``n`` rungs). Without ``repeat`` there is one cycle.
With ``repeat`` the ladder starts over every ``period`` — the last rung's ``after`` — so
rung ``i`` of cycle ``c`` falls at ``c * period + after[i]`` from submission, for as long
as that is before the timeout. A step that would fall at or after the timeout never
fires: at the timeout the request expires instead.

The moments are monotonic in ``k`` (rungs are strictly increasing and every ``after`` is
positive), so "the steps owed at ``now``" is always a prefix of the steps not yet fired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

STEP = "step"
EXPIRE = "expire"


@dataclass(frozen=True)
class Ladder:
    afters: tuple[timedelta, ...]
    timeout: timedelta
    repeat: bool = False

    @classmethod
    def of(cls, workflow: Any) -> Ladder:
        """The ladder of a workflow definition (its ``escalation`` steps' ``after``, its
        ``timeout`` and ``repeat``)."""
        return cls(tuple(s.after for s in workflow.escalation), workflow.timeout, workflow.repeat)

    @property
    def period(self) -> timedelta:
        """How often a repeating ladder starts over (its last rung's ``after``)."""
        return self.afters[-1] if self.afters else self.timeout

    def offset(self, k: int) -> timedelta | None:
        """When step ``k`` falls, measured from submission; None when it never does."""
        n = len(self.afters)
        if n == 0 or k < 0:
            return None
        cycle, index = divmod(k, n)
        if cycle > 0 and (not self.repeat or self.period <= timedelta(0)):
            return None
        at = cycle * self.period + self.afters[index]
        return at if at < self.timeout else None

    def step_index(self, k: int) -> int:
        """Which rung of the configured ladder step ``k`` is."""
        return k % len(self.afters)

    def cycle(self, k: int) -> int:
        """0 for the first pass over the ladder, 1 for the first repeat, …"""
        return k // len(self.afters)

    def steps_total(self) -> int:
        """How many steps fire over a request's whole life when nobody decides."""
        k = 0
        while self.offset(k) is not None:
            k += 1
        return k

    def due(self, submitted: datetime, fired: int, now: datetime) -> list[int]:
        """The steps owed at ``now`` given ``fired`` already fired, in order.

        Usually zero or one; after downtime, every step that fell due meanwhile — each
        fires, in order, none instead of another.
        """
        out: list[int] = []
        k = fired
        while True:
            off = self.offset(k)
            if off is None or submitted + off > now:
                return out
            out.append(k)
            k += 1

    def next_at(self, submitted: datetime, fired: int) -> datetime | None:
        """When the next step (the one after ``fired`` steps) falls; None when none will."""
        off = self.offset(fired)
        return submitted + off if off is not None else None


@dataclass(frozen=True)
class Owed:
    """One thing time owes a pending request: step ``k`` at ``at``, or its expiry."""

    at: datetime
    kind: str  # STEP | EXPIRE
    k: int | None = None


def owed(submitted: datetime, deadline: datetime, ladder: Ladder, fired: int, now: datetime) -> list[Owed]:
    """Everything a pending request is owed at ``now``, in the order it fell due.

    The steps due (each once, in order) and, when ``now`` has reached the deadline, the
    expiry last. Steps falling at or after the deadline are never owed.
    """
    out = [
        Owed(submitted + off, STEP, k)
        for k in ladder.due(submitted, fired, min(now, deadline))
        if (off := ladder.offset(k)) is not None and submitted + off < deadline
    ]
    if now >= deadline:
        out.append(Owed(deadline, EXPIRE))
    return out


def next_due(submitted: datetime, deadline: datetime, ladder: Ladder, fired: int) -> datetime:
    """The next moment a pending request needs a sweep: its next step or its expiry."""
    step = ladder.next_at(submitted, fired)
    return min(step, deadline) if step is not None else deadline


def late_seconds(now: datetime, due: datetime) -> int | float:
    """How late (seconds, to the microsecond; never negative). A whole number is an int,
    so the stored JSON is already in its RFC 8785 form (``3``, not ``3.0``)."""
    late = max((now - due).total_seconds(), 0.0)
    return int(late) if late.is_integer() else late
