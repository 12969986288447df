"""The effective policy of a request: what the workflow file says about one submission.

Pure functions of (workflow file, request facts, now), shared by ``submit``, the Slack
"Roll back" button, the grant-time check (``policy.execute``) and ``signoff policy
explain``, so that the dry run and the real thing can never disagree. ``evaluate``: which
rule applies and the definition the request is decided under; ``plan``: a submission
checked in the documented order, or the domain error that refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from signoff.config import AutoApprove, Config, Rule, Workflow, _memo
from signoff.domain import approval
from signoff.domain.approval import quorum_reachable, step_sponsors
from signoff.domain.errors import Forbidden, Invalid, NotFound
from signoff.domain.identifiers import CHANNEL_RE, GROUP_RE
from signoff.policy import rules as rules_
from signoff.policy import windows as win
from signoff.policy.rules import Facts, RuleResult
from signoff.schemas import Submission


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
    return Facts(
        action_type=str(action.get("type", "")),
        target=str(action.get("target", "")),
        environment=env if isinstance(env, str) else None,
        risk=risk,
        is_rollback=bool(rollback_of),
    )


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
            facts.risk, workflow=wf.require_rollback, rule=rule.require_rollback if rule is not None else None
        ),
        auto_approve=auto,
    )


def schedule_of(wf: Workflow) -> win.Schedule:
    """The change windows and freezes of a (usually effective) workflow definition."""
    memo = _memo(wf)
    schedule: win.Schedule | None = memo.get("schedule")
    if schedule is None:
        schedule = memo.setdefault(
            "schedule", win.Schedule(tuple(w.to_domain() for w in wf.windows), tuple(f.to_domain() for f in wf.freezes))
        )
    return schedule


def agent_sponsor(config: Config, agent_id: str) -> str | None:
    """The person accountable for ``agent_id`` (None: the file no longer defines it)."""
    agent = config.agent(agent_id)
    return agent.sponsor if agent is not None else None


def possible_deciders(wf: Workflow) -> tuple[set[str], bool]:
    """Everyone who could ever decide a request of ``wf``: (the users named among its
    approvers and escalation targets, whether some are named through groups or channels)."""
    refs = set(wf.approver_ids) | {t for step in wf.escalation for t in step.to}
    groups = {r for r in refs if GROUP_RE.match(r) or CHANNEL_RE.match(r)}
    return refs - groups, bool(groups)


def approvable(wf: Workflow, sponsors: frozenset[str]) -> approval.Verdict:
    """Whether ``wf``'s quorum can be reached once ``sponsors`` are set aside."""
    people, unresolved = possible_deciders(wf)
    return quorum_reachable(people=people, unresolved=unresolved, sponsors=sponsors, required=wf.required_approvals)


@dataclass(frozen=True)
class Plan:
    """A submission the policy accepts, and what the policy says about it."""

    sub: Submission
    agent_id: str
    executor: str
    sponsor: str  # the submitting agent's sponsor (a chain may replace it)
    sponsors: frozenset[str]  # who may not approve it: the submitter's and executor's sponsors (a chain adds)
    evaluation: Evaluation
    verdict: win.Verdict  # may it execute at the moment of planning; if not, from when

    @property
    def workflow(self) -> Workflow:
        return self.evaluation.workflow

    @property
    def effective(self) -> Workflow:
        return self.evaluation.effective


def check_permission(config: Config, agent_id: str, sub: Submission) -> Workflow:
    """404 for an unknown workflow, 403 for an agent or executor outside it."""
    wf = config.workflow(sub.workflow)
    if wf is None:
        raise NotFound(f"unknown workflow {sub.workflow!r}")
    if not is_workflow_agent(config, wf, agent_id):
        raise Forbidden(f"agent {agent_id!r} may not submit to workflow {wf.id!r}")
    executor = sub.executor or agent_id
    if not is_workflow_agent(config, wf, executor):
        raise Forbidden(f"executor {executor!r} is not one of workflow {wf.id!r}'s agents")
    return wf


def check_rollback(ev: Evaluation, sub: Submission) -> None:
    """422 when the policy wants a rollback plan and the submission has none."""
    if ev.rollback_required and not sub.has_rollback_plan():
        why = (
            f"rule {ev.rule_name!r} requires"
            if ev.rule and ev.rule.require_rollback is not None
            else f"a {sub.risk}-risk request needs"
        )
        raise Invalid(f"{why} a rollback plan (rollback.description or rollback.action)", fields=["rollback"])


def plan(config: Config, agent_id: str, sub: Submission, now: datetime) -> Plan:
    """Apply the workflow's policy to a submission, in the documented order: unknown
    workflow (404), agent or executor not allowed (403), a deny rule (403), a missing
    rollback plan (422), no moment it could ever execute (403), nobody who could ever
    approve it once its agents' sponsors are set aside (403)."""
    wf = check_permission(config, agent_id, sub)
    ev = evaluate(wf, facts_of(sub.action_json(), sub.risk, sub.rollback_of))
    if ev.deny:
        raise Forbidden(f"refused by rule {ev.rule_name!r}: {ev.deny}")
    check_rollback(ev, sub)
    verdict = win.check([schedule_of(ev.effective)], now)
    if not verdict.allowed and verdict.not_before is None:
        raise Forbidden(
            f"this request could never execute: {verdict.reason}, and no change window opens "
            "outside the freezes within a year"
        )
    executor = sub.executor or agent_id
    sponsors = step_sponsors(submitter=agent_sponsor(config, agent_id), executor=agent_sponsor(config, executor))
    check_approvable(ev, sponsors)
    submitter = config.agent(agent_id)
    assert submitter is not None  # check_permission found it
    return Plan(
        sub=sub,
        agent_id=agent_id,
        executor=executor,
        sponsor=submitter.sponsor,
        sponsors=sponsors,
        evaluation=ev,
        verdict=verdict,
    )


def check_approvable(ev: Evaluation, sponsors: frozenset[str]) -> None:
    """403 when people could never reach the quorum with ``sponsors`` set aside (a rule
    that may approve it by policy is left to do so; beyond its budget it expires unapproved)."""
    if ev.auto_approve is not None:
        return
    verdict = approvable(ev.effective, sponsors)
    if not verdict.allowed:
        raise Forbidden(f"this request could never be approved: {verdict.reason}")
