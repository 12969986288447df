"""Who may decide a request, and when a quorum is reached. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from signoff.domain.model import Decision


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""


def may_decide(
    *,
    clicker: str,
    decision: Decision,
    eligible: Iterable[str],
    sponsor: str | None,
    already_decided_by: Iterable[str] = (),
) -> Verdict:
    """May ``clicker`` record ``decision``?

    ``eligible`` is the set of users allowed at this moment (approver users, members of
    approver groups, and people brought in by escalation steps that have fired).
    The agent's sponsor may never approve their own agent's request (separation of duties);
    a sponsor who is also an eligible approver may still reject it, which only fails safe.
    """
    eligible = set(eligible)
    if sponsor and clicker == sponsor and decision is Decision.APPROVE:
        return Verdict(False, "you sponsor the agent that submitted this request, so you cannot approve it")
    if clicker not in eligible:
        return Verdict(False, "you are not an approver of this workflow")
    if clicker in set(already_decided_by):
        return Verdict(False, "you have already decided on this request")
    return Verdict(True)


def tally(decisions: Iterable[tuple[str, str]], required: int) -> str | None:
    """Outcome of a list of (user, decision): 'rejected', 'approved' or None (still open).

    One rejection by an eligible approver rejects whatever the quorum; approval needs
    ``required`` distinct approvers.
    """
    approvers = set()
    for user, decision in decisions:
        if decision == Decision.REJECT:
            return "rejected"
        approvers.add(user)
    return "approved" if len(approvers) >= required else None
