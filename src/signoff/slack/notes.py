"""The wording of thread notes (``domain.notes.Note``) in Slack mrkdwn.

Use-cases record what happened; this turns it into the text a thread shows. A
``slack.thread`` outbox row carries the note (``note``) and, for readers of an older
version and as a fallback, the text it was rendered to when queued (``text``).
"""

from __future__ import annotations

from typing import Any

from signoff.domain import notes
from signoff.domain.identifiers import GROUP_RE, USER_RE
from signoff.domain.notes import Note


def mention(ref: str) -> str:
    """A user, user group or channel reference as Slack shows it."""
    if USER_RE.match(ref):
        return f"<@{ref}>"
    if GROUP_RE.match(ref):
        return f"<!subteam^{ref}>"
    return f"<#{ref}>"


def text(note: Note) -> str:
    """The note's text; ValueError for a kind this version does not know."""
    d = note.data
    if note.kind == notes.APPROVED:
        return f"<@{note.actor}> approved ({d['have']} of {d['required']})."
    if note.kind == notes.REVOKED:
        return f"<@{note.actor}> revoked the automatic approval; the grant is withdrawn."
    if note.kind == notes.ROLLBACK_REQUESTED:
        return f"<@{note.actor}> asked to roll this back: request {d['request']}."
    if note.kind == notes.WAITING_FOR_WINDOW:
        return f"Approved; waiting for a change window: the grant will be issued at {d['at']} ({d['reason']})."
    if note.kind == notes.ESCALATED:
        names = ", ".join(mention(t) for t in d["to"])
        if d.get("reminder"):
            again = d.get("again") or 0
            return f"Reminder (escalation step {d['step']}): still no decision; asking again: {names}" + (
                f" and {again} other(s) asked before." if again else "."
            )
        return f"Escalated (step {d['step']}): no decision yet, now also asking {names}."
    if note.kind == notes.REMINDER:
        step = d.get("step")
        return "Reminder: this request still needs a decision" + (
            f" (escalation step {step})." if step is not None else "."
        )
    if note.kind == notes.EXCEPTION:
        detail = d.get("detail") or ""
        return f"New exception: {d['kind']}" + (f" — {detail}" if detail else "")
    raise ValueError(f"unknown note kind {note.kind!r}")


def thread_text(payload: dict[str, Any]) -> str:
    """The text of a ``slack.thread`` row: worded now from its note; a row queued by an
    older version (text only), or a note this version cannot word, falls back to the
    text stored with it."""
    if "note" in payload:
        try:
            return text(Note.from_payload(payload["note"]))
        except (ValueError, KeyError, TypeError):
            if "text" not in payload:
                raise
    return payload["text"]
