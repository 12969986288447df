"""An in-memory unit of work (``usecases.ports.UnitOfWork``) for unit tests of use-cases.

Rows are the store's mapped classes, never attached to a session: a use-case reads and sets
their attributes exactly as on the database. A transaction that raises is undone (every
request's columns and every collection put back as they were); nothing races here, so
nothing is ever retried. It holds what the use-cases under unit test use (requests,
decisions, evidence chains, the outbox, Slack message rows, idempotency keys, budgets);
an attribute it lacks raises ``AttributeError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from signoff.domain import chain
from signoff.domain.thread import TYPES as THREAD_TYPES
from signoff.store.repo import Repo
from signoff.store.tables import DecisionRow, EventRow, RequestRow, SlackMessageRow

T = TypeVar("T")
_COLUMNS = [c.key for c in RequestRow.__table__.columns]


@dataclass
class Idempotent:
    agent: str
    key: str
    body_sha256: str
    request_id: str
    created_at: datetime


class FakeUnitOfWork:
    """The database of one test, in memory. Look at its collections to see what a use-case did."""

    def __init__(self) -> None:
        self.requests: dict[str, RequestRow] = {}
        self.decisions: list[DecisionRow] = []
        self.events: list[EventRow] = []
        self.outbox: list[dict[str, Any]] = []
        self.messages: list[SlackMessageRow] = []
        self.idempotency: dict[tuple[str, str], Idempotent] = {}
        self.budgets: list[tuple[str, str, datetime]] = []
        self.ledger: list[str] = []
        self.seen: set[str] = set()
        self.on_change: list[Callable[[frozenset[str]], None]] = []
        self.commits = 0

    # the port -----------------------------------------------------------------------
    def transaction(self, fn: Callable[[FakeRepository], T], *, attempts: int = 8, batch: bool = False) -> T:
        saved = self._save()
        repo = FakeRepository(self)
        try:
            result = fn(repo)
            repo.flush()
        except BaseException:
            self._restore(saved)
            raise
        self.commits += 1
        if repo.changed:
            for hook in self.on_change:
                hook(frozenset(repo.changed))
        return result

    def read(self, fn: Callable[[FakeRepository], T]) -> T:
        saved = self._save()
        try:
            return fn(FakeRepository(self))
        finally:
            self._restore(saved)

    @staticmethod
    def retryable(exc: BaseException) -> bool:
        return False

    # what tests look at -------------------------------------------------------------
    def outbox_kinds(self, request_id: str | None = None) -> list[str]:
        return [o["kind"] for o in self.outbox if request_id is None or o["request_id"] == request_id]

    def event_types(self, request_id: str) -> list[str]:
        return [e.type for e in self.events if e.request_id == request_id]

    # rollback -----------------------------------------------------------------------
    def _save(self) -> Any:
        rows = {rid: {c: getattr(r, c) for c in _COLUMNS} for rid, r in self.requests.items()}
        sizes = (
            len(self.decisions),
            len(self.events),
            len(self.outbox),
            len(self.messages),
            len(self.budgets),
            len(self.ledger),
        )
        msgs = [(m.channel, m.ts, m.digest_id) for m in self.messages]
        return rows, sizes, msgs, dict(self.idempotency), set(self.seen)

    def _restore(self, saved: Any) -> None:
        rows, sizes, msgs, idem, seen = saved
        self.requests = {rid: r for rid, r in self.requests.items() if rid in rows}
        for rid, values in rows.items():
            for c, v in values.items():
                setattr(self.requests[rid], c, v)
        nd, ne, no, nm, nb, nl = sizes
        del self.decisions[nd:], self.events[ne:], self.outbox[no:], self.messages[nm:], self.budgets[nb:]
        del self.ledger[nl:]
        for m, (channel, ts, digest_id) in zip(self.messages, msgs, strict=True):
            m.channel, m.ts, m.digest_id = channel, ts, digest_id
        self.idempotency, self.seen = idem, seen


class FakeRepository:
    """``usecases.ports.Repository`` on a ``FakeUnitOfWork``, for one transaction."""

    def __init__(self, db: FakeUnitOfWork):
        self.db = db
        self.changed: set[str] = set()
        self._fresh: set[str] = set()
        self._once: set[tuple[str, Any]] = set()
        self._unflushed: list[SlackMessageRow] = []

    # the transaction ----------------------------------------------------------------
    def flush(self) -> None:
        for m in self._unflushed:
            m.id = len(self.db.messages) + 1
            self.db.messages.append(m)
        self._unflushed.clear()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        yield

    def once(self, tag: str, key: Any) -> bool:
        if (tag, key) in self._once:
            return False
        self._once.add((tag, key))
        return True

    # requests -----------------------------------------------------------------------
    def get(self, request_id: str) -> RequestRow | None:
        return self.db.requests.get(request_id)

    @staticmethod
    def new_request(**fields: Any) -> RequestRow:
        return RequestRow(**fields)

    def insert_request(self, row: RequestRow, first_event: tuple[str, str, dict[str, Any]], at: datetime) -> None:
        for column in RequestRow.__table__.columns:
            if column.key not in row.__dict__:
                default = column.default
                value = None
                if default is not None and default.is_scalar:
                    value = default.arg
                elif default is not None and default.is_callable:
                    value = default.arg(None)
                setattr(row, column.key, value)
        row.event_count, row.head_hash, row.version = 0, chain.GENESIS, 1
        self.db.requests[row.id] = row
        self._fresh.add(row.id)
        self.append_event(row, *first_event, at)

    def touch(self, req: RequestRow) -> None:
        req.revision = (req.revision or 1) + 1
        if req.id not in self._fresh:
            self.changed.add(req.id)

    def claim_due(self, now: datetime, limit: int) -> list[RequestRow]:
        due = [r for r in self.db.requests.values() if r.due_at is not None and r.due_at <= now]
        return sorted(due, key=lambda r: r.due_at)[:limit]

    def children(self, request_id: str) -> list[RequestRow]:
        return [r for r in self.db.requests.values() if r.parent_id == request_id]

    def rollbacks_of(self, request_id: str) -> list[RequestRow]:
        return sorted((r for r in self.db.requests.values() if r.rollback_of == request_id), key=lambda r: r.created_at)

    def requests_where(
        self, *, status: list[str] | None = None, workflow: list[str] | None = None, limit: int = 100
    ) -> list[RequestRow]:
        rows = [
            r
            for r in self.db.requests.values()
            if (not status or r.status in status) and (not workflow or r.workflow in workflow)
        ]
        return sorted(rows, key=lambda r: r.created_at, reverse=True)[:limit]

    # decisions ----------------------------------------------------------------------
    def decisions(self, request_id: str) -> list[DecisionRow]:
        return [d for d in self.db.decisions if d.request_id == request_id]

    def add_decision(self, request_id: str, by: str, decision: str, at: datetime, reason: str | None = None) -> None:
        self.db.decisions.append(
            DecisionRow(
                id=len(self.db.decisions) + 1, request_id=request_id, by=by, decision=decision, at=at, reason=reason
            )
        )

    # evidence -----------------------------------------------------------------------
    def append_event(self, req: RequestRow, type_: str, actor: str, data: dict[str, Any], at: datetime) -> EventRow:
        values = Repo._event(req.id, (req.event_count or 0) + 1, req.head_hash or chain.GENESIS, type_, actor, data, at)
        event = EventRow(**values)
        self.db.events.append(event)
        req.event_count, req.head_hash = values["seq"], values["hash"]
        return event

    def append_event_by_id(self, request_id: str, type_: str, actor: str, data: dict[str, Any], at: datetime) -> bool:
        req = self.get(request_id)
        if req is None:
            return False
        self.append_event(req, type_, actor, data, at)
        return True

    def recorded_sponsors(self, request_ids: list[str]) -> dict[str, list[str]]:
        out = {}
        for e in self.db.events:
            if e.request_id in request_ids and e.seq == 1 and isinstance((e.data or {}).get("sponsors"), list):
                out[e.request_id] = [s for s in e.data["sponsors"] if isinstance(s, str)]
        return out

    def events(self, request_id: str) -> list[EventRow]:
        return [e for e in self.db.events if e.request_id == request_id]

    def thread_events(self, request_id: str) -> list[tuple[int, str, str, dict[str, Any]]]:
        return [(e.seq, e.type, e.actor, e.data) for e in self.events(request_id) if e.type in THREAD_TYPES]

    def ledger_append(self, request_id: str, at: datetime) -> None:
        self.db.ledger.append(request_id)

    # outbox -------------------------------------------------------------------------
    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        now: datetime,
        *,
        request_id: str | None = None,
        dedupe_key: str | None = None,
        delay: timedelta | None = None,
    ) -> None:
        if dedupe_key is not None and any(o["dedupe_key"] == dedupe_key for o in self.db.outbox):
            return
        self.db.outbox.append(
            {
                "kind": kind,
                "payload": payload,
                "request_id": request_id,
                "dedupe_key": dedupe_key,
                "due": now + (delay or timedelta(0)),
            }
        )

    def enqueue_many(self, rows: list[tuple[str, dict[str, Any], str | None]], now: datetime) -> None:
        for kind, payload, request_id in rows:
            self.enqueue(kind, payload, now, request_id=request_id)

    # slack messages -----------------------------------------------------------------
    def messages(self, request_id: str, role: str | None = None) -> list[SlackMessageRow]:
        return [m for m in self.db.messages if m.request_id == request_id and (role is None or m.role == role)]

    def messages_for(self, request_ids: list[str]) -> dict[str, list[SlackMessageRow]]:
        return {rid: self.messages(rid) for rid in request_ids}

    def message(self, message_id: int) -> SlackMessageRow | None:
        return next((m for m in self.db.messages if m.id == message_id), None)

    def messages_by_ts(self, channel: str | None, ts: str) -> list[SlackMessageRow]:
        rows = [m for m in self.db.messages if m.ts == ts]
        exact = [m for m in rows if channel and m.channel == channel]
        return exact or rows

    def add_message(
        self, request_id: str, role: str, target: str, now: datetime, *, fresh: bool = False
    ) -> tuple[SlackMessageRow, bool]:
        for m in self.messages(request_id, role):
            if m.target == target:
                return m, False
        m = SlackMessageRow(
            id=len(self.db.messages) + 1, request_id=request_id, role=role, target=target, created_at=now
        )
        self.db.messages.append(m)
        return m, True

    def new_message(self, request_id: str, role: str, target: str, now: datetime) -> SlackMessageRow:
        m = SlackMessageRow(request_id=request_id, role=role, target=target, created_at=now)
        self._unflushed.append(m)
        return m

    # idempotency, Slack event dedupe ------------------------------------------------
    def idempotency(self, agent: str, key: str) -> Idempotent | None:
        return self.db.idempotency.get((agent, key))

    def remember_idempotency(self, agent: str, key: str, body_sha256: str, request_id: str, now: datetime) -> None:
        self.db.idempotency[(agent, key)] = Idempotent(agent, key, body_sha256, request_id, now)

    def first_sighting(self, event_id: str, now: datetime) -> bool:
        if event_id in self.db.seen:
            return False
        self.db.seen.add(event_id)
        return True

    # budgets ------------------------------------------------------------------------
    def budget_used(self, scope: str, since: datetime) -> int:
        return sum(1 for s, _r, at in self.db.budgets if s == scope and at >= since)

    def lock_scope(self, scope: str) -> None:
        pass  # one transaction at a time

    def spend_budget(self, scope: str, request_id: str, now: datetime) -> None:
        self.db.budgets.append((scope, request_id, now))
