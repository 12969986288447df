"""What use-cases depend on, injected by bootstrap (and by tests, with fakes).

The unit of work is ``UnitOfWork``: ``transaction(fn)`` runs ``fn(repo)`` in one
transaction and commits, running it again from scratch when it lost a race (so ``fn``
must be safe to re-run), and ``batch=True`` lets concurrent callers share one commit
(group commit). ``repo`` is a ``Repository``: the collections a use-case reads and
writes (requests, decisions, evidence, outbox, Slack messages, digests, budgets,
idempotency keys) behind plain methods. ``store/`` implements both on SQLAlchemy
(``store.uow``); ``tests/fakes`` has one in memory.

Rows (``RequestRow`` and friends) are the store's mapped objects; use-cases read and set
their attributes and never import the store to do it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from signoff.config import Config

if TYPE_CHECKING:  # the rows' types only; nothing of the store is imported at run time
    from signoff.domain.notes import Note
    from signoff.store.step_up import Flow, Held
    from signoff.store.tables import DecisionRow, EventRow, IdempotencyRow, RequestRow, SlackMessageRow

T = TypeVar("T")


class Clock(Protocol):
    def __call__(self) -> datetime: ...


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------------- repository
class Requests(Protocol):
    def get(self, request_id: str) -> RequestRow | None: ...

    def gauges(self, now: datetime) -> Any:
        """Counts for the metrics endpoint (``store.repo.Gauges``)."""
        ...

    def new_request(self, **fields: Any) -> RequestRow:
        """A request row not stored yet (``insert_request`` stores it)."""
        ...

    def insert_request(self, row: RequestRow, first_event: tuple[str, str, dict[str, Any]], at: datetime) -> None:
        """Store a new request together with the first event of its chain."""
        ...

    def touch(self, req: RequestRow) -> None:
        """Something the agent's view of ``req`` shows changed (its waiters wake after commit)."""
        ...

    def claim_due(self, now: datetime, limit: int) -> list[RequestRow]:
        """Requests owed something at ``now``, oldest due first, locked for this transaction."""
        ...

    def children(self, request_id: str) -> list[RequestRow]: ...

    def rollbacks_of(self, request_id: str) -> list[Any]: ...

    def requests_where(
        self, *, status: list[str] | None = None, workflow: list[str] | None = None, limit: int = 100
    ) -> list[RequestRow]: ...

    def unreviewed_exceptions(self, workflows: list[str], limit: int = 100) -> list[RequestRow]: ...


class Decisions(Protocol):
    def decisions(self, request_id: str) -> list[DecisionRow]: ...

    def add_decision(
        self, request_id: str, by: str, decision: str, at: datetime, reason: str | None = None
    ) -> None: ...


class Evidence(Protocol):
    def append_event(self, req: RequestRow, type_: str, actor: str, data: dict[str, Any], at: datetime) -> EventRow: ...

    def append_event_by_id(
        self, request_id: str, type_: str, actor: str, data: dict[str, Any], at: datetime
    ) -> bool: ...

    def recorded_sponsors(self, request_ids: list[str]) -> dict[str, list[str]]: ...

    def events(self, request_id: str) -> list[EventRow]: ...

    def thread_events(self, request_id: str) -> list[tuple[int, str, str, dict[str, Any]]]: ...

    def ledger_append(self, request_id: str, at: datetime) -> None: ...


class Outbox(Protocol):
    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        now: datetime,
        *,
        request_id: str | None = None,
        dedupe_key: str | None = None,
        delay: timedelta | None = None,
    ) -> None: ...

    def enqueue_many(self, rows: list[tuple[str, dict[str, Any], str | None]], now: datetime) -> None: ...


