"""decide: an approver clicks Approve or Reject in Slack."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from signoff.config import Workflow
from signoff.domain import notes
from signoff.domain.approval import SPONSOR_REASON, Verdict, may_decide, tally
from signoff.domain.identifiers import CHANNEL_RE, GROUP_RE
from signoff.domain.model import Decision, ExceptionKind, Status
from signoff.domain.notes import Note
from signoff.policy.rules import confirmation_text, typed_confirmation
from signoff.usecases.common import sponsors_of, workflow_snapshot
from signoff.usecases.effects import Effects, transaction
from signoff.usecases.expire import expire_if_overdue
from signoff.usecases.grant import issue_grant
from signoff.usecases.ports import Context, Repository


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


def _in_directory(ref: str) -> bool:
    """Whether ``ref`` names people through the directory (a user group or channel)."""
    return bool(GROUP_RE.match(ref) or CHANNEL_RE.match(ref))


def resolve(ctx: Context, refs: list[str]) -> set[str]:
    """The users ``refs`` name (user ids, members of user groups and channels). Asks the
    directory (a Slack call, cached): never while a transaction or read is open."""
    users = set()
    for ref in refs:
        if _in_directory(ref):
            users |= ctx.directory.members(ref)
        else:
            users.add(ref)
    return users


def is_among(ctx: Context, user: str, refs: Iterable[str]) -> bool:
    """Whether ``user`` is among the users ``refs`` name (``resolve``, for one user): users
    named directly are checked before the directory is asked, and it is asked no more
    than needed. The same resolution as ``deciders``; never call it while a read is open."""
    refs = list(dict.fromkeys(refs))
    groups = [r for r in refs if _in_directory(r)]
    if user in set(refs) - set(groups):
        return True
    return any(user in ctx.directory.members(g) for g in groups)


class Deciders(NamedTuple):
    workflow: Workflow  # the policy the request runs under
    steps_fired: int  # escalation steps fired when this was read
    eligible: set[str]  # users who may decide it now (approvers, group members, escalation targets)
    sponsors: frozenset[str]  # who may never approve it (domain.approval.step_sponsors)


def deciders(ctx: Context, request_id: str) -> Deciders | None:
    """Who may decide a request now; None when it does not exist. Read before the
    transaction opens: the directory look-ups (Slack calls) never run inside it."""
    config = ctx.config()

    def read(repo: Repository) -> tuple[Workflow, int, frozenset[str]] | None:
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
STEP_UP_NEEDED = (
    "this workflow approves only after a sign-in at the company's identity provider: "
    "use the Approve link in the message"
)


def decide(
    ctx: Context,
    *,
    request_id: str,
    user: str,
    decision: str,
    channel: str | None = None,
    confirmed_target: str | None = None,
    reason: str | None = None,
    step_up: dict[str, Any] | None = None,
) -> DecideResult:
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
    refused_type, refused_kind = (
        ("step_up.refused", ExceptionKind.STEP_UP_REFUSED)
        if step_up
        else ("click.refused", ExceptionKind.REFUSED_CLICK)
    )
    via = {"step_up": step_up} if step_up else {}
    pre = deciders(ctx, request_id)
    if pre is None:
        return DecideResult("unknown", "This request no longer exists.")
    wf, steps_fired, eligible, sponsors = pre

    def tx(repo: Repository, fx: Effects) -> DecideResult:
        now = fx.now
        req = repo.get(request_id)
        if req is None:
            return DecideResult("unknown", "This request no longer exists.")
        # A click after the deadline loses to the expiry, whatever the sweep's lag.
        expire_if_overdue(fx, req)
        if req.steps_fired != steps_fired and req.status == Status.PENDING:
            raise _Retry()
        if req.status != Status.PENDING:
            fx.refuse(
                req,
                "click.repeated",
                user,
                {"decision": d.value, "status": req.status, "channel": channel, **via},
                channel=channel,
                text=f"This request is already {req.status}; nothing changed.",
            )
            return DecideResult("already", f"This request is already {req.status}.", req.status)
        prior = repo.decisions(req.id)
        mine = next((p for p in prior if p.by == user), None)
        if mine is not None:
            # A double click (or Slack's retry of it): evidence, not a refusal to review.
            text = f"You already chose {mine.decision} on this request; nothing changed."
            fx.refuse(
                req,
                "click.repeated",
                user,
                {"decision": d.value, "status": req.status, "channel": channel, "earlier": mine.decision},
                channel=channel,
                text=text,
            )
            return DecideResult("already", text, req.status)
        verdict = may_decide(
            clicker=user, decision=d, eligible=eligible, sponsors=sponsors, already_decided_by=[p.by for p in prior]
        )
        if verdict.allowed and d is Decision.APPROVE and wf.step_up is not None and not step_up:
            verdict = Verdict(False, STEP_UP_NEEDED)
        if not verdict.allowed:
            refused: dict[str, Any] = {"decision": d.value, "reason": verdict.reason, "channel": channel, **via}
            if verdict.reason == SPONSOR_REASON:
                refused["sponsors"] = sorted(sponsors)  # who is set aside, as evidence
            fx.refuse(
                req,
                refused_type,
                user,
                refused,
                channel=channel,
                text=f"Not recorded: {verdict.reason}.",
                exception=refused_kind,
                detail=f"{user}: {verdict.reason}",
            )
            return DecideResult("refused", f"Not recorded: {verdict.reason}.", req.status)
        if (
            d == Decision.APPROVE
            and typed_confirmation(req.risk, wf.confirm)
            and confirmed_target != confirmation_text(req.action)
        ):
            typed = None if confirmed_target is None else confirmed_target[:300]
            text = (
                "Not recorded: this request asks you to type its target to approve."
                if confirmed_target is None
                else f"Not recorded: {CONFIRM_REFUSED}."
            )
            fx.refuse(
                req,
                "confirmation.refused",
                user,
                {"decision": d.value, "reason": CONFIRM_REFUSED, "typed": typed, "channel": channel, **via},
                channel=channel,
                text=text,
            )
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
            fx.refresh(req)
            fx.note(req, Note(notes.APPROVED, user, {"have": have, "required": wf.required_approvals}))
            return DecideResult("recorded", f"Approval recorded: {have} of {wf.required_approvals}.", req.status)
        req.due_at = None
        if result == "rejected":
            fx.move(req, Status.REJECTED, actor=user, data={"reason": reason} if reason else None)
            fx.raise_exception(
                req, ExceptionKind.REJECTED, f"rejected by {user}" + (f": {reason[:200]}" if reason else "")
            )
            fx.refresh(req)
            return DecideResult("rejected", "You rejected this request.", req.status)
        fx.move(req, Status.APPROVED, actor=user)
        issue_grant(ctx, fx, req)
        fx.refresh(req)
        return DecideResult("approved", "You approved this request.", req.status)

    for _ in range(3):
        try:
            result = transaction(ctx, tx)
            break
        except _Retry:
            again = deciders(ctx, request_id)
            assert again is not None, "the transaction just read the request, and requests are never deleted"
            wf, steps_fired, eligible, sponsors = again
    else:
        return DecideResult("refused", "The request changed while you clicked; please try again.")
    ctx.notify()
    return result


class _Retry(Exception):
    pass
