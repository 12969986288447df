"""Escalation ladder arithmetic. Pure.

Step ``k`` (counted from 0 over the whole life of a request) is step ``k % n`` of the
ladder in cycle ``k // n``. Without ``repeat`` there is one cycle. With ``repeat`` the
ladder starts over every ``period`` (the last step's ``after``) until the timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Ladder:
    afters: tuple[timedelta, ...]
    timeout: timedelta
    repeat: bool = False

    @property
    def period(self) -> timedelta:
        return self.afters[-1] if self.afters else self.timeout

    def offset(self, k: int) -> timedelta | None:
        """When step ``k`` falls, measured from submission; None when it never does."""
        n = len(self.afters)
        if n == 0:
            return None
        cycle, index = divmod(k, n)
        if cycle > 0 and not self.repeat:
            return None
        at = cycle * self.period + self.afters[index]
        return at if at < self.timeout else None

    def step_index(self, k: int) -> int:
        return k % len(self.afters)

    def due(self, submitted: datetime, fired: int, now: datetime) -> list[int]:
        """The steps owed at ``now`` given ``fired`` already fired, in order (after downtime, several)."""
        out = []
        k = fired
        while True:
            off = self.offset(k)
            if off is None or submitted + off > now:
                return out
            out.append(k)
            k += 1

    def next_at(self, submitted: datetime, fired: int) -> datetime | None:
        off = self.offset(fired)
        return submitted + off if off is not None else None


def next_due(submitted: datetime, deadline: datetime, ladder: Ladder, fired: int) -> datetime:
    """The next moment a pending request needs a sweep: its next step or its expiry."""
    step = ladder.next_at(submitted, fired)
    return min(step, deadline) if step else deadline