class Messages(Protocol):
    """The Slack copies of requests (one row per request, role and target)."""

    def messages(self, request_id: str, role: str | None = None) -> list[SlackMessageRow]: ...

    def messages_for(self, request_ids: list[str]) -> dict[str, list[SlackMessageRow]]: ...

    def message(self, message_id: int) -> SlackMessageRow | None: ...

    def messages_by_ts(self, channel: str | None, ts: str) -> list[SlackMessageRow]: ...

    def add_message(
        self, request_id: str, role: str, target: str, now: datetime, *, fresh: bool = False
    ) -> tuple[SlackMessageRow, bool]: ...

    def new_message(self, request_id: str, role: str, target: str, now: datetime) -> SlackMessageRow:
        """A message row added to the transaction; its id is set by the next ``flush``."""
        ...

    def record_post(self, message_id: int, channel: str, ts: str, now: datetime) -> tuple[str, str, str] | None:
        """Where Slack put a message; (request id, role, target), or None when it is gone
        or recorded already."""
        ...

    def message_with_request(self, message_id: int) -> tuple[SlackMessageRow, RequestRow] | None: ...

    def request_message(self, message_id: int) -> SlackMessageRow | None:
        """The message, when its request exists."""
        ...

    def render_rows(
        self, message_ids: list[int], executed: Collection[str]
    ) -> tuple[list[Any], dict[str, Any], dict[str, list[Any]], dict[str, list[Any]]]:
        """Plain rows for rendering several messages: (messages, their requests by id, the
        requests' decisions by request, rollbacks of those of them in ``executed``)."""
        ...


class Digests(Protocol):
    def take_claimed(self, row_ids: list[int], worker: str, now: datetime, note: str) -> int: ...

    def add_digest(self, kind: str, target: str, now: datetime) -> int: ...

    def put_in_digest(self, digest_id: int, message_ids: list[int]) -> int: ...

    def digest(self, digest_id: int) -> dict[str, Any] | None: ...

    def digest_members(self, digest_id: int) -> list[Any]: ...

    def record_digest_post(self, digest_id: int, channel: str, ts: str, now: datetime) -> bool: ...

    def owed_posts(self, targets: list[str], exclude: list[int], since: datetime) -> dict[str, int]: ...

    def open_digests(self, targets: list[str], since: datetime, claimed: list[int]) -> list[dict[str, Any]]: ...

    def hold_digest_post(self, digest_id: int, worker: str, claimed: list[int]) -> bool: ...


class Idempotency(Protocol):
    def idempotency(self, agent: str, key: str) -> IdempotencyRow | None: ...

    def remember_idempotency(self, agent: str, key: str, body_sha256: str, request_id: str, now: datetime) -> None: ...

    def forget_idempotency_before(self, cutoff: datetime) -> int: ...

    def forget_seen_events_before(self, cutoff: datetime) -> int: ...

    def first_sighting(self, event_id: str, now: datetime) -> bool:
        """True the first time ``event_id`` is seen (Slack's retries are not)."""
        ...


class Budgets(Protocol):
    def budget_used(self, scope: str, since: datetime) -> int: ...

    def lock_scope(self, scope: str) -> None:
        """Serialise this transaction with others counting the same budget scope."""
        ...

    def spend_budget(self, scope: str, request_id: str, now: datetime) -> None: ...


class StepUpFlows(Protocol):
    def add_flow(
        self,
        *,
        state_hash: str,
        request_id: str,
        browser_hash: str,
        nonce: str,
        code_verifier: str,
        issuer: str,
        now: datetime,
        ttl: timedelta,
    ) -> None: ...

    def take_flow(self, state_hash: str, now: datetime) -> tuple[Flow | None, bool]:
        """(the flow, whether this call took it): a flow is taken once."""
        ...

    def hold_flow(self, state_hash: str, *, confirm_hash: str, approver: str, proof: dict[str, Any]) -> bool:
        """Keep a verified sign-in in a taken flow until its confirmation form is posted."""
        ...

    def held_flow(self, confirm_hash: str) -> Held | None: ...

    def take_held_flow(self, confirm_hash: str, now: datetime) -> bool:
        """Claim a held sign-in for its one confirmation (a conditional update)."""
        ...


