"""Step-up sign-in flows in the database: created when an approver opens the link,
taken exactly once by the provider's callback (a conditional UPDATE, so two callbacks
with the same state — a replay, two replicas — cannot both get it).

A request that also asks for a typed confirmation keeps its flow a little longer: the
callback holds the verified sign-in in it (``hold``), the confirmation form finds it by
its token's hash (``held``), and a matching post takes it exactly once (``take_held``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from signoff.store.tables import StepUpFlowRow

# Flows are deleted this long after they expired (kept a little for replays to be named).
KEEP = timedelta(days=1)


@dataclass(frozen=True)
class Flow:
    state_hash: str
    request_id: str
    browser_hash: str
    nonce: str
    code_verifier: str
    issuer: str
    expires_at: datetime
    used_at: datetime | None


def add_flow(
    session: Session,
    *,
    state_hash: str,
    request_id: str,
    browser_hash: str,
    nonce: str,
    code_verifier: str,
    issuer: str,
    now: datetime,
    ttl: timedelta,
) -> None:
    session.execute(delete(StepUpFlowRow).where(StepUpFlowRow.expires_at < now - KEEP))
    session.add(
        StepUpFlowRow(
            state_hash=state_hash,
            request_id=request_id,
            browser_hash=browser_hash,
            nonce=nonce,
            code_verifier=code_verifier,
            issuer=issuer,
            created_at=now,
            expires_at=now + ttl,
            used_at=None,
        )
    )


def take_flow(session: Session, state_hash: str, now: datetime) -> tuple[Flow | None, bool]:
    """(the flow, whether this call took it). A flow already used or unknown is not taken."""
    taken = (
        session.execute(
            update(StepUpFlowRow)
            .where(StepUpFlowRow.state_hash == state_hash, StepUpFlowRow.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )
    row = session.scalars(select(StepUpFlowRow).where(StepUpFlowRow.state_hash == state_hash)).first()
    if row is None:
        return None, False
    return Flow(
        row.state_hash,
        row.request_id,
        row.browser_hash,
        row.nonce,
        row.code_verifier,
        row.issuer,
        row.expires_at,
        None if taken else row.used_at,
    ), taken


@dataclass(frozen=True)
class Held:
    """A flow whose sign-in verified, waiting for the approver's typed confirmation."""

    request_id: str
    browser_hash: str
    issuer: str
    expires_at: datetime
    approver: str
    proof: dict[str, Any]  # the step_up evidence ({issuer, sub, amr, auth_time}) and the email
    confirmed_at: datetime | None


def hold(session: Session, state_hash: str, *, confirm_hash: str, approver: str, proof: dict[str, Any]) -> bool:
    """Keep the verified sign-in of a taken flow for its confirmation form (once)."""
    return (
        session.execute(
            update(StepUpFlowRow)
            .where(
                StepUpFlowRow.state_hash == state_hash,
                StepUpFlowRow.used_at.is_not(None),
                StepUpFlowRow.confirm_hash.is_(None),
            )
            .values(confirm_hash=confirm_hash, approver=approver, proof=proof)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )


def held(session: Session, confirm_hash: str) -> Held | None:
    row = session.scalars(select(StepUpFlowRow).where(StepUpFlowRow.confirm_hash == confirm_hash)).first()
    if row is None or row.approver is None:
        return None
    return Held(
        row.request_id,
        row.browser_hash,
        row.issuer,
        row.expires_at,
        row.approver,
        dict(row.proof or {}),
        row.confirmed_at,
    )


def take_held(session: Session, confirm_hash: str, now: datetime) -> bool:
    """Whether this call took the confirmation (a conditional UPDATE: two posts of the same
    form — a replay, a double submit, two replicas — cannot both take it)."""
    return (
        session.execute(
            update(StepUpFlowRow)
            .where(StepUpFlowRow.confirm_hash == confirm_hash, StepUpFlowRow.confirmed_at.is_(None))
            .values(confirmed_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )
