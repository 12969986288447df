"""Auto-approval budgets: ``"5 per 1h"`` — at most 5 automatic approvals in any sliding hour.

Pure: the caller counts what was spent since ``since(now)`` and asks ``allows``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from signoff.domain.identifiers import fold
from signoff.durations import format_duration, parse_duration

_BUDGET = re.compile(r"^\s*(\d+)\s+per\s+(\S+)\s*$")
MAX_KEY = 300  # the stored scope column's width


@dataclass(frozen=True)
class Budget:
    limit: int
    per: timedelta

    def since(self, now: datetime) -> datetime:
        """Start of the sliding period that ends at ``now``."""
        return now - self.per

    def allows(self, used: int) -> bool:
        """True when one more automatic approval fits, ``used`` having been spent in the period."""
        return used < self.limit

    def __str__(self) -> str:
        return f"{self.limit} per {format_duration(self.per)}"


def parse_budget(value: object) -> Budget:
    """``"5 per 1h"`` (a count ≥ 1, the word ``per``, a duration) → Budget; ValueError otherwise."""
    if isinstance(value, Budget):
        return value
    m = _BUDGET.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"invalid budget {value!r}: write '<count> per <duration>', e.g. '5 per 1h'")
    limit = int(m.group(1))
    if limit < 1:
        raise ValueError(f"invalid budget {value!r}: the count must be at least 1")
    return Budget(limit, parse_duration(m.group(2)))


def scope_key(workflow: str, rule: str, scope: str, target: str) -> str:
    """What one budget counts: a rule's automatic approvals in a workflow, or per target.
    A target is counted in the caseless form rules match it in (``Checkout-API`` spends the
    budget of ``checkout-api``)."""
    key = f"wf:{workflow}:rule:{rule}"
    if scope == "target":
        target = fold(target)
        key += f":target:{target}"
        if len(key) > MAX_KEY:
            key = f"wf:{workflow}:rule:{rule}:target-sha256:{hashlib.sha256(target.encode()).hexdigest()}"
    return key
