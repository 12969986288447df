"""The effects collector: Slack copies, thread notes, re-renders and security threads
that a transaction owes, kept until ``flush`` writes them in bulk."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from signoff.config import Workflow
from signoff.domain.ladder import Ladder
from signoff.domain.model import ExceptionKind
from signoff.usecases.common import exception_note, record_exception, workflow_snapshot
from signoff.usecases.ports import Repository

if TYPE_CHECKING:
    from signoff.store.tables import RequestRow, SlackMessageRow

# The roles of copies that carry live buttons: someone with one has been asked already.
ASKED_ROLES = ("request", "escalation")


class Effects:
    """What one transaction owes Slack, collected and written in bulk by ``flush``.

    The sweep's batch and the single use-cases that settle time-owed work (a click after
    the deadline, a group's expansion) share it: new message rows are written by one flush,
    then the outbox rows that need their ids, in the order the work asked for them (the
    batch's new escalation copies first: the people who can decide hear first)."""

    def __init__(self, repo: Repository, now: datetime, copies: dict[str, list[SlackMessageRow]]):
        self.repo = repo
        self.now = now
        self.copies = copies
        self.wfs: dict[str, Workflow] = {}
        self.ladders: dict[str, Ladder] = {}
        # outbox rows owed, in order: (kind, payload, message whose id goes in the payload)
        self.intents: list[tuple[str, dict[str, Any], SlackMessageRow | None, str]] = []

    def policy(self, req: RequestRow) -> Workflow:
        wf = self.wfs.get(req.id)
        if wf is None:
            wf = self.wfs[req.id] = workflow_snapshot(req)
            self.ladders[req.id] = Ladder.of(wf)
        return wf

    # -------------------------------------------------------------- outbox and messages
    def enqueue(self, req: RequestRow, kind: str, payload: dict[str, Any], msg: SlackMessageRow | None = None):
        self.intents.append((kind, payload, msg, req.id))

    def message(self, req: RequestRow, role: str, target: str) -> tuple[SlackMessageRow, bool]:
        """The copy of ``req`` for (role, target); created (unflushed) when new."""
        for m in self.copies.setdefault(req.id, []):
            if m.role == role and m.target == target:
                return m, False
        m = self.repo.new_message(req.id, role, target, self.now)
        self.copies[req.id].append(m)
        return m, True

    def flush(self) -> None:
        """Write the batch's rows; then the outbox rows that needed their message ids."""
        self.repo.flush()
        # The people who can decide hear first: the batch's new escalation copies go out
        # ahead of its notes and security threads (each request's rows keep their order).
        first = [i for i in self.intents if i[0] == "slack.post" and i[2] is not None and i[2].role == "escalation"]
        rest = [i for i in self.intents if not (i[0] == "slack.post" and i[2] is not None
                                                and i[2].role == "escalation")]
        self.repo.enqueue_many([(kind, {**payload, "message_id": msg.id} if msg is not None else payload, rid)
                                for kind, payload, msg, rid in first + rest], self.now)
        self.intents.clear()

    def note(self, req: RequestRow, text: str) -> None:
        """A note in the thread of the request's root message(s)."""
        for m in self.copies.get(req.id, []):
            if m.role == "request":
                self.enqueue(req, "slack.thread", {"text": text}, m)

    def refresh(self, req: RequestRow) -> None:
        """Every Slack copy of the request is re-rendered from its current state."""
        for m in self.copies.get(req.id, []):
            self.enqueue(req, "slack.update", {}, m)

    def raise_exception(self, req: RequestRow, kind: ExceptionKind, detail: str) -> None:
        """An exception for security review: one thread per request, notes after the first."""
        target = record_exception(self.repo, req, kind, self.now, detail, self.policy(req))
        msg, created = self.message(req, "exception", target)
        if created:
            self.enqueue(req, "slack.post", {}, msg)
        else:
            self.enqueue(req, "slack.update", {}, msg)
            self.enqueue(req, "slack.thread", {"text": exception_note(kind, detail)}, msg)

    def ask(self, req: RequestRow, target: str, reminder: str) -> None:
        """A copy of the request for ``target`` with live buttons; someone who has a copy
        already gets a reminder in its thread instead of a second copy."""
        existing = next((m for m in self.copies.get(req.id, []) if m.role in ASKED_ROLES and m.target == target),
                        None)
        if existing is None:
            msg, _ = self.message(req, "escalation", target)
            self.enqueue(req, "slack.post", {}, msg)
        elif existing.role == "escalation":
            self.enqueue(req, "slack.thread", {"text": reminder}, existing)
        # a root copy (role "request") gets the thread note
