"""SQLAlchemy 2 tables. Timestamps are stored as UTC and always come back aware."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Store naive UTC (SQLite drops offsets); return aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


BigId = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class RequestRow(Base):
    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(100), index=True)
    title: Mapped[str] = mapped_column(String(200))
    action: Mapped[dict[str, Any]]
    action_sha256: Mapped[str] = mapped_column(String(64))
    risk: Mapped[str] = mapped_column(String(16))
    justification: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str | None] = mapped_column(Text)
    rollback: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    parent_id: Mapped[str | None] = mapped_column(String(40), index=True)
    rollback_of: Mapped[str | None] = mapped_column(String(40), index=True)
    submitted_by: Mapped[str] = mapped_column(String(100), index=True)
    executor: Mapped[str] = mapped_column(String(100), index=True)
    sponsor: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime]
    deadline: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    # The next moment a sweep owes this request something (an escalation step, expiry,
    # a window opening, a grant running out). Indexed: a sweep's cost follows rows due.
    due_at: Mapped[datetime | None] = mapped_column(index=True)
    steps_fired: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None]
    approval_expires_at: Mapped[datetime | None]
    policy: Mapped[dict[str, Any]]  # the workflow definition the request was decided under
    policy_hash: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str | None] = mapped_column(String(100))
    grant_token: Mapped[str | None] = mapped_column(Text)
    grant_claims: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    grant_expires_at: Mapped[datetime | None]
    grant_delivered_at: Mapped[datetime | None]
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    exceptions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    reviewed_at: Mapped[datetime | None]
    reviewed_by: Mapped[str | None] = mapped_column(String(40))
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    head_hash: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    # The agent's ``version`` of the request: grows with every change the agent's view
    # shows (status, decisions, grant, outcome, thread), and only then. ``version`` above
    # is the optimistic lock and moves with every write (a Slack post recorded, a review).
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")

    __mapper_args__: ClassVar[dict[str, Any]] = {"version_id_col": version}


class DecisionRow(Base):
    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("request_id", "by", name="uq_decision_once"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), index=True)
    by: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text, default=None)  # a rejection's stated reason


class EventRow(Base):
    """Append-only, hash-chained per request."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("request_id", "seq", name="uq_event_seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(40), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[str] = mapped_column(String(32))  # ISO text exactly as hashed
    type: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class LedgerRow(Base):
    """One row per request, chained across requests: deleting a request's record shows."""

    __tablename__ = "ledger"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(40), unique=True)
    at: Mapped[str] = mapped_column(String(32))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class CheckpointRow(Base):
    """A signed statement of every request's chain head at a moment."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    ledger_seq: Mapped[int] = mapped_column(BigInteger)
    ledger_head: Mapped[str] = mapped_column(String(64))
    heads_digest: Mapped[str] = mapped_column(String(64))
    kid: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)


class CheckpointHeadRow(Base):
    """The request heads the newest checkpoint signed (its ``heads_digest`` is their hash).

    Kept so that, when the store no longer matches that checkpoint, ``verify`` can name
    the request that changed rather than only say that one did. Rewritten together with
    each new checkpoint, only where a head moved. Not itself trusted: it is used only
    when it hashes to the signed digest.
    """

    __tablename__ = "checkpoint_heads"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class OutboxRow(Base):
    """A side effect owed after commit: a Slack call or an executor webhook."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_ready", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    request_id: Mapped[str | None] = mapped_column(String(40), index=True)
    payload: Mapped[dict[str, Any]]
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]
    in_flight: Mapped[bool] = mapped_column(Boolean, default=False)
    done_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class SlackMessageRow(Base):
    """A Slack message that shows a request (root post, escalation copy, exception thread)."""

    __tablename__ = "slack_messages"
    __table_args__ = (UniqueConstraint("request_id", "role", "target", name="uq_message_target"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(40), index=True)
    role: Mapped[str] = mapped_column(String(20))  # request | escalation | exception
    target: Mapped[str] = mapped_column(String(40))  # channel id or user id as configured
    channel: Mapped[str | None] = mapped_column(String(40))
    ts: Mapped[str | None] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime]
    posted_at: Mapped[datetime | None]
    # Shown in this digest instead of a message of its own (its channel/ts are the
    # digest's once that is posted).
    digest_id: Mapped[int | None] = mapped_column(BigId, index=True, default=None)


class SlackDigestRow(Base):
    """One Slack message showing several requests, each with its own buttons: posted when
    more are owed to one channel or person than Slack's limits let through in time. Its
    requests are the ``slack_messages`` rows whose ``digest_id`` is this id."""

    __tablename__ = "slack_digests"
    __table_args__ = (Index("ix_slack_digests_unposted", "target", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))  # decide (requests, escalations) | exception
    target: Mapped[str] = mapped_column(String(40))  # channel id or user id as configured
    channel: Mapped[str | None] = mapped_column(String(40))
    ts: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]
    posted_at: Mapped[datetime | None]


class IdempotencyRow(Base):
    __tablename__ = "idempotency_keys"

    agent: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(index=True)


class SeenEventRow(Base):
    """Slack event ids already processed (Slack retries the same event_id)."""

    __tablename__ = "slack_events_seen"

    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)


class KeyRow(Base):
    """Ed25519 signing keys generated by signoff itself (when SIGNOFF_SIGNING_KEY is unset)."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]


class BudgetRow(Base):
    """Auto-approvals spent, for rule budgets."""

    __tablename__ = "auto_approvals"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(300), index=True)
    request_id: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(index=True)


class StepUpFlowRow(Base):
    """A sign-in at the identity provider under way for a step-up approval: the secrets
    the callback must match (single use; short-lived). The state itself is not kept, only
    its hash; the browser that started the flow holds a cookie whose hash is kept too.

    When the request also asks for a typed confirmation, the callback keeps who the sign-in
    verified (``approver``, ``proof``) here and the hash of the confirmation form's token
    (``confirm_hash``); the form's post is taken once (``confirmed_at``)."""

    __tablename__ = "step_up_flows"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(40), index=True)
    browser_hash: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[str] = mapped_column(String(100))
    code_verifier: Mapped[str] = mapped_column(String(128))
    issuer: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]
    confirm_hash: Mapped[str | None] = mapped_column(String(64), index=True, unique=True)
    approver: Mapped[str | None] = mapped_column(String(200))
    proof: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    confirmed_at: Mapped[datetime | None]
