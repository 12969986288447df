"""Who may decide a request, and when a quorum is reached. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from signoff.domain.model import Decision


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""


SPONSOR_REASON = (
    "you sponsor an agent that submitted or executes this request, or an earlier step of its "
    "chain, so you cannot approve it"
)


def step_sponsors(*, submitter: str | None, executor: str | None, chain: Iterable[str | None] = ()) -> frozenset[str]:
    """The sponsors set aside from approving one step (separation of duties): the sponsor
    of the agent that submitted it, of the agent that executes it, and every sponsor
    already on the chain it joins. They may never approve it, whatever else they are
    (approver, group member, escalation target)."""
    return frozenset(s for s in (submitter, executor, *chain) if s)


def may_decide(
    *,
    clicker: str,
    decision: Decision,
    eligible: Iterable[str],
    sponsors: Iterable[str] = (),
    already_decided_by: Iterable[str] = (),
) -> Verdict:
    """May ``clicker`` record ``decision``?

    ``eligible`` is the set of users allowed at this moment (approver users, members of
    approver groups, and people brought in by escalation steps that have fired).
    ``sponsors`` (see ``step_sponsors``) may never approve; a sponsor who is also an
    eligible approver may still reject, which only fails safe.
    """
    eligible = set(eligible)
    if clicker in set(sponsors) and decision is Decision.APPROVE:
        return Verdict(False, SPONSOR_REASON)
    if clicker not in eligible:
        return Verdict(False, "you are not an approver of this workflow")
    if clicker in set(already_decided_by):
        return Verdict(False, "you have already decided on this request")
    return Verdict(True)


def approving(eligible: Iterable[str], sponsors: Iterable[str]) -> set[str]:
    """The users who may approve now: the eligible ones, sponsors set aside."""
    return set(eligible) - set(sponsors)


def quorum_reachable(*, people: Iterable[str], unresolved: bool, sponsors: Iterable[str], required: int) -> Verdict:
    """Could ``required`` distinct people ever approve a step?

    ``people``: every user who could ever decide it (approvers and escalation targets);
    ``unresolved``: some of them are named through user groups or channels, whose members
    are known only at click time — then the answer is yes (it is settled when they click,
    and a request nobody approves in time expires). Otherwise the step's sponsors are set
    aside and the rest counted."""
    if unresolved:
        return Verdict(True)
    people = set(people)
    left = approving(people, sponsors)
    if len(left) >= required:
        return Verdict(True)
    aside = sorted(people & set(sponsors))
    return Verdict(
        False,
        f"it needs {required} distinct approval(s), but only {len(left)} of the people who "
        f"could ever approve it may: {', '.join(aside)} sponsor(s) an agent on it "
        "(submitter, executor or its chain) and may not approve",
    )


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
