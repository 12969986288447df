"""May an approved request execute now? The check made before a grant is issued.

The current file is what counts at run time: the workflow must still exist, the executor
must still be one of its agents, and a rule added since submission that denies the request
stops it here too. Two definitions must both allow the moment: the policy the request was
decided under (its snapshot: the request keeps the windows it was approved against) and
the current file's effective policy for the same request (a freeze declared since, or a
narrowed window, stops a waiting grant too). Without windows or freezes in either, always
open.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from signoff.config import Config, Workflow
from signoff.domain.model import Status
from signoff.policy import windows as win
from signoff.policy.evaluate import evaluate, facts_of, is_workflow_agent, schedule_of


class Executable(Protocol):
    """What the check reads of a request (a stored request row has it)."""

    @property
    def workflow(self) -> str: ...
    @property
    def executor(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def action(self) -> Mapping[str, Any]: ...
    @property
    def risk(self) -> str: ...
    @property
    def rollback_of(self) -> str | None: ...


def may_execute(config: Config, req: Executable, snapshot: Workflow, now: datetime) -> win.Verdict:
    """Whether a grant may be issued for ``req`` at ``now`` under ``config`` (the current
    file) and ``snapshot`` (the definition it was decided under); if not, why, and from
    when (``not_before``; None: never, which refuses the grant)."""
    wf = config.workflow(req.workflow)
    if wf is None:
        return win.Verdict(False, "workflow_removed")
    if not is_workflow_agent(config, wf, req.executor):
        return win.Verdict(False, "executor_not_allowed")
    if req.status != Status.APPROVED:
        return win.Verdict(False, "not_approved")
    current = evaluate(wf, facts_of(req.action, req.risk, req.rollback_of))
    if current.deny:
        return win.Verdict(False, f"denied_by_rule:{current.rule_name}")
    verdict = win.check([schedule_of(snapshot), schedule_of(current.effective)], now)
    if not verdict.allowed and verdict.not_before is None:
        return win.Verdict(False, "no_change_window_within_a_year")
    return verdict
