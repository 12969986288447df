"""The request card: what a Slack rendering shows of one request, as typed, frozen data.

``blocks.py`` renders cards, never the display queries' dicts. ``RequestCard.from_view``
takes the plain data those queries return (``usecases.slack_ops.render_data``: the agent's
view of the request plus owners, approvers, exceptions, links and buttons to offer — or any
part of it, such as the confirmation modal's few fields) and is the one place that decides
what a missing or malformed value becomes.

Values are carried as they came, not made safe: agent-supplied text is escaped by the
renderer, which knows where each value goes. Times are ISO 8601 text, as the queries write
them; the renderer turns them into Slack date tokens (text that is no time is shown as text).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _given(value: Any) -> str | None:
    """A value shown only when it is there at all (an empty one counts as missing)."""
    return _text(value) if value else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class Decision:
    """One person's (or policy's) approve or reject."""

    decision: str | None  # approve | reject
    by: str | None  # a Slack user id, or "policy:<reason>" for a decision policy made
    at: str | None
    reason: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What the executor reported (all None before it did)."""

    by: str | None = None
    at: str | None = None
    detail: str | None = None  # agent-supplied


@dataclass(frozen=True)
class Rollback:
    """The agent's rollback plan: a description, a rollback action (a JSON value), or both."""

    description: str | None = None
    action: Any = None


@dataclass(frozen=True)
class ExceptionNote:
    """One security exception recorded on the request."""

    kind: str | None
    at: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Owners:
    """The owners on record in the request's policy snapshot (Slack ids)."""

    owner: str | None = None
    platform_owner: str | None = None
    security_owner: str | None = None


@dataclass(frozen=True)
class RequestCard:
    """One request as a Slack message, the App Home, a slash command or a modal shows it."""

    id: str = ""
    status: str = ""
    title: str | None = None
    workflow: str | None = None
    risk: str | None = None
    # the exact action as submitted (a JSON object): shown in full, and its hash beside it
    action: Mapping[str, Any] = field(default_factory=dict)
    action_sha256: str | None = None
    justification: str | None = None
    prompt: str | None = None
    rollback: Rollback | None = None
    parent_id: str | None = None
    rollback_of: str | None = None
    submitted_by: str | None = None
    executor: str | None = None
    sponsor: str | None = None
    created_at: str | None = None
    deadline: str | None = None
    not_before: str | None = None
    grant_expires_at: str | None = None
    decisions: tuple[Decision, ...] = ()
    outcome: Outcome = field(default_factory=Outcome)
    owners: Owners = field(default_factory=Owners)
    required_approvals: int = 1
    approvers: tuple[str, ...] = ()
    exceptions: tuple[ExceptionNote, ...] = ()
    reviewed_by: str | None = None
    reviewed_at: str | None = None
    evidence_url: str | None = None
    typed_confirmation: bool = False  # Approve opens a modal where the target is typed
    step_up_url: str | None = None  # Approve is this link to the identity provider's sign-in
    auto_approved_by: str | None = None  # the rule that approved it, when policy did
    revocable: bool = False  # offer "Revoke"
    can_roll_back: bool = False  # offer "Roll back"

    @property
    def action_type(self) -> str | None:
        return _text(self.action.get("type"))

    @property
    def target(self) -> str | None:
        return _text(self.action.get("target"))

    @property
    def environment(self) -> str | None:
        return _text(self.action.get("environment"))

    @classmethod
    def from_view(cls, view: Mapping[str, Any]) -> RequestCard:
        """The card of a display query's plain data; keys it lacks take their defaults."""
        v = view
        action = v.get("action")
        rb = v.get("rollback")
        outcome = v.get("outcome")
        owners = _mapping(v.get("owners"))
        return cls(
            id=_text(v.get("id")) or "",
            status=_text(v.get("status")) or "",
            title=_text(v.get("title")),
            workflow=_text(v.get("workflow")),
            risk=_text(v.get("risk")),
            action=dict(action) if isinstance(action, Mapping) else {},
            action_sha256=_text(v.get("action_sha256")),
            justification=_text(v.get("justification")),
            prompt=_given(v.get("prompt")),
            rollback=Rollback(_text(rb.get("description")), rb.get("action")) if isinstance(rb, Mapping) else None,
            parent_id=_given(v.get("parent_id")),
            rollback_of=_given(v.get("rollback_of")),
            submitted_by=_text(v.get("submitted_by")),
            executor=_text(v.get("executor")),
            sponsor=_given(v.get("sponsor")),
            created_at=_given(v.get("created_at")),
            deadline=_text(v.get("deadline")),
            not_before=_given(v.get("not_before")),
            grant_expires_at=_given(v.get("grant_expires_at")),
            decisions=tuple(
                Decision(_text(d.get("decision")), _text(d.get("by")), _text(d.get("at")), _given(d.get("reason")))
                for d in (v.get("decisions") or [])
                if isinstance(d, Mapping)
            ),
            outcome=Outcome(_given(outcome.get("by")), _given(outcome.get("at")), _given(outcome.get("detail")))
            if isinstance(outcome, Mapping)
            else Outcome(),
            owners=Owners(
                _given(owners.get("owner")), _given(owners.get("platform_owner")), _given(owners.get("security_owner"))
            ),
            required_approvals=_required(v.get("required_approvals")),
            approvers=tuple(str(a) for a in (v.get("approvers") or [])),
            exceptions=tuple(_exception(e) for e in (v.get("exceptions") or [])),
            reviewed_by=_given(v.get("reviewed_by")),
            reviewed_at=_given(v.get("reviewed_at")),
            evidence_url=_text(v.get("evidence_url")),
            typed_confirmation=bool(v.get("typed_confirmation")),
            step_up_url=_given(v.get("step_up_url")),
            auto_approved_by=_given(v.get("auto_approved_by")),
            revocable=bool(v.get("revocable")),
            can_roll_back=bool(v.get("can_roll_back")),
        )


def cards(views: Iterable[Mapping[str, Any]]) -> list[RequestCard]:
    """``RequestCard.from_view`` of each view, in order."""
    return [RequestCard.from_view(v) for v in views]


def _required(value: Any) -> int:
    try:
        return max(1, int(value or 1))
    except (TypeError, ValueError):
        return 1


def _exception(e: Any) -> ExceptionNote:
    if isinstance(e, Mapping):
        return ExceptionNote(_text(e.get("kind")), _text(e.get("at")), _given(e.get("detail")))
    return ExceptionNote(_text(e))  # a bare kind
