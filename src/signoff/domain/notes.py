"""Notes in a request's Slack threads, as facts: what happened, who did it, the numbers.

Use-cases record a ``Note``; the Slack adapter (``slack.notes``) words it. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The kinds of note, and the facts (``data``) each carries.
APPROVED = "approved"  # actor approved; data: have, required
REVOKED = "revoked"  # actor revoked the automatic approval
ROLLBACK_REQUESTED = "rollback_requested"  # actor asked for a rollback; data: request (its id)
WAITING_FOR_WINDOW = "waiting_for_window"  # approved, the grant waits; data: at (ISO), reason
ESCALATED = "escalated"  # data: step (1-based), to (refs), again (how many asked before), reminder (bool)
REMINDER = "reminder"  # a reminder to someone asked before; data: step (1-based, or None)
EXCEPTION = "exception"  # a further exception in a security thread; data: kind, detail


@dataclass(frozen=True)
class Note:
    kind: str
    actor: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_payload(self) -> dict[str, Any]:
        """The note as an outbox payload carries it (JSON)."""
        return {"kind": self.kind, "actor": self.actor, "data": dict(self.data)}

    @classmethod
    def from_payload(cls, raw: Any) -> Note:
        """The note of an outbox payload; ValueError when it is not one."""
        if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
            raise ValueError("not a note")
        data = raw.get("data") or {}
        actor = raw.get("actor")
        if not isinstance(data, dict) or not (actor is None or isinstance(actor, str)):
            raise ValueError("not a note")
        return cls(raw["kind"], actor, data)
