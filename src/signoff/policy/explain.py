"""A dry run of the policy, as text: what ``signoff policy explain`` prints.

The same functions ``submit`` uses decide (``policy.evaluate.plan``); nothing is read or
written anywhere. The command (``cli``) reads the submission and the workflow file and
prints the lines; it exits 0 when the submission would be accepted, 1 when refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from signoff.config import Config, Workflow
from signoff.domain.errors import DomainError
from signoff.domain.ladder import Ladder
from signoff.durations import format_duration
from signoff.policy import windows as win
from signoff.policy.evaluate import Plan, evaluate, facts_of, plan
from signoff.schemas import Submission

MAX_LADDER_LINES = 40

Say = Callable[..., None]


@dataclass(frozen=True)
class Explanation:
    """What the policy would do with a submission: accepted or refused, and why, as lines."""

    accepted: bool
    lines: tuple[str, ...]


def explain(config: Config, sub: Submission, agent: str | None, now: datetime) -> Explanation:
    """What the policy of ``config`` would do with ``sub`` from ``agent`` (None: the
    workflow's first agent) at ``now``."""
    lines: list[str] = []

    def say(text: str = "") -> None:
        lines.append(text)

    wf = config.workflow(sub.workflow)
    if agent is None and wf is not None and wf.agents:
        agent = wf.agents[0]
    say(f"Request:     {sub.title}")
    env = f" in {sub.action.environment}" if sub.action.environment else ""
    say(
        f"Action:      {sub.action.type} on {sub.action.target}{env}; risk {sub.risk}; "
        f"rollback plan: {'yes' if sub.has_rollback_plan() else 'no'}"
        + (f"; rolls back {sub.rollback_of}" if sub.rollback_of else "")
    )
    say(f"Evaluated at {win.iso(now)}")
    if wf is not None:
        say(
            f"Workflow:    {wf.id}"
            + (f" — {wf.description}" if wf.description else "")
            + f" (definition sha256 {wf.policy_hash()[:16]}…)"
        )
        _rules(wf, sub, say)
    if agent is None:
        say()
        say(
            'REFUSED (403): no submitting agent: give "agent" (the workflow lists no agents)'
            if wf is not None
            else f"REFUSED (404): unknown workflow {sub.workflow!r}"
        )
        return Explanation(False, tuple(lines))
    try:
        p = plan(config, agent, sub, now)
    except DomainError as exc:
        say()
        say(f"REFUSED ({exc.http_status}): {exc.message}")
        return Explanation(False, tuple(lines))
    say(f"Agents:      submitted by {p.agent_id} (sponsor {p.sponsor}); executed by {p.executor}")
    say()
    say(
        "ACCEPTED (201): the request would be recorded and posted"
        f" to {'channel ' + p.effective.channel if p.effective.channel else 'the owner ' + p.effective.owner}."
    )
    _approval(p, say)
    _ladder(p.effective, now, say)
    _execution(p, now, say)
    if sub.parent_id or sub.rollback_of:
        say(
            "Links:       parent_id / rollback_of are checked against the database at submission "
            "(the agent must be part of the chain / have submitted or executed the original); "
            "not in a dry run."
        )
    say(
        f"Policy:      the request would record sha256 {p.effective.policy_hash()} (the workflow's definition"
        + (f" with rule {p.evaluation.rule_name!r} applied)" if p.evaluation.rule else ")")
    )
    return Explanation(True, tuple(lines))


def _rules(wf: Workflow, sub: Submission, say: Say) -> None:
    ev = evaluate(wf, facts_of(sub.action_json(), sub.risk, sub.rollback_of))
    if not wf.rules:
        say("Rules:       none in this workflow; its own keys apply")
        return
    say("Rules:       (in order; the first that matches applies)")
    applied = False
    for r in ev.results:
        if r.matched and not applied:
            what = "MATCHES — applies"
            applied = True
        elif r.matched:
            what = "matches, but an earlier rule applies"
        else:
            what = "no match (" + ", ".join(r.mismatched) + ")"
        say(f"  {r.index + 1}. {r.name}: {what}")
    if not applied:
        say("  no rule matches: the workflow's own keys apply")


def _approval(p: Plan, say: Say) -> None:
    eff, ev = p.effective, p.evaluation
    who = ", ".join(eff.approver_ids)
    n = eff.required_approvals
    aside = (
        f"{p.sponsor} (the agent's sponsor)"
        if p.sponsors <= {p.sponsor}
        else f"{', '.join(sorted(p.sponsors))} (the submitting and executing agents' sponsors)"
    )
    people = f"{n} distinct approval{'s' if n > 1 else ''} from: {who}; one rejection rejects. {aside} may not approve."
    if ev.auto_approve is not None:
        say(
            f"Approval:    automatic — rule {ev.rule_name!r} approves by policy within its budget of "
            f"{ev.auto_approve.budget} (counted per {ev.auto_approve.scope}; what is spent is not known in a "
            "dry run). The grant is issued at once and the owner may revoke it before execution."
        )
        say(f"             Beyond the budget: {people}")
    else:
        if ev.rule is not None and ev.rule.auto_approve is not None:
            say("Approval:    no automation: a critical request always goes to people.")
            say(f"             {people}")
        else:
            say(f"Approval:    {people}")


def _ladder(eff: Workflow, now: datetime, say: Say) -> None:
    say(
        f"Timeout:     {format_duration(eff.timeout)} — undecided by {win.iso(now + eff.timeout)} it expires (a denial)"
    )
    ladder = Ladder.of(eff)
    total = ladder.steps_total()
    if not total:
        say("Escalation:  none")
        return
    say("Escalation:" + (" (repeating)" if eff.repeat else ""))
    for k in range(min(total, MAX_LADDER_LINES)):
        off = ladder.offset(k)
        assert off is not None  # every step below steps_total() falls
        step = eff.escalation[ladder.step_index(k)]
        say(
            f"  after {format_duration(off)} ({win.iso(now + off)}): {', '.join(step.to)}"
            + (" (and a reminder to everyone asked before)" if step.remind else "")
        )
    if total > MAX_LADDER_LINES:
        say(f"  … {total - MAX_LADDER_LINES} more step(s)")


def _execution(p: Plan, now: datetime, say: Say) -> None:
    eff = p.effective
    mode = f"POSTed to {eff.execution.webhook}" if eff.execution.webhook else "pulled by the executor"
    say(f"Execution:   a single-action grant valid {format_duration(eff.execution.grant_ttl)}, {mode}")
    for w in eff.windows:
        say(f"  window:    {w.to_domain().describe()}")
    for f in eff.freezes:
        say(f"  freeze:    {win.iso(f.to_domain().start)} – {win.iso(f.to_domain().end)}: {f.reason}")
    v = p.verdict
    if v.allowed:
        closes = win.window_closing([w.to_domain() for w in eff.windows], now)
        say(
            "Could execute: yes, as soon as it is approved"
            + (f" (inside a change window until {win.iso(closes)})" if closes else "")
        )
    else:
        assert v.not_before is not None  # plan refuses a request that could never execute
        say(
            f"Could execute: not now — {v.reason}; from {win.iso(v.not_before)} at the earliest "
            "(an approval before then waits for it)"
        )
    if eff.approval_ttl is not None:
        say(
            f"  approval_ttl: an approval still waiting for a window after "
            f"{format_duration(eff.approval_ttl)} lapses (expired)"
        )
