"""Change windows and freezes at grant time. Without any configured, always open."""

from __future__ import annotations

from datetime import datetime

from signoff.config import Workflow
from signoff.store.tables import RequestRow


def check(ctx, req: RequestRow, wf: Workflow, now: datetime) -> tuple[bool, str, datetime | None]:
    """(allowed, reason, not_before): whether a grant may be issued now."""
    return True, "ok", None
