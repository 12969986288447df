"""Step-up sign-in flows in the database: created when an approver opens the link,
taken exactly once by the provider's callback (a conditional UPDATE, so two callbacks
with the same state — a replay, two replicas — cannot both get it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from signoff.store.tables import StepUpFlowRow

# Flows are deleted this long after they expired (kept a little for replays to be named).
KEEP = timedelta(days=1)


@dataclass(frozen=True)
class Flow:
    request_id: str
    browser_hash: str
    nonce: str
    code_verifier: str
    issuer: str
    expires_at: datetime
    used_at: datetime | None


def add_flow(session: Session, *, state_hash: str, request_id: str, browser_hash: str, nonce: str,
             code_verifier: str, issuer: str, now: datetime, ttl: timedelta) -> None:
    session.execute(delete(StepUpFlowRow).where(StepUpFlowRow.expires_at < now - KEEP))
    session.add(StepUpFlowRow(state_hash=state_hash, request_id=request_id, browser_hash=browser_hash, nonce=nonce,
                              code_verifier=code_verifier, issuer=issuer, created_at=now, expires_at=now + ttl,
                              used_at=None))


def take_flow(session: Session, state_hash: str, now: datetime) -> tuple[Flow | None, bool]:
    """(the flow, whether this call took it). A flow already used or unknown is not taken."""
    taken = session.execute(
        update(StepUpFlowRow)
        .where(StepUpFlowRow.state_hash == state_hash, StepUpFlowRow.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    row = session.scalars(select(StepUpFlowRow).where(StepUpFlowRow.state_hash == state_hash)).first()
    if row is None:
        return None, False
    return Flow(row.request_id, row.browser_hash, row.nonce, row.code_verifier, row.issuer, row.expires_at,
                None if taken else row.used_at), taken
