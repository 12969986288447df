"""The effects collector: what a transaction owes Slack and the outbox — Slack copies,
thread notes, re-renders, security threads, refusals and their private answers — kept
in order until ``flush`` writes them.

Every use-case records its effects here (``transaction`` opens one per transaction and
flushes it at the end), the single use-cases and the sweep's batch alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from signoff.config import Config, Workflow
from signoff.domain import notes
from signoff.domain.ladder import Ladder
from signoff.domain.model import TERMINAL, ExceptionKind, Status, transition
from signoff.domain.notes import Note
from signoff.usecases.common import sponsors_of, workflow_snapshot
from signoff.usecases.ports import Context, NoteText, Repository

if TYPE_CHECKING:
    from signoff.store.tables import RequestRow, SlackMessageRow

T = TypeVar("T")

# The roles of copies that carry live buttons: someone with one has been asked already.
ASKED_ROLES = ("request", "escalation")
# Closed requests: thread replies the Events API may have missed are looked for this late.
RECONCILE_AFTER = timedelta(seconds=2)


class _Owed:
    """One outbox row owed: ``msg`` is the message whose id goes in the payload (set at flush)."""

    __slots__ = ("dedupe_key", "delay", "kind", "msg", "payload", "request_id")

    def __init__(
        self,
        kind: str,
        payload: dict[str, Any],
        msg: SlackMessageRow | None,
        request_id: str | None,
        dedupe_key: str | None,
        delay: timedelta | None,
    ):
        self.kind, self.payload, self.msg, self.request_id = kind, payload, msg, request_id
        self.dedupe_key, self.delay = dedupe_key, delay

    @property
    def first(self) -> bool:
        # A new escalation copy: in a batch, the people who can decide hear first.
        return self.kind == "slack.post" and self.msg is not None and self.msg.role == "escalation"


class Effects:
    """What one transaction owes, collected and written by ``flush`` in the order asked.

    ``batch`` (the sweep's batch, a group's expansion, a request settled by its deadline):
    new message rows are added unflushed and written together by ``flush``, then the
    outbox rows that need their ids — the batch's new escalation copies first (the people
    who can decide hear first), the rest in order; rows that are delayed or deduplicated
    (a reconciliation, a group's look-up, the executor webhook) need no new id and are
    written at once. Otherwise every row is held and written in order at ``flush``.

    ``copies``: the requests' Slack messages when the caller read them already (the
    batch reads them in one query); any other request's are read when first needed.
    ``note_text``: words a thread note as stored with it (``ports.NoteText``)."""

    def __init__(
        self,
        repo: Repository,
        now: datetime,
        copies: dict[str, list[SlackMessageRow]] | None = None,
        *,
        batch: bool = False,
        note_text: NoteText | None = None,
        config: Config | None = None,
    ):
        self.repo = repo
        self.config = config
        self._set_aside: dict[str, frozenset[str]] = {}
        self.now = now
        self.copies = copies if copies is not None else {}
        self.batch = batch
        self.note_text = note_text
        self.wfs: dict[str, Workflow] = {}
        self.ladders: dict[str, Ladder] = {}
        self._owed: list[_Owed] = []
        self._refreshed: set[int] = set()

    @classmethod
    def of(
        cls,
        ctx: Context,
        repo: Repository,
        now: datetime,
        copies: dict[str, list[SlackMessageRow]] | None = None,
        *,
        batch: bool = False,
    ) -> Effects:
        return cls(repo, now, copies, batch=batch, note_text=ctx.note_text, config=ctx.config())

    def set_aside(self, req: RequestRow) -> frozenset[str]:
        """Who may never approve ``req`` (its agents' and its chain's sponsors,
        ``common.sponsors_of``): nobody asks them to decide it."""
        found = self._set_aside.get(req.id)
        if found is None:
            found = self._set_aside[req.id] = (
                sponsors_of(self.repo, self.config, [req])[req.id] if self.config is not None else frozenset()
            )
        return found

    def policy(self, req: RequestRow) -> Workflow:
        wf = self.wfs.get(req.id)
        if wf is None:
            wf = self.wfs[req.id] = workflow_snapshot(req)
            self.ladders[req.id] = Ladder.of(wf)
        return wf

    # -------------------------------------------------------------- outbox and messages
    def enqueue(
        self,
        req: RequestRow | None,
        kind: str,
        payload: dict[str, Any],
        msg: SlackMessageRow | None = None,
        *,
        dedupe_key: str | None = None,
        delay: timedelta | None = None,
        request_id: str | None = None,
    ) -> None:
        """An outbox row owed (``msg``: the message whose id the payload names)."""
        rid = req.id if req is not None else request_id
        if self.batch and (dedupe_key is not None or delay is not None):
            self.repo.enqueue(
                kind,
                {"message_id": msg.id, **payload} if msg is not None else payload,
                self.now,
                request_id=rid,
                dedupe_key=dedupe_key,
                delay=delay,
            )
            return
        self._owed.append(_Owed(kind, payload, msg, rid, dedupe_key, delay))

    def messages(self, req: RequestRow) -> list[SlackMessageRow]:
        """The request's Slack copies, this transaction's new ones included."""
        found = self.copies.get(req.id)
        if found is None:
            found = self.copies[req.id] = self.repo.messages(req.id)
        return found

    def fresh(self, req: RequestRow) -> None:
        """``req`` was created in this transaction: it has no copies yet."""
        self.copies.setdefault(req.id, [])

    def message(self, req: RequestRow, role: str, target: str) -> tuple[SlackMessageRow, bool]:
        """The copy of ``req`` for (role, target); created when new (unflushed in a batch)."""
        copies = self.messages(req)
        for m in copies:
            if m.role == role and m.target == target:
                return m, False
        if self.batch:
            m = self.repo.new_message(req.id, role, target, self.now)
        else:
            m, _ = self.repo.add_message(req.id, role, target, self.now, fresh=True)
        copies.append(m)
        return m, True

    def flush(self) -> None:
        """Write what is owed: new message rows, then the outbox rows, in order (see the class)."""
        owed, self._owed = self._owed, []
        if self.batch or any(o.msg is not None and o.msg.id is None for o in owed):
            self.repo.flush()
        if self.batch:
            owed = [o for o in owed if o.first] + [o for o in owed if not o.first]
        plain: list[tuple[str, dict[str, Any], str | None]] = []
        for o in owed:
            payload = {"message_id": o.msg.id, **o.payload} if o.msg is not None else o.payload
            if o.dedupe_key is None and o.delay is None:
                plain.append((o.kind, payload, o.request_id))
                continue
            self.repo.enqueue_many(plain, self.now)
            plain = []
            self.repo.enqueue(
                o.kind, payload, self.now, request_id=o.request_id, dedupe_key=o.dedupe_key, delay=o.delay
            )
        self.repo.enqueue_many(plain, self.now)

    @contextmanager
    def as_batch(self) -> Iterator[None]:
        """Within it, effects are collected as a batch's (see the class) and flushed on leaving."""
        was = self.batch
        self.flush()
        self.batch = True
        try:
            with self.repo.deferred():
                yield
            self.flush()
        finally:
            self.batch = was

    # -------------------------------------------------------------- what use-cases record
    def move(self, req: RequestRow, new: Status, *, actor: str, data: dict[str, Any] | None = None) -> None:
        """Change status (the version column makes it a compare-and-set) and record it."""
        old = req.status
        req.status = transition(old, new).value
        self.repo.touch(req)
        if old == Status.PENDING:
            req.decided_at = self.now
        self.repo.append_event(
            req, f"request.{new.value}", actor, {"from": old, "to": new.value, **(data or {})}, self.now
        )
        if new in TERMINAL:
            # Capture thread replies the Events API may have missed, once the request is closed.
            for m in self.messages(req):
                if m.role == "request":
                    self.enqueue(req, "slack.reconcile", {}, m, delay=RECONCILE_AFTER)

    def note(self, req: RequestRow, note: Note) -> None:
        """A note in the thread of the request's root message(s)."""
        for m in self.messages(req):
            if m.role == "request":
                self._thread(req, m, note)

    def _thread(self, req: RequestRow, msg: SlackMessageRow, note: Note) -> None:
        payload: dict[str, Any] = {"note": note.as_payload()}
        if self.note_text is not None:
            payload["text"] = self.note_text(note)
        self.enqueue(req, "slack.thread", payload, msg)

    def refresh(self, req: RequestRow, *, role: str | None = None) -> None:
        """Every Slack copy of the request (of ``role``) is re-rendered from its current state.

        Rendering happens at delivery, from what is committed then: one update per copy
        per transaction is enough, however many steps asked for it (a ``role`` asks for
        those copies again)."""
        for m in self.messages(req):
            if role is not None:
                if m.role == role:
                    self.enqueue(req, "slack.update", {}, m)
                continue
            key = id(m) if m.id is None else m.id
            if key in self._refreshed:
                continue
            self._refreshed.add(key)
            self.enqueue(req, "slack.update", {}, m)

    def answer(self, req: RequestRow, channel: str | None, user: str, text: str) -> None:
        """A private answer to ``user`` in ``channel`` (none without a channel)."""
        if channel:
            self.enqueue(req, "slack.ephemeral", {"channel": channel, "user": user, "text": text})

    def refuse(
        self,
        req: RequestRow,
        event: str,
        user: str,
        data: dict[str, Any],
        *,
        channel: str | None,
        text: str,
        exception: ExceptionKind | None = None,
        detail: str = "",
    ) -> None:
        """Refuse and record: the ``event`` as evidence, ``text`` privately to ``user`` (in
        ``channel``), and — for a refusal security should see — an exception."""
        self.repo.append_event(req, event, user, data, self.now)
        self.answer(req, channel, user, text)
        if exception is not None:
            self.raise_exception(req, exception, detail)

    def raise_exception(self, req: RequestRow, kind: ExceptionKind, detail: str = "") -> None:
        """An exception for security review: one thread per request, notes after the first."""
        target = self._record_exception(req, kind, detail)
        msg, created = self.message(req, "exception", target)
        if created:
            self.enqueue(req, "slack.post", {}, msg)
        else:
            self.enqueue(req, "slack.update", {}, msg)
            self._thread(req, msg, Note(notes.EXCEPTION, data={"kind": kind.value, "detail": detail}))

    def _record_exception(self, req: RequestRow, kind: ExceptionKind, detail: str) -> str:
        """On the request (re-opening review) and as evidence; returns where its security thread goes."""
        req.exceptions = list(req.exceptions or []) + [
            {"kind": kind.value, "at": self.now.isoformat(), "detail": detail}
        ]
        # a new exception re-opens review
        req.reviewed_at = None
        req.reviewed_by = None
        self.repo.append_event(req, "exception.raised", "signoff", {"kind": kind.value, "detail": detail}, self.now)
        wf = self.policy(req)
        return wf.security_channel or wf.security_owner

    def ask(self, req: RequestRow, target: str, reminder: Note) -> None:
        """A copy of the request for ``target`` with live buttons; someone who has a copy
        already gets ``reminder`` in its thread instead of a second copy."""
        existing = next((m for m in self.messages(req) if m.role in ASKED_ROLES and m.target == target), None)
        if existing is None:
            msg, _ = self.message(req, "escalation", target)
            self.enqueue(req, "slack.post", {}, msg)
        elif existing.role == "escalation":
            self._thread(req, existing, reminder)
        # a root copy (role "request") gets the thread note


def transaction(ctx: Context, work: Callable[[Repository, Effects], T], **options: Any) -> T:
    """``work(repo, fx)`` in one transaction of ``ctx.uow`` (``options``: its own), with
    one effects collector flushed when ``work`` returns; ``fx.now`` is the transaction's
    moment (the clock is read once per attempt)."""

    def tx(repo: Repository) -> T:
        fx = Effects.of(ctx, repo, ctx.clock())
        result = work(repo, fx)
        fx.flush()
        return result

    return ctx.uow.transaction(tx, **options)
