"""Repository: the queries use-cases need, behind plain methods (no SQL in use-cases)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.orm.util import identity_key

from signoff.domain import chain
from signoff.domain.thread import TYPES as THREAD_TYPES
from signoff.store import fast
from signoff.store import step_up as flows
from signoff.store.db import CHANGED, Committed, written
from signoff.store.tables import (
    BudgetRow,
    DecisionRow,
    EventRow,
    IdempotencyRow,
    LedgerRow,
    OutboxRow,
    RequestRow,
    SeenEventRow,
    SlackDigestRow,
    SlackMessageRow,
)

LIVE_STATUSES = ("pending", "approved", "executing")
LEDGER_LOCK = 0x51670FF1  # PostgreSQL advisory lock key of the ledger head
_LOCKED = "signoff_locked_requests"  # session.info key: request rows this transaction has locked
_FRESH = "signoff_fresh_requests"  # session.info key: requests this transaction created
# session.info keys: request id -> the Slack messages / decisions this transaction added to
# a request it created (all it has: nothing to ask the database)
_FRESH_MESSAGES = "signoff_fresh_messages"
_FRESH_DECISIONS = "signoff_fresh_decisions"
# Statements written out per dialect (store.fast.execute), parameters by name.
_ADVISORY_LOCK = {"postgresql": "SELECT pg_advisory_xact_lock(%(k)s)"}
_LEDGER_HEAD = {d: "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1" for d in ("sqlite", "postgresql")}
_CHAIN_HEAD = {
    "sqlite": "SELECT event_count, head_hash, version FROM requests WHERE id = :id",
    "postgresql": "SELECT event_count, head_hash, version FROM requests WHERE id = %(id)s FOR UPDATE",
}
_MOVE_HEAD = {
    "sqlite": "UPDATE requests SET event_count = :seq, head_hash = :hash, version = :new "
    "WHERE id = :id AND version = :old",
    "postgresql": "UPDATE requests SET event_count = %(seq)s, head_hash = %(hash)s, version = %(new)s "
    "WHERE id = %(id)s AND version = %(old)s",
}
_RECORD_POST_SQL = {
    "sqlite": "UPDATE slack_messages SET channel = :channel, ts = :ts, posted_at = :at "
    "WHERE id = :id AND ts IS NULL RETURNING request_id, role, target",
    "postgresql": "UPDATE slack_messages SET channel = %(channel)s, ts = %(ts)s, posted_at = %(at)s "
    "WHERE id = %(id)s AND ts IS NULL RETURNING request_id, role, target",
}
_BUDGET_USED = {
    "sqlite": "SELECT count(*) FROM auto_approvals WHERE scope = :scope AND at >= :since",
    "postgresql": "SELECT count(*) FROM auto_approvals WHERE scope = %(scope)s AND at >= %(since)s",
}


@dataclass(frozen=True)
class Gauges:
    """Counts read at scrape time (``Repo.gauges``)."""

    by_status: dict[str, int]
    pending_by_workflow: dict[str, int]
    overdue: int
    outbox_pending: int
    outbox_dead: int


class Repo:
    """``usecases.ports.Repository`` on one SQLAlchemy session (one transaction)."""

    def __init__(self, session: Session):
        self.session = session

    # the transaction ----------------------------------------------------------------
    def flush(self) -> None:
        self.session.flush()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        with self.session.no_autoflush:
            yield

    def once(self, tag: str, key: Any) -> bool:
        done = self.session.info.setdefault(tag, set())
        if key in done:
            return False
        done.add(key)
        return True

    # operations ---------------------------------------------------------------------
    def gauges(self, now: datetime) -> Gauges:
        """What the metrics endpoint shows of the database: requests by status, pending
        requests by workflow, pending requests past their deadline, the outbox's depth."""
        by_status = dict(
            self.session.execute(select(RequestRow.status, func.count()).group_by(RequestRow.status)).all()
        )
        pending = dict(
            self.session.execute(
                select(RequestRow.workflow, func.count())
                .where(RequestRow.status == "pending")
                .group_by(RequestRow.workflow)
            ).all()
        )
        overdue = (
            self.session.scalar(
                select(func.count())
                .select_from(RequestRow)
                .where(RequestRow.status == "pending", RequestRow.deadline < now)
            )
            or 0
        )
        outbox = dict(
            self.session.execute(
                select(OutboxRow.state, func.count())
                .where(OutboxRow.state.in_(("pending", "dead")))
                .group_by(OutboxRow.state)
            ).all()
        )
        return Gauges(by_status, pending, overdue, outbox.get("pending", 0), outbox.get("dead", 0))

    # requests -----------------------------------------------------------------------
    def get(self, request_id: str) -> RequestRow | None:
        return self.session.get(RequestRow, request_id)

    @staticmethod
    def new_request(**fields: Any) -> RequestRow:
        return RequestRow(**fields)

    def insert_request(self, row: RequestRow, first_event: tuple[str, str, dict[str, Any]], at: datetime) -> None:
        """INSERT a new request together with the first event of its chain, then attach it
        to the session as an already-persistent row (later changes are UPDATEs).

        Core statements on the transaction's connection, no unit-of-work flush: the row is
        written once, with its chain head, and nothing pending in the session is flushed
        early. Every column is set on the object first (defaults applied, ``version`` 1), so
        that reading an attribute afterwards never goes back to the database.
        """
        type_, actor, data = first_event
        first = self._event(row.id, 1, chain.GENESIS, type_, actor, data, at)
        row.event_count, row.head_hash, row.version = 1, first["hash"], 1
        table = RequestRow.__table__
        state = row.__dict__
        values: dict[str, Any] = {}
        for column in table.columns:
            if column.key in state:
                values[column.key] = state[column.key]
                continue
            default = column.default
            value = None
            if default is not None and default.is_scalar:
                value = default.arg
            elif default is not None and default.is_callable:
                value = default.arg(None)
            setattr(row, column.key, value)
            values[column.key] = value
        fast.insert_row(self.session, table, values)
        fast.insert_row(self.session, EventRow.__table__, first)
        written(self.session, Committed(type_, row.id, at, row.workflow, row.created_at))
        make_transient_to_detached(row)
        self.session.add(row)
        # PostgreSQL: nobody else can see the row before commit; no row lock to take.
        self.session.info.setdefault(_LOCKED, set()).add(row.id)
        self.session.info.setdefault(_FRESH, set()).add(row.id)

    def touch(self, req: RequestRow) -> None:
        """Something the agent's view of ``req`` shows changed: its ``revision`` grows, and
        after commit the store announces it (waiting agents wake). A request created in
        this transaction is announced to nobody: no one can be waiting for it yet."""
        req.revision = (req.revision or 1) + 1
        if req.id not in self.session.info.get(_FRESH, ()):
            self.session.info.setdefault(CHANGED, set()).add(req.id)

    def revisions(self, request_ids: list[str]) -> dict[str, int]:
        """The current ``revision`` of each of ``request_ids`` that exists (one query)."""
        t = RequestRow.__table__
        q = select(t.c.id, t.c.revision).where(t.c.id.in_(request_ids))
        return {row.id: row.revision for row in self.session.execute(q)}

    def claim_due(self, now: datetime, limit: int) -> list[RequestRow]:
        """Requests owed something at ``now``, locked for this transaction.

        PostgreSQL: FOR UPDATE SKIP LOCKED, so replicas split the work. SQLite: the
        transaction already holds the write lock (BEGIN IMMEDIATE), so one sweep at a time.
        """
        q = select(RequestRow).where(RequestRow.due_at <= now).order_by(RequestRow.due_at).limit(limit)
        if self.session.bind.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        rows = list(self.session.scalars(q))
        self.session.info.setdefault(_LOCKED, set()).update(r.id for r in rows)
        return rows

    def _lock_row(self, req: RequestRow) -> None:
        """PostgreSQL: take the request's row lock before writing into its chain.

        Flush order puts the event INSERT before the request UPDATE; a writer that held
        the event's unique key while waiting for the row lock would deadlock against a
        holder of that lock (a sweep's FOR UPDATE) appending to the same chain. Locked
        first, the loser waits, then fails the version check and is retried.
        """
        self._lock_row_id(req.id)

    def _lock_row_id(self, request_id: str) -> None:
        if self.session.bind.dialect.name != "postgresql":
            return  # SQLite writers hold the database lock already
        locked = self.session.info.setdefault(_LOCKED, set())
        if request_id not in locked:
            # Before anything pending is flushed: an INSERT of a row that points at the
            # request (a decision) takes FOR KEY SHARE on it, and two clicks that each held
            # that while asking for FOR UPDATE would wait on each other (a deadlock, then
            # retries that deadlock again). Locked first, the second click simply waits.
            with self.session.no_autoflush:
                self.session.execute(select(RequestRow.id).where(RequestRow.id == request_id).with_for_update())
            locked.add(request_id)

    def children(self, request_id: str) -> list[RequestRow]:
        """Requests that continue ``request_id`` in a chain (``parent_id``)."""
        return list(self.session.scalars(select(RequestRow).where(RequestRow.parent_id == request_id)))

    def rollbacks_of(self, request_id: str) -> list[RequestRow]:
        """Requests that roll ``request_id`` back (``rollback_of``), oldest first."""
        q = select(RequestRow).where(RequestRow.rollback_of == request_id).order_by(RequestRow.created_at)
        return list(self.session.scalars(q))

    def requests_where(
        self, *, status: list[str] | None = None, workflow: list[str] | None = None, limit: int = 100
    ) -> list[RequestRow]:
        q = select(RequestRow).order_by(RequestRow.created_at.desc()).limit(limit)
        if status:
            q = q.where(RequestRow.status.in_(status))
        if workflow:
            q = q.where(RequestRow.workflow.in_(workflow))
        return list(self.session.scalars(q))

    def unreviewed_exceptions(self, workflows: list[str], limit: int = 100) -> list[RequestRow]:
        q = (
            select(RequestRow)
            .where(RequestRow.workflow.in_(workflows), RequestRow.reviewed_at.is_(None))
            .order_by(RequestRow.created_at.desc())
            .limit(limit * 5)
        )
        return [r for r in self.session.scalars(q) if r.exceptions][:limit]

    # decisions ----------------------------------------------------------------------
    def decisions(self, request_id: str) -> list[DecisionRow]:
        if self._fresh(request_id):
            return list(self.session.info.get(_FRESH_DECISIONS, {}).get(request_id, ()))
        q = select(DecisionRow).where(DecisionRow.request_id == request_id).order_by(DecisionRow.id)
        return list(self.session.scalars(q))

    def add_decision(self, request_id: str, by: str, decision: str, at: datetime, reason: str | None = None) -> None:
        values = {"request_id": request_id, "by": by, "decision": decision, "at": at, "reason": reason}
        # The request's row lock first, as for an event (see _lock_row): holding the
        # decision's unique key while waiting for it would deadlock against a holder of the
        # lock adding the same decision (a click and its retry racing).
        self._lock_row_id(request_id)
        new_id = fast.insert_row(self.session, DecisionRow.__table__, values, returning="id")
        if self._fresh(request_id):
            self.session.info.setdefault(_FRESH_DECISIONS, {}).setdefault(request_id, []).append(
                DecisionRow(id=new_id, **values)
            )

    def _fresh(self, request_id: str) -> bool:
        """Created in this transaction: whatever it has, this transaction added."""
        return request_id in self.session.info.get(_FRESH, ())

    # evidence -----------------------------------------------------------------------
    def append_event(self, req: RequestRow, type_: str, actor: str, data: dict[str, Any], at: datetime) -> EventRow:
        """Append one event to the request's chain; the request row carries the head."""
        self._lock_row(req)
        values = self._event(req.id, (req.event_count or 0) + 1, req.head_hash or chain.GENESIS, type_, actor, data, at)
        # A Core INSERT on the transaction's connection, at once: an append-only row needs no
        # unit-of-work bookkeeping (several times cheaper than add + flush), and going past
        # the session does not autoflush a pending request early (it is then INSERTed once,
        # with its final chain head, instead of INSERTed and UPDATEd). No foreign keys here.
        fast.insert_row(self.session, EventRow.__table__, values)
        written(self.session, Committed(type_, req.id, at, req.workflow, req.created_at, data.get("kind")))
        req.event_count = values["seq"]
        req.head_hash = values["hash"]
        return EventRow(**values)

    @staticmethod
    def _event(
        request_id: str, seq: int, prev: str, type_: str, actor: str, data: dict[str, Any], at: datetime
    ) -> dict[str, Any]:
        """The row of event ``seq`` of a request's chain, linked to ``prev`` (its hash computed)."""
        body = chain.event_body(request_id, seq, at, type_, actor, data)
        return {
            "request_id": request_id,
            "seq": seq,
            "at": body["at"],
            "type": type_,
            "actor": actor,
            "data": data,
            "prev_hash": prev,
            "hash": chain.link(prev, body),
        }

    def loaded(self, model, key) -> bool:
        """Whether this session holds the ``model`` row ``key`` as an object already."""
        return identity_key(model, key) in self.session.identity_map

    def append_event_by_id(self, request_id: str, type_: str, actor: str, data: dict[str, Any], at: datetime) -> bool:
        """``append_event`` by request id, without loading the request when this session
        does not hold it already (Core: the chain head read under the row lock, the event
        INSERTed, the head moved with a compare-and-set on ``version``); a request the
        session holds goes through ``append_event``, so its object never goes stale.
        False: no such request."""
        held = self.session.identity_map.get(identity_key(RequestRow, request_id))
        if held is not None:
            self.append_event(held, type_, actor, data, at)
            return True
        rows, _ = fast.execute(self.session, _CHAIN_HEAD, {"id": request_id})
        if not rows:
            return False
        event_count, head_hash, version = rows[0]
        values = self._event(request_id, (event_count or 0) + 1, head_hash or chain.GENESIS, type_, actor, data, at)
        fast.insert_row(self.session, EventRow.__table__, values)
        written(self.session, Committed(type_, request_id, at, kind=data.get("kind")))
        _, moved = fast.execute(
            self.session,
            _MOVE_HEAD,
            {"seq": values["seq"], "hash": values["hash"], "new": version + 1, "id": request_id, "old": version},
        )
        if moved != 1:
            raise StaleDataError(f"request {request_id} changed while an event was appended")
        return True

    def recorded_sponsors(self, request_ids: list[str]) -> dict[str, list[str]]:
        """The sponsors each request's ``request.submitted`` event (the first of its chain)
        set aside from approving it; requests recorded before such lists were kept are absent."""
        if not request_ids:
            return {}
        e = EventRow.__table__
        rows = self.session.execute(
            select(e.c.request_id, e.c.data).where(e.c.request_id.in_(sorted(set(request_ids))), e.c.seq == 1)
        )
        out = {}
        for rid, data in rows:
            sponsors = (data or {}).get("sponsors")
            if isinstance(sponsors, list):
                out[rid] = [s for s in sponsors if isinstance(s, str)]
        return out

    def events(self, request_id: str) -> list[EventRow]:
        q = select(EventRow).where(EventRow.request_id == request_id).order_by(EventRow.seq)
        return list(self.session.scalars(q))

    def thread_events(self, request_id: str) -> list[tuple[int, str, str, dict[str, Any]]]:
        """(seq, type, actor, data) of the request's thread events, in chain order."""
        t = EventRow.__table__
        q = (
            select(t.c.seq, t.c.type, t.c.actor, t.c.data)
            .where(t.c.request_id == request_id, t.c.type.in_(THREAD_TYPES))
            .order_by(t.c.seq)
        )
        return [tuple(row) for row in self.session.execute(q)]

    def ledger_append(self, request_id: str, at: datetime) -> None:
        """Chain a new request onto the global ledger. Call it last in the transaction:
        on PostgreSQL it takes a transaction-scoped advisory lock, so concurrent
        submissions queue for the ledger head (held until commit) instead of racing for
        the next ``seq`` and retrying the whole transaction. SQLite writers are serial."""
        # Core on the transaction's connection (as in append_event): the ledger is only ever
        # written this way, so nothing pending in the session needs flushing to read it.
        if self.session.bind.dialect.name == "postgresql":
            fast.execute(self.session, _ADVISORY_LOCK, {"k": LEDGER_LOCK})
        rows, _ = fast.execute(self.session, _LEDGER_HEAD)
        seq = rows[0][0] + 1 if rows else 1
        prev = rows[0][1] if rows else chain.GENESIS
        body = {"seq": seq, "request_id": request_id, "at": chain.iso(at)}
        fast.insert_row(
            self.session,
            LedgerRow.__table__,
            {"seq": seq, "request_id": request_id, "at": body["at"], "prev_hash": prev, "hash": chain.link(prev, body)},
        )

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
        if dedupe_key is not None and fast.select_first(
            self.session, OutboxRow.__table__, ("id",), dedupe_key=dedupe_key
        ):
            return
        fast.insert_row(
            self.session,
            OutboxRow.__table__,
            _outbox_row(kind, payload, request_id, now, dedupe_key=dedupe_key, due=now + (delay or timedelta(0))),
        )

    def enqueue_many(self, rows: list[tuple[str, dict[str, Any], str | None]], now: datetime) -> None:
        """Several outbox rows (kind, payload, request id) in one statement, in order."""
        fast.insert_rows(
            self.session,
            OutboxRow.__table__,
            [_outbox_row(kind, payload, request_id, now) for kind, payload, request_id in rows],
        )

    # slack messages -----------------------------------------------------------------
    def messages(self, request_id: str, role: str | None = None) -> list[SlackMessageRow]:
        if self._fresh(request_id):  # plain copies of the rows added (as add_message returns them)
            added = self.session.info.get(_FRESH_MESSAGES, {}).get(request_id, ())
            return [m for m in added if role is None or m.role == role]
        q = select(SlackMessageRow).where(SlackMessageRow.request_id == request_id)
        if role:
            q = q.where(SlackMessageRow.role == role)
        return list(self.session.scalars(q.order_by(SlackMessageRow.id)))

    def messages_for(self, request_ids: list[str]) -> dict[str, list[SlackMessageRow]]:
        """The Slack messages of several requests at once (a sweep batch), by request."""
        out: dict[str, list[SlackMessageRow]] = {rid: [] for rid in request_ids}
        if request_ids:
            q = select(SlackMessageRow).where(SlackMessageRow.request_id.in_(request_ids))
            for m in self.session.scalars(q.order_by(SlackMessageRow.id)):
                out[m.request_id].append(m)
        return out

    def message(self, message_id: int) -> SlackMessageRow | None:
        return self.session.get(SlackMessageRow, message_id)

    def messages_by_ts(self, channel: str | None, ts: str) -> list[SlackMessageRow]:
        """Every message row at ``ts`` (in ``channel`` when one there matches): one, or the
        requests of a digest, which share its ``ts``."""
        rows = list(
            self.session.scalars(select(SlackMessageRow).where(SlackMessageRow.ts == ts).order_by(SlackMessageRow.id))
        )
        if channel:
            exact = [r for r in rows if r.channel == channel]
            if exact:
                return exact
        return rows

    def add_message(
        self, request_id: str, role: str, target: str, now: datetime, *, fresh: bool = False
    ) -> tuple[SlackMessageRow, bool]:
        """The message row for (request, role, target); created when new (second value).
        ``fresh``: the request was created in this transaction, so there is none yet."""
        if self._fresh(request_id):
            existing = self.messages(request_id, role)
            match = next((m for m in existing if m.target == target), None)
            if match is not None:
                return match, False
        elif not fresh:
            q = select(SlackMessageRow).where(
                SlackMessageRow.request_id == request_id, SlackMessageRow.role == role, SlackMessageRow.target == target
            )
            existing = self.session.scalars(q).first()
            if existing:
                return existing, False
        values = {"request_id": request_id, "role": role, "target": target, "created_at": now}
        # Core INSERT … RETURNING id: the caller needs the id now (outbox payloads), and a
        # unit-of-work flush for it costs several times more. The row returned is a plain
        # copy, not tracked by the session (load it with message() to change it).
        new_id = fast.insert_row(self.session, SlackMessageRow.__table__, values, returning="id")
        row = SlackMessageRow(id=new_id, **values)
        if self._fresh(request_id):
            self.session.info.setdefault(_FRESH_MESSAGES, {}).setdefault(request_id, []).append(row)
        return row, True

    def new_message(self, request_id: str, role: str, target: str, now: datetime) -> SlackMessageRow:
        m = SlackMessageRow(request_id=request_id, role=role, target=target, created_at=now)
        self.session.add(m)
        return m

    def record_post(self, message_id: int, channel: str, ts: str, now: datetime) -> tuple[str, str, str] | None:
        if not self.loaded(SlackMessageRow, message_id):
            # Core when nothing is loaded (the usual case: the outbox records a batch of posts
            # without building ORM objects for them).
            # (one prepared statement: the outbox records hundreds of posts a second)
            rows, _ = fast.execute(
                self.session,
                _RECORD_POST_SQL,
                {
                    "channel": channel,
                    "ts": ts,
                    "at": fast.bind(self.session, SlackMessageRow.__table__.c.posted_at, now),
                    "id": message_id,
                },
            )
            if not rows:
                return None  # gone, or recorded already
            return tuple(rows[0])
        # an object this session holds is changed through the ORM, so it never goes stale
        msg = self.message(message_id)
        if msg is None or msg.ts:
            return None
        msg.channel, msg.ts, msg.posted_at = channel, ts, now
        return msg.request_id, msg.role, msg.target

    def message_with_request(self, message_id: int) -> tuple[SlackMessageRow, RequestRow] | None:
        """The message and its request, in one query."""
        row = self.session.execute(
            select(SlackMessageRow, RequestRow)
            .join(RequestRow, RequestRow.id == SlackMessageRow.request_id)
            .where(SlackMessageRow.id == message_id)
        ).first()
        return None if row is None else (row[0], row[1])

    def request_message(self, message_id: int) -> SlackMessageRow | None:
        """The message, when its request exists."""
        return self.session.scalars(
            select(SlackMessageRow)
            .join(RequestRow, RequestRow.id == SlackMessageRow.request_id)
            .where(SlackMessageRow.id == message_id)
        ).first()

    def render_rows(
        self, message_ids: list[int], executed: Collection[str]
    ) -> tuple[list[Any], dict[str, Any], dict[str, list[Any]], dict[str, list[Any]]]:
        """A few Core queries, no ORM objects: the messages, their requests, the requests'
        decisions and, for requests whose status is in ``executed``, their rollbacks."""
        session = self.session
        m, r, d = SlackMessageRow.__table__, RequestRow.__table__, DecisionRow.__table__
        ids = message_ids
        msgs = (
            session.execute(
                select(m.c.id, m.c.role, m.c.target, m.c.channel, m.c.ts, m.c.request_id, m.c.digest_id).where(
                    m.c.id.in_(ids)
                )
            ).all()
            if ids
            else []
        )
        rids = sorted({row.request_id for row in msgs})
        reqs = {row.id: row for row in session.execute(select(r).where(r.c.id.in_(rids)))} if rids else {}
        decisions: dict[str, list] = {}
        if reqs:
            for row in session.execute(
                select(d.c.request_id, d.c.by, d.c.decision, d.c.at, d.c.reason)
                .where(d.c.request_id.in_(list(reqs)))
                .order_by(d.c.id)
            ):
                decisions.setdefault(row.request_id, []).append(row)
        done = [rid for rid, req in reqs.items() if req.status in executed]
        rollbacks: dict[str, list] = {}
        if done:
            for row in session.execute(
                select(r.c.id, r.c.status, r.c.rollback_of).where(r.c.rollback_of.in_(done)).order_by(r.c.created_at)
            ):
                rollbacks.setdefault(row.rollback_of, []).append(row)
        return msgs, reqs, decisions, rollbacks

    # digests ------------------------------------------------------------------------
    def take_claimed(self, row_ids: list[int], worker: str, now: datetime, note: str) -> int:
        """Mark outbox rows that ``worker`` holds (claimed, still owed) done without
        delivering them; returns how many it still held."""
        t = OutboxRow.__table__
        return (
            self.session.execute(
                update(t)
                .where(t.c.id.in_(row_ids), t.c.state == "pending", t.c.claimed_by == worker)
                .values(
                    state="done", done_at=now, last_error=note, claimed_by=None, claimed_until=None, in_flight=False
                )
            ).rowcount
            or 0
        )

    def add_digest(self, kind: str, target: str, now: datetime) -> int:
        t = SlackDigestRow.__table__
        return (
            self.session.connection()
            .execute(insert(t).returning(t.c.id), {"kind": kind, "target": target, "created_at": now})
            .scalar_one()
        )

    def put_in_digest(self, digest_id: int, message_ids: list[int]) -> int:
        """Show these (unposted) messages in the digest instead; returns how many moved."""
        t = SlackMessageRow.__table__
        return (
            self.session.execute(
                update(t)
                .where(t.c.id.in_(message_ids), t.c.ts.is_(None), t.c.digest_id.is_(None))
                .values(digest_id=digest_id)
            ).rowcount
            or 0
        )

    def digest(self, digest_id: int) -> dict[str, Any] | None:
        t = SlackDigestRow.__table__
        row = self.session.execute(select(t).where(t.c.id == digest_id)).first()
        return dict(row._mapping) if row is not None else None

    def digest_members(self, digest_id: int) -> list[Any]:
        """(id, request_id, role, target, ts) of the messages a digest shows, in its order."""
        t = SlackMessageRow.__table__
        return list(
            self.session.execute(
                select(t.c.id, t.c.request_id, t.c.role, t.c.target, t.c.ts)
                .where(t.c.digest_id == digest_id)
                .order_by(t.c.id)
            )
        )

    def record_digest_post(self, digest_id: int, channel: str, ts: str, now: datetime) -> bool:
        """Where Slack put a digest, on it and on the messages it shows. False: recorded already."""
        d, m = SlackDigestRow.__table__, SlackMessageRow.__table__
        moved = self.session.execute(
            update(d).where(d.c.id == digest_id, d.c.ts.is_(None)).values(channel=channel, ts=ts, posted_at=now)
        ).rowcount
        if not moved:
            return False
        self.session.execute(
            update(m).where(m.c.digest_id == digest_id, m.c.ts.is_(None)).values(channel=channel, ts=ts, posted_at=now)
        )
        return True

    def owed_posts(self, targets: list[str], exclude: list[int], since: datetime) -> dict[str, int]:
        """Posts still owed to each target besides the messages ``exclude``: messages not
        posted whose request has a ``slack.post`` row pending, and digests not posted
        (created after ``since``: one whose post was given up on stops counting)."""
        if not targets:
            return {}
        m, o, d = SlackMessageRow.__table__, OutboxRow.__table__, SlackDigestRow.__table__
        owed = (
            select(m.c.target, func.count())
            .where(
                m.c.target.in_(targets),
                m.c.ts.is_(None),
                m.c.digest_id.is_(None),
                select(o.c.id)
                .where(o.c.request_id == m.c.request_id, o.c.kind == "slack.post", o.c.state == "pending")
                .exists(),
            )
            .group_by(m.c.target)
        )
        if exclude:
            owed = owed.where(m.c.id.not_in(exclude))
        out: dict[str, int] = {}
        for target, n in self.session.execute(owed):
            out[target] = out.get(target, 0) + int(n)
        digests = (
            select(d.c.target, func.count())
            .where(d.c.target.in_(targets), d.c.ts.is_(None), d.c.created_at > since)
            .group_by(d.c.target)
        )
        for target, n in self.session.execute(digests):
            out[target] = out.get(target, 0) + int(n)
        return out

    def open_digests(self, targets: list[str], since: datetime, claimed: list[int]) -> list[dict[str, Any]]:
        """Digests not posted yet that may still take more requests: their post is owed and
        nobody is delivering it (it waits for its turn, or it is one of the rows ``claimed``
        that this worker has not started). Each: id, kind, target, members (how many)."""
        if not targets:
            return []
        d, m, o = SlackDigestRow.__table__, SlackMessageRow.__table__, OutboxRow.__table__
        members = select(func.count()).where(m.c.digest_id == d.c.id).scalar_subquery()
        rows = self.session.execute(
            select(d.c.id, d.c.kind, d.c.target, members.label("members"))
            .where(d.c.target.in_(targets), d.c.ts.is_(None), d.c.created_at > since)
            .order_by(d.c.id)
        ).all()
        if not rows:
            return []
        posts = {
            r.dedupe_key: r
            for r in self.session.execute(
                select(o.c.id, o.c.dedupe_key, o.c.state, o.c.claimed_by, o.c.in_flight).where(
                    o.c.dedupe_key.in_([digest_key(r.id) for r in rows])
                )
            )
        }
        out = []
        for r in rows:
            post = posts.get(digest_key(r.id))
            if post is None or post.state != "pending":
                continue
            if (post.claimed_by is None and not post.in_flight) or post.id in claimed:
                out.append({"id": r.id, "kind": r.kind, "target": r.target, "members": int(r.members)})
        return out

    def hold_digest_post(self, digest_id: int, worker: str, claimed: list[int]) -> bool:
        """Lock a digest's post row for this transaction if nobody is delivering it (so it
        cannot be rendered and posted while requests are added to it)."""
        o = OutboxRow.__table__
        cond = o.c.claimed_by.is_(None) & (o.c.in_flight.is_(False))
        if claimed:
            cond = cond | (o.c.id.in_(claimed) & (o.c.claimed_by == worker))
        return bool(
            self.session.execute(
                update(o)
                .where(o.c.dedupe_key == digest_key(digest_id), o.c.state == "pending", cond)
                .values(last_error=o.c.last_error)
            ).rowcount
        )

    # idempotency --------------------------------------------------------------------
    def idempotency(self, agent: str, key: str) -> IdempotencyRow | None:
        # Nearly always there is none (every signed submission asks): a plain look-up first.
        if fast.select_first(self.session, IdempotencyRow.__table__, ("agent",), agent=agent, key=key) is None:
            return None
        return self.session.get(IdempotencyRow, (agent, key))

    def remember_idempotency(self, agent: str, key: str, body_sha256: str, request_id: str, now: datetime) -> None:
        fast.insert_row(
            self.session,
            IdempotencyRow.__table__,
            {"agent": agent, "key": key, "body_sha256": body_sha256, "request_id": request_id, "created_at": now},
        )

    def forget_idempotency_before(self, cutoff: datetime) -> int:
        return self.session.execute(delete(IdempotencyRow).where(IdempotencyRow.created_at < cutoff)).rowcount

    def forget_seen_events_before(self, cutoff: datetime) -> int:
        return self.session.execute(delete(SeenEventRow).where(SeenEventRow.at < cutoff)).rowcount

    # slack event dedupe -------------------------------------------------------------
    def first_sighting(self, event_id: str, now: datetime) -> bool:
        if self.session.get(SeenEventRow, event_id):
            return False
        self.session.add(SeenEventRow(event_id=event_id, at=now))
        self.session.flush()
        return True

    # step-up sign-ins ---------------------------------------------------------------
    def add_flow(self, **flow: Any) -> None:
        flows.add_flow(self.session, **flow)

    def take_flow(self, state_hash: str, now: datetime) -> tuple[flows.Flow | None, bool]:
        return flows.take_flow(self.session, state_hash, now)

    def hold_flow(self, state_hash: str, *, confirm_hash: str, approver: str, proof: dict[str, Any]) -> bool:
        return flows.hold(self.session, state_hash, confirm_hash=confirm_hash, approver=approver, proof=proof)

    def held_flow(self, confirm_hash: str) -> flows.Held | None:
        return flows.held(self.session, confirm_hash)

    def take_held_flow(self, confirm_hash: str, now: datetime) -> bool:
        return flows.take_held(self.session, confirm_hash, now)

    # budgets ------------------------------------------------------------------------
    def budget_used(self, scope: str, since: datetime) -> int:
        rows, _ = fast.execute(
            self.session,
            _BUDGET_USED,
            {"scope": scope, "since": fast.bind(self.session, BudgetRow.__table__.c.at, since)},
        )
        return int(rows[0][0] or 0)

    def lock_scope(self, scope: str) -> None:
        """Serialise this transaction with others counting the same budget scope.

        PostgreSQL: a transaction-scoped advisory lock. SQLite: writers already hold the
        database lock (BEGIN IMMEDIATE), so there is nothing to do.
        """
        if self.session.bind.dialect.name == "postgresql":
            digest = hashlib.sha256(scope.encode()).digest()
            key = int.from_bytes(digest[:8], "big", signed=True)
            fast.execute(self.session, _ADVISORY_LOCK, {"k": key})

    def spend_budget(self, scope: str, request_id: str, now: datetime) -> None:
        fast.insert_row(self.session, BudgetRow.__table__, {"scope": scope, "request_id": request_id, "at": now})


def digest_key(digest_id: int) -> str:
    """The ``dedupe_key`` of a digest's ``slack.digest`` outbox row."""
    return f"digest:{digest_id}"


def _outbox_row(
    kind: str,
    payload: dict[str, Any],
    request_id: str | None,
    now: datetime,
    *,
    dedupe_key: str | None = None,
    due: datetime | None = None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "payload": payload,
        "request_id": request_id,
        "dedupe_key": dedupe_key,
        "state": "pending",
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": due or now,
        "in_flight": False,
    }
