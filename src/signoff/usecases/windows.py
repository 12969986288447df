"""Change windows and freezes at grant time.

Two definitions must both allow the grant: the policy the request was decided under
(its snapshot: the request keeps the windows it was approved against) and the current
file's policy for the same request (a freeze declared since, or a narrowed window, stops
a waiting grant too). Without windows or freezes in either, always open.
"""

from __future__ import annotations

from datetime import datetime

from signoff.config import Workflow
from signoff.policy.evaluate import execution_check, schedule_of
from signoff.store.tables import RequestRow
from signoff.usecases.common import workflow_snapshot


def check(req: RequestRow, current: Workflow, now: datetime) -> tuple[bool, str, datetime | None]:
    """(allowed, reason, not_before): whether a grant may be issued now under the request's
    snapshot and ``current``, the current file's effective policy for it; if not, why and
    from when (None: no moment within a year, which refuses the grant)."""
    verdict = execution_check([schedule_of(workflow_snapshot(req)), schedule_of(current)], now)
    if not verdict.allowed and verdict.not_before is None:
        return False, "no_change_window_within_a_year", None
    return verdict.allowed, verdict.reason, verdict.not_before
