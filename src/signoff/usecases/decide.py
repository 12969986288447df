"""decide: an approver clicks Approve or Reject in Slack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from signoff.config import Workflow
from signoff.domain.approval import SPONSOR_REASON, Verdict, may_decide, tally
from signoff.domain.identifiers import CHANNEL_RE, GROUP_RE
from signoff.domain.model import Decision, ExceptionKind, Status
from signoff.policy.rules import confirmation_text, typed_confirmation
from signoff.usecases.common import move, raise_exception, refresh_messages, sponsors_of, thread_note, workflow_snapshot
from signoff.usecases.expire import expire_if_overdue
from signoff.usecases.grant import issue_grant
from signoff.usecases.ports import Context


@dataclass(frozen=True)
class DecideResult:
    outcome: str  # recorded | approved | rejected | refused | already | unknown
    message: str
    status: str | None = None


def eligible_refs(wf: Workflow, steps_fired: int) -> list[str]:
    """Approver references (users, groups, channels) at this moment: the approvers plus
    everyone the escalation steps fired so far brought in."""
    refs = list(wf.approver_ids)
    n = len(wf.escalation)
    for k in range(steps_fired if n else 0):
        refs.extend(wf.escalation[k % n].to)
    return list(dict.fromkeys(refs))


def resolve(ctx: Context, refs: list[str]) -> set[str]:
    users = set()
    for ref in refs:
        if GROUP_RE.match(ref) or CHANNEL_RE.match(ref):
            users |= ctx.directory.members(ref)
        else:
            users.add(ref)
    return users


class Deciders(NamedTuple):
    workflow: Workflow  # the policy the request runs under
    steps_fired: int  # escalation steps fired when this was read
    eligible: set[str]  # users who may decide it now (approvers, group members, escalation targets)
    sponsors: frozenset[str]  # who may never approve it (domain.approval.step_sponsors)


def deciders(ctx: Context, request_id: str) -> Deciders | None:
    """Who may decide a request now; None when it does not exist. Read before the
    transaction opens: the directory look-ups (Slack calls) never run inside it."""
    config = ctx.config()

    def read(repo):
        req = repo.get(request_id)
        if req is None:
            return None
        return workflow_snapshot(req), req.steps_fired, sponsors_of(repo, config, [req])[req.id]

    pre = ctx.uow.read(read)
    if pre is None:
        return None
    wf, steps_fired, sponsors = pre
    return Deciders(wf, steps_fired, resolve(ctx, eligible_refs(wf, steps_fired)), sponsors)


MAX_REASON = 3000
CONFIRM_REFUSED = "the typed confirmation does not match the action's target"
STEP_UP_NEEDED = ("this workflow approves only after a sign-in at the company's identity provider: "
                  "use the Approve link in the message")


def decide(ctx: Context, *, request_id: str, user: str, decision: str, channel: str | None = None,
           confirmed_target: str | None = None, reason: str | None = None,
           step_up: dict | None = None) -> DecideResult:
    """Record a click. Exactly one decision wins however clicks race (compare-and-set).

    ``confirmed_target``: what the approver typed in the confirmation modal; an approval of a
    request that asks for a typed confirmation is recorded only when it is exactly the
    action's target (otherwise a ``confirmation.refused`` event, nothing decided).
    ``reason``: a rejection's stated reason, kept on the decision and shown everywhere.
    ``step_up``: what a verified sign-in at the identity provider proved (usecases.step_up);
    a workflow with ``step_up`` records an approval only with it. It is kept in the
    decision's evidence, and a refusal is then a ``step_up.refused`` event."""
    d = Decision(decision)
    if not (isinstance(reason, str) and d == Decision.REJECT):
        reason = None
    reason = (reason or "").strip()[:MAX_REASON] or None
    refused_type, refused_kind = ("step_up.refused", ExceptionKind.STEP_UP_REFUSED) if step_up else \
        ("click.refused", ExceptionKind.REFUSED_CLICK)
    via = {"step_up": step_up} if step_up else {}
    pre = deciders(ctx, request_id)
    if pre is None:
        return DecideResult("unknown", "This request no longer exists.")
    wf, steps_fired, eligible, sponsors = pre

    def tx(repo) -> DecideResult:
        now = ctx.clock()
        req = repo.get(request_id)
        if req is None:
            return DecideResult("unknown", "This request no longer exists.")
        # A click after the deadline loses to the expiry, whatever the sweep's lag.
        expire_if_overdue(repo, req, now)
        if req.steps_fired != steps_fired and req.status == Status.PENDING:
            raise _Retry()
        if req.status != Status.PENDING:
            repo.append_event(req, "click.repeated", user,
                              {"decision": d.value, "status": req.status, "channel": channel, **via}, now)
            if channel:
                repo.enqueue("slack.ephemeral", {"channel": channel, "user": user,
                                                 "text": f"This request is already {req.status}; nothing changed."},
                             now, request_id=req.id)
            return DecideResult("already", f"This request is already {req.status}.", req.status)
        prior = repo.decisions(req.id)
        mine = next((p for p in prior if p.by == user), None)
        if mine is not None:
            # A double click (or Slack's retry of it): evidence, not a refusal to review.
            repo.append_event(req, "click.repeated", user,
                              {"decision": d.value, "status": req.status, "channel": channel,
                               "earlier": mine.decision}, now)
            text = f"You already chose {mine.decision} on this request; nothing changed."
            if channel:
                repo.enqueue("slack.ephemeral", {"channel": channel, "user": user, "text": text}, now,
                             request_id=req.id)
            return DecideResult("already", text, req.status)
        verdict = may_decide(clicker=user, decision=d, eligible=eligible, sponsors=sponsors,
                             already_decided_by=[p.by for p in prior])
        if verdict.allowed and d is Decision.APPROVE and wf.step_up is not None and not step_up:
            verdict = Verdict(False, STEP_UP_NEEDED)
        if not verdict.allowed:
            refused = {"decision": d.value, "reason": verdict.reason, "channel": channel, **via}
            if verdict.reason == SPONSOR_REASON:
                refused["sponsors"] = sorted(sponsors)  # who is set aside, as evidence
            repo.append_event(req, refused_type, user, refused, now)
            if channel:
                repo.enqueue("slack.ephemeral", {"channel": channel, "user": user,
                                                 "text": f"Not recorded: {verdict.reason}."}, now,
                             request_id=req.id)
            raise_exception(repo, req, refused_kind, now, detail=f"{user}: {verdict.reason}")
            return DecideResult("refused", f"Not recorded: {verdict.reason}.", req.status)
        if d == Decision.APPROVE and typed_confirmation(req.risk, wf.confirm):
            if confirmed_target != confirmation_text(req.action):
                typed = None if confirmed_target is None else confirmed_target[:300]
                repo.append_event(req, "confirmation.refused", user,
                                  {"decision": d.value, "reason": CONFIRM_REFUSED, "typed": typed,
                                   "channel": channel, **via}, now)
                text = ("Not recorded: this request asks you to type its target to approve."
                        if confirmed_target is None else f"Not recorded: {CONFIRM_REFUSED}.")
                if channel:
                    repo.enqueue("slack.ephemeral", {"channel": channel, "user": user, "text": text}, now,
                                 request_id=req.id)
                return DecideResult("refused", text, req.status)
        repo.add_decision(req.id, user, d.value, now, reason=reason)
        repo.touch(req)  # the view's decisions grow, whether or not the quorum is met
        recorded = {"decision": d.value, "channel": channel, **via}
        if reason:
            recorded["reason"] = reason
        if d == Decision.APPROVE and confirmed_target is not None:
            recorded["confirmed"] = "typed target"
        repo.append_event(req, "decision.recorded", user, recorded, now)
        result = tally([(p.by, p.decision) for p in prior] + [(user, d.value)], wf.required_approvals)
        if result is None:
            have = len({p.by for p in prior if p.decision == "approve"}) + 1
            refresh_messages(repo, req, now)
            thread_note(repo, req, f"<@{user}> approved ({have} of {wf.required_approvals}).", now)
            return DecideResult("recorded", f"Approval recorded: {have} of {wf.required_approvals}.", req.status)
        req.due_at = None
        if result == "rejected":
            move(repo, req, Status.REJECTED, actor=user, now=now, data={"reason": reason} if reason else None)
            raise_exception(repo, req, ExceptionKind.REJECTED, now,
                            detail=f"rejected by {user}" + (f": {reason[:200]}" if reason else ""))
            refresh_messages(repo, req, now)
            return DecideResult("rejected", "You rejected this request.", req.status)
        move(repo, req, Status.APPROVED, actor=user, now=now)
        issue_grant(ctx, repo, req, now)
        refresh_messages(repo, req, now)
        return DecideResult("approved", "You approved this request.", req.status)

    for _ in range(3):
        try:
            result = ctx.uow.transaction(tx)
            break
        except _Retry:
            wf, steps_fired, eligible, sponsors = deciders(ctx, request_id)
    else:
        return DecideResult("refused", "The request changed while you clicked; please try again.")
    ctx.notify()
    return result


class _Retry(Exception):
    pass
