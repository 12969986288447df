"""Runtime policy: what the workflow file says about one request.

Pure functions of (workflow definition, request facts, now), shared by ``submit``, the
grant-time re-check and ``signoff policy explain`` so that the dry run and the real thing
can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from signoff.config import AutoApprove, Config, Rule, Workflow, _memo
from signoff.policy import rules as rules_
from signoff.policy import windows as win
from signoff.policy.rules import Facts, RuleResult


@dataclass(frozen=True)
class Evaluation:
    """The policy for one request under one workflow definition."""

    workflow: Workflow  # the definition in the file
    effective: Workflow  # what the request is decided under: the applying rule merged in
    rule: Rule | None  # the rule that applies (the first that matches)
    results: list[RuleResult]  # every rule, in order, with the conditions it failed
    deny: str | None  # a reason when the applying rule refuses the request
    rollback_required: bool
    auto_approve: AutoApprove | None  # None when no rule automates it, or the request is critical

    @property
    def rule_name(self) -> str | None:
        return self.rule.name if self.rule else None


def is_workflow_agent(config: Config, wf: Workflow, agent_id: str) -> bool:
    """Whether ``agent_id`` may submit to or execute for ``wf``: the workflow lists it and
    the file defines it."""
    return agent_id in wf.agents and config.agent(agent_id) is not None


def facts_of(action: Mapping[str, Any], risk: str, rollback_of: str | None = None) -> Facts:
    """The facts rules match on, from a submission's (or a stored request's) fields."""
    env = action.get("environment")
    return Facts(action_type=str(action.get("type", "")), target=str(action.get("target", "")),
                 environment=env if isinstance(env, str) else None, risk=risk,
                 is_rollback=bool(rollback_of))


def evaluate(wf: Workflow, facts: Facts) -> Evaluation:
    """Which rule applies and what it means for the request."""
    memo = _memo(wf)  # the workflow's models are immutable once loaded: prepare its rules once
    compiled = memo.get("compiled_rules")
    if compiled is None:
        compiled = memo.setdefault("compiled_rules", rules_.compile_rules(wf.rules))
    results = rules_.evaluate(wf.rules, facts, compiled)
    first = next((r.index for r in results if not r.mismatched), None)
    rule = wf.rules[first] if first is not None else None
    effective = wf.merged(rule)
    auto = rule.auto_approve if rule is not None and rules_.may_auto_approve(facts.risk) else None
    return Evaluation(
        workflow=wf,
        effective=effective,
        rule=rule,
        results=results,
        deny=rule.deny if rule is not None else None,
        rollback_required=rules_.rollback_required(
            facts.risk, workflow=wf.require_rollback,
            rule=rule.require_rollback if rule is not None else None),
        auto_approve=auto,
    )


def schedule_of(wf: Workflow) -> win.Schedule:
    """The change windows and freezes of a (usually effective) workflow definition."""
    memo = _memo(wf)
    schedule = memo.get("schedule")
    if schedule is None:
        schedule = memo.setdefault("schedule", win.Schedule(tuple(w.to_domain() for w in wf.windows),
                                                             tuple(f.to_domain() for f in wf.freezes)))
    return schedule
