"""``signoff policy explain REQUEST.json [--at TIME]``: a dry run of the policy.

REQUEST.json is a submission body (docs/api.md) plus an optional ``"agent"`` — the
submitting agent, by default the workflow's first. The same functions ``submit`` uses
decide; nothing is written anywhere. Exit 0: it would be accepted; 1: refused (and why);
2: the request file, the time or the workflow file cannot be read or is invalid.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from signoff.api.agents import BadBody, parse_json
from signoff.config import Config, ConfigError, Workflow, load_config
from signoff.domain.errors import DomainError, Invalid
from signoff.durations import format_duration
from signoff.policy import windows as win
from signoff.policy.evaluate import evaluate, facts_of
from signoff.usecases.submit import Plan, ladder_of, parse_submission, plan

ACCEPTED, REFUSED, BAD_INPUT = 0, 1, 2
MAX_LADDER_LINES = 40


def explain(file: str, *, at: str | None = None, config_path: str | None = None,
            out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print what the policy would do with the submission in ``file``; the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        now = parse_at(at)
    except ValueError as exc:
        print(f"signoff: {exc}", file=err)
        return BAD_INPUT
    path = config_path or _config_path()
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"signoff: invalid workflow file {exc.source}:", file=err)
        for e in exc.errors:
            print(f"  {e}", file=err)
        return BAD_INPUT
    try:
        body = _read_body(file)
    except ValueError as exc:
        print(f"signoff: {exc}", file=err)
        return BAD_INPUT
    agent = body.pop("agent", None)
    if agent is not None and not isinstance(agent, str):
        print("signoff: \"agent\" must be an agent id (a string)", file=err)
        return BAD_INPUT
    try:
        sub = parse_submission(body)
    except Invalid as exc:
        print(f"signoff: {file}: {exc.message}", file=err)
        return BAD_INPUT
    return _explain(config, sub, agent, now, out)


def parse_at(at: str | None) -> datetime:
    """``--at``: an ISO 8601 date-time (a naive one is UTC); default now."""
    if not at:
        return datetime.now(timezone.utc).replace(microsecond=0)
    try:
        t = datetime.fromisoformat(at.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"--at {at!r} is not an ISO 8601 date-time (e.g. 2026-03-02T09:00:00Z)") from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _config_path() -> str:
    try:
        from signoff.settings import load_settings

        return load_settings().config_path
    except Exception:  # an unrelated setting is broken: the workflow file is all we need
        return os.environ.get("SIGNOFF_CONFIG", "signoff.yaml")


def _read_body(file: str) -> dict[str, Any]:
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        body = parse_json(raw)  # the API's own reading: duplicated keys, huge numbers refused
    except BadBody as exc:
        raise ValueError(f"{file} is not UTF-8 JSON: {exc.message}") from None
    except Invalid as exc:
        raise ValueError(f"{file}: {exc.message}") from None
    if not isinstance(body, dict):
        raise ValueError(f"{file} must hold a JSON object (a submission body)")
    return body


def _explain(config: Config, sub, agent: str | None, now: datetime, out: TextIO) -> int:
    def say(text: str = "") -> None:
        print(text, file=out)

    wf = config.workflow(sub.workflow)
    if agent is None and wf is not None and wf.agents:
        agent = wf.agents[0]
    say(f"Request:     {sub.title}")
    env = f" in {sub.action.environment}" if sub.action.environment else ""
    say(f"Action:      {sub.action.type} on {sub.action.target}{env}; risk {sub.risk}; "
        f"rollback plan: {'yes' if sub.has_rollback_plan() else 'no'}"
        + (f"; rolls back {sub.rollback_of}" if sub.rollback_of else ""))
    say(f"Evaluated at {win.iso(now)}")
    if wf is not None:
        say(f"Workflow:    {wf.id}" + (f" — {wf.description}" if wf.description else "")
            + f" (definition sha256 {wf.policy_hash()[:16]}…)")
        _rules(wf, sub, say)
    if agent is None:
        say()
        say("REFUSED (403): no submitting agent: give \"agent\" (the workflow lists no agents)"
            if wf is not None else f"REFUSED (404): unknown workflow {sub.workflow!r}")
        return REFUSED
    try:
        p = plan(config, agent, sub, now)
    except DomainError as exc:
        say()
        say(f"REFUSED ({exc.http_status}): {exc.message}")
        return REFUSED
    say(f"Agents:      submitted by {p.agent_id} (sponsor {p.sponsor}); executed by {p.executor}")
    say()
    say("ACCEPTED (201): the request would be recorded and posted"
        f" to {'channel ' + p.effective.channel if p.effective.channel else 'the owner ' + p.effective.owner}.")
    _approval(p, say)
    _ladder(p.effective, now, say)
    _execution(p, now, say)
    if sub.parent_id or sub.rollback_of:
        say("Links:       parent_id / rollback_of are checked against the database at submission "
            "(the agent must be part of the chain / have submitted or executed the original); "
            "not in a dry run.")
    say(f"Policy:      the request would record sha256 {p.effective.policy_hash()} (the workflow's definition"
        + (f" with rule {p.evaluation.rule_name!r} applied)" if p.evaluation.rule else ")"))
    return ACCEPTED


def _rules(wf: Workflow, sub, say) -> None:
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


def _approval(p: Plan, say) -> None:
    eff, ev = p.effective, p.evaluation
    who = ", ".join(eff.approver_ids)
    n = eff.required_approvals
    aside = f"{p.sponsor} (the agent's sponsor)" if p.sponsors <= {p.sponsor} else \
        f"{', '.join(sorted(p.sponsors))} (the submitting and executing agents' sponsors)"
    people = (f"{n} distinct approval{'s' if n > 1 else ''} from: {who}; one rejection rejects. "
              f"{aside} may not approve.")
    if ev.auto_approve is not None:
        say(f"Approval:    automatic — rule {ev.rule_name!r} approves by policy within its budget of "
            f"{ev.auto_approve.budget} (counted per {ev.auto_approve.scope}; what is spent is not known in a "
            "dry run). The grant is issued at once and the owner may revoke it before execution.")
        say(f"             Beyond the budget: {people}")
    else:
        if ev.rule is not None and ev.rule.auto_approve is not None:
            say("Approval:    no automation: a critical request always goes to people.")
            say(f"             {people}")
        else:
            say(f"Approval:    {people}")


def _ladder(eff: Workflow, now: datetime, say) -> None:
    say(f"Timeout:     {format_duration(eff.timeout)} — undecided by {win.iso(now + eff.timeout)} it expires "
        "(a denial)")
    ladder = ladder_of(eff)
    total = ladder.steps_total()
    if not total:
        say("Escalation:  none")
        return
    say("Escalation:" + (" (repeating)" if eff.repeat else ""))
    for k in range(min(total, MAX_LADDER_LINES)):
        off = ladder.offset(k)
        step = eff.escalation[ladder.step_index(k)]
        say(f"  after {format_duration(off)} ({win.iso(now + off)}): {', '.join(step.to)}"
            + (" (and a reminder to everyone asked before)" if step.remind else ""))
    if total > MAX_LADDER_LINES:
        say(f"  … {total - MAX_LADDER_LINES} more step(s)")


def _execution(p: Plan, now: datetime, say) -> None:
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
        say("Could execute: yes, as soon as it is approved"
            + (f" (inside a change window until {win.iso(closes)})" if closes else ""))
    else:
        say(f"Could execute: not now — {v.reason}; from {win.iso(v.not_before)} at the earliest "
            "(an approval before then waits for it)")
    if eff.approval_ttl is not None:
        say(f"  approval_ttl: an approval still waiting for a window after "
            f"{format_duration(eff.approval_ttl)} lapses (expired)")