class Repository(Requests, Decisions, Evidence, Outbox, Messages, Digests, Idempotency, Budgets, StepUpFlows, Protocol):
    """Everything one transaction reads and writes."""

    def flush(self) -> None:
        """Write what the transaction holds so far (new rows get their ids)."""
        ...

    def deferred(self) -> AbstractContextManager[None]:
        """Within it, reads do not write the transaction's pending changes first (a batch
        is written in bulk by one ``flush``)."""
        ...

    def once(self, tag: str, key: Any) -> bool:
        """True the first time (``tag``, ``key``) is asked in this transaction."""
        ...


class RenderReads(Protocol):
    """What rendering a request reads besides the row: its decisions and its rollbacks. A
    ``Repository`` answers, or rows read beforehand for several requests at once."""

    def decisions(self, request_id: str) -> list[DecisionRow]: ...

    def rollbacks_of(self, request_id: str) -> list[RequestRow]: ...


class UnitOfWork(Protocol):
    """Transactions on the store (see the module docstring)."""

    def transaction(self, fn: Callable[[Repository], T], *, attempts: int = 8, batch: bool = False) -> T: ...

    def read(self, fn: Callable[[Repository], T]) -> T:
        """``fn(repo)`` in a read-only transaction (rolled back)."""
        ...

    def retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a lost race (``transaction`` runs the work again)."""
        ...


# ---------------------------------------------------------------------------- signing
class GrantSigner(Protocol):
    """The bot's signing keys, as use-cases need them (``keys.KeyRing`` implements it)."""

    def sign_grant(self, claims: dict[str, Any]) -> tuple[str, str]:
        """(a compact EdDSA JWT of ``claims``, the id of the key that signed it)."""
        ...

    def sign_link(self, request_id: str, exp: int) -> str:
        """The query string of an evidence link to ``request_id`` valid until ``exp``."""
        ...


# ---------------------------------------------------------------------------- Slack directory
class Directory(Protocol):
    """Who is in a Slack user group or channel (the adapter caches briefly)."""

    def members(self, ref: str) -> set[str]: ...

    def user_by_email(self, email: str) -> str | None:
        """The id of the active Slack user with this email address (None: nobody)."""
        ...


class NoDirectory:
    """A directory that knows no groups: only listed user ids may approve."""

    def members(self, ref: str) -> set[str]:
        return set()

    def user_by_email(self, email: str) -> str | None:
        return None


class NoteText(Protocol):
    """Words a thread note (``domain.notes.Note``) as a Slack thread shows it; the adapter's
    (``slack.notes.text``). The text is stored with the note in its outbox row, for readers
    that cannot word it themselves (an older version's delivery)."""

    def __call__(self, note: Note) -> str: ...


class Changes(Protocol):
    """Told, after each commit, which requests changed in a way their agents can see (what
    ``Repository.touch`` marks): the agent API's waiters listen here. Called from the
    committing thread; it must not block."""

    def changed(self, request_ids: Collection[str]) -> None: ...


class NoChanges:
    def changed(self, request_ids: Collection[str]) -> None:
        pass


@dataclass
class Context:
    """Everything use-cases need. Built by ``bootstrap``; tests build their own.

    ``store`` is the database handle of the adapters that share this context (the outbox,
    the API's waiters, evidence export); use-cases never touch it and go through ``uow``.
    """

    uow: UnitOfWork
    config: Callable[[], Config]
    keys: GrantSigner
    clock: Clock = system_clock
    directory: Directory = field(default_factory=NoDirectory)
    public_url: str = "http://127.0.0.1:8080"
    evidence_link_seconds: int = 7 * 86400
    # Called after a commit that enqueued side effects, so the dispatcher runs at once.
    notify: Callable[[], None] = lambda: None
    # Told after every commit which requests changed visibly (the store calls it).
    changes: Changes = field(default_factory=NoChanges)
    store: Any = None
    # Words thread notes when they are queued (bootstrap: slack.notes.text); without it a
    # note is queued as facts only and worded at delivery.
    note_text: NoteText | None = None

    def __post_init__(self) -> None:
        hooks = getattr(self.uow, "on_change", None)
        if hooks is not None:
            hooks.append(lambda ids: self.changes.changed(ids))
