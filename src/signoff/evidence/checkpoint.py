"""Signed checkpoints: what the evidence store held at a moment, so deletions show.

Each request's events form a hash chain whose head the request row carries, and the
ledger chains the requests themselves. Someone with write access to the database but
not the signing key can still truncate a chain (and fix the request row), or delete the
newest requests with their ledger entries. A checkpoint is an Ed25519 signature over

    {"ledger_seq", "ledger_head", "heads_digest", "at", "kid"}     (RFC 8785 JSON)

- ``ledger_seq`` / ``ledger_head``: the ledger's last entry when the checkpoint was made;
- ``at``: the moment the checkpoint speaks for. It lags the clock by ``settle`` (30 s)
  so that every transaction that stamped an event at or before ``at`` has committed;
- ``heads_digest``: SHA-256 of the RFC 8785 JSON array
  ``[[request_id, n, hash_n], ...]`` sorted by request id (code point order), where
  ``n`` is the highest ``seq`` of the request's events stamped at or before ``at`` and
  ``hash_n`` that event's hash; requests with no event by then are left out.

Because ``n`` is defined by the events' own timestamps (which the chain protects),
``verify`` can recompute the digest from the events alone: deleting or rewriting any
event stamped before ``at``, or any request that had one, changes it.

``write_checkpoint`` refuses to sign over a store that no longer matches the previous
checkpoint (it would launder a deletion): it logs the reason and returns None.

With each checkpoint the entries it signed are kept in ``checkpoint_heads`` (only the
ones that moved are rewritten). They are not trusted on their own: only when they hash to
the signed digest are they used, by ``verify`` to name the request and event that no
longer match (``name_changes``), and by a process that did not write the checkpoint
itself to compare the store against it without recomputing the past.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from json.encoder import encode_basestring as _json_str
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, text
from sqlalchemy.orm import Session

from signoff.domain import chain
from signoff.domain.canonical import canonical_json
from signoff.evidence.scan import stream
from signoff.evidence.signing import verify_signature
from signoff.keys import KeyRing
from signoff.store import fast
from signoff.store.db import Store
from signoff.store.tables import CheckpointHeadRow, CheckpointRow, EventRow, LedgerRow

log = logging.getLogger(__name__)

SETTLE = timedelta(seconds=30)
MIN_INTERVAL = timedelta(seconds=5)
_CHUNK = 500


# -- the statement ----------------------------------------------------------------------


def statement(ledger_seq: int, ledger_head: str, heads_digest: str, at: datetime | str, kid: str) -> bytes:
    """The signed bytes of a checkpoint."""
    return canonical_json(
        {
            "ledger_seq": ledger_seq,
            "ledger_head": ledger_head,
            "heads_digest": heads_digest,
            "at": at if isinstance(at, str) else chain.iso(at),
            "kid": kid,
        }
    )


def statement_of(row: CheckpointRow | Checkpoint) -> dict[str, Any]:
    """A checkpoint as a plain dict (for publishing it somewhere else, e.g. a log)."""
    return {
        "id": row.id,
        "ledger_seq": row.ledger_seq,
        "ledger_head": row.ledger_head,
        "heads_digest": row.heads_digest,
        "at": chain.iso(row.at),
        "kid": row.kid,
        "signature": row.signature,
    }


def signature_ok(row: CheckpointRow | Checkpoint, keys_or_jwks: Any) -> tuple[bool, str]:
    data = statement(row.ledger_seq, row.ledger_head, row.heads_digest, row.at, row.kid)
    return verify_signature(keys_or_jwks, row.kid, data, row.signature)


def heads_digest(entries: Iterable[tuple[str, int, str]]) -> str:
    """SHA-256 of the canonical JSON array of ``[request_id, n, hash]``, sorted by id."""
    items = sorted(entries)
    text = "[" + ",".join("[%s,%d,%s]" % (_json_str(rid), n, _json_str(h)) for rid, n, h in items) + "]"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def name_changes(checkpoint_id: int, signed: dict[str, tuple[int, str]], now: dict[str, tuple[int, str]]) -> list[str]:
    """Each request whose head as of a checkpoint's moment is not what the checkpoint
    signed, as failure texts naming the request and the event, sorted by request id."""
    name = f"checkpoint {checkpoint_id}"
    out: list[str] = []
    for rid in sorted(signed.keys() | now.keys()):
        was, got = signed.get(rid), now.get(rid)
        if was == got:
            continue
        if was is None:
            out.append(
                f"request {rid} event seq {got[0]}: stamped before {name}'s moment but not signed by it "
                "— inserted or back-dated afterwards"
            )
        elif got is None:
            out.append(
                f"request {rid} event seq {was[0]}: gone — {name} signed this request's chain up to seq "
                f"{was[0]}, and no event of it recorded before then is left"
            )
        elif got[0] < was[0]:
            out.append(
                f"request {rid} event seq {was[0]}: gone — {name} signed the chain up to seq {was[0]}, "
                f"it now ends at seq {got[0]} (the events after it were deleted)"
            )
        elif got[0] > was[0]:
            out.append(
                f"request {rid} event seq {was[0] + 1}: stamped before {name}'s moment but not signed "
                "by it — inserted or back-dated afterwards"
            )
        else:
            out.append(f"request {rid} event seq {was[0]}: altered since {name} signed it")
    return out


# -- reading the store -------------------------------------------------------------------


def stored_heads(session_or_conn) -> dict[str, tuple[int, str]]:
    """The entries kept with the newest checkpoint (see the module docstring)."""
    rows = session_or_conn.execute(select(CheckpointHeadRow.request_id, CheckpointHeadRow.seq, CheckpointHeadRow.hash))
    return {rid: (int(seq), digest) for rid, seq, digest in rows}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as read (plain values: usable after its transaction ended)."""

    id: int
    at: datetime
    ledger_seq: int
    ledger_head: str
    heads_digest: str
    kid: str
    signature: str


def latest(session: Session) -> Checkpoint | None:
    row = session.scalars(select(CheckpointRow).order_by(CheckpointRow.id.desc()).limit(1)).first()
    if row is None:
        return None
    return Checkpoint(row.id, row.at, row.ledger_seq, row.ledger_head, row.heads_digest, row.kid, row.signature)


def ledger_head(session: Session) -> tuple[int, str]:
    row = session.execute(select(LedgerRow.seq, LedgerRow.hash).order_by(LedgerRow.seq.desc()).limit(1)).first()
    return (int(row[0]), row[1]) if row else (0, chain.GENESIS)


def heads_at(session: Session, cutoff: str) -> tuple[dict[str, tuple[int, str]], bool]:
    """Each request's (n, hash_n) as of ``cutoff`` (ISO text), and whether every request's
    newest event is already at or before it (nothing newer to wait for).

    Cost: one pass over requests joined to their head event (the unique (request_id, seq)
    index), plus a look at the events of requests active after ``cutoff``.
    """
    dbc = session.connection().connection.dbapi_connection  # plain DB-API rows: this pass is the cost
    pg = session.bind.dialect.name == "postgresql"
    entries: dict[str, tuple[int, str]] = {}
    recent: list[str] = []
    for rid, seq, at, digest in stream(
        dbc,
        pg,
        "SELECT r.id, e.seq, e.at, e.hash FROM requests r LEFT JOIN events e "
        "ON e.request_id = r.id AND e.seq = r.event_count",
        [],
    ):
        if seq is not None and at <= cutoff:
            entries[rid] = (seq, digest)
        else:
            recent.append(rid)
    for i in range(0, len(recent), _CHUNK):
        chunk = recent[i : i + _CHUNK]
        rows = session.execute(
            select(EventRow.request_id, EventRow.seq, EventRow.at, EventRow.hash).where(EventRow.request_id.in_(chunk))
        )
        for rid, seq, at, digest in rows:
            if at <= cutoff and seq > entries.get(rid, (0, ""))[0]:
                entries[rid] = (seq, digest)
    return entries, not recent


def _hashes_at(session: Session, pairs: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    found: dict[tuple[str, int], str] = {}
    for i in range(0, len(pairs), 200):
        chunk = pairs[i : i + 200]
        cond = or_(*[and_(EventRow.request_id == rid, EventRow.seq == seq) for rid, seq in chunk])
        for rid, seq, digest in session.execute(select(EventRow.request_id, EventRow.seq, EventRow.hash).where(cond)):
            found[(rid, seq)] = digest
    return found


def _probe(session: Session) -> tuple[int, int, int]:
    """Cheap signs of change: the newest event id, the ledger head, the newest checkpoint."""
    return (
        int(session.scalar(select(func.max(EventRow.id))) or 0),
        int(session.scalar(select(func.max(LedgerRow.seq))) or 0),
        int(session.scalar(select(func.max(CheckpointRow.id))) or 0),
    )


# -- writing -----------------------------------------------------------------------------


@dataclass
class _Memo:
    """What this process knows about the checkpoint it wrote or checked last."""

    checkpoint_id: int = 0
    probe: tuple[int, int, int] = (0, 0, 0)
    settled: bool = False
    entries: dict[str, tuple[int, str]] = field(default_factory=dict)
    refused: str | None = None
    pass_seconds: float = 0.0  # how long the last full pass took


_memos: weakref.WeakKeyDictionary[Store, _Memo] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _memo(store: Store) -> _Memo:
    with _lock:
        m = _memos.get(store)
        if m is None:
            m = _memos[store] = _Memo()
        return m


def write_checkpoint(
    store: Store, keys: KeyRing, now: datetime, *, settle: timedelta = SETTLE, min_interval: timedelta = MIN_INTERVAL
) -> CheckpointRow | None:
    """Sign the store's state as of ``now - settle``; None when nothing changed, when a
    checkpoint younger than ``min_interval`` exists (another replica just wrote one), or
    when the store no longer matches the previous checkpoint (logged as an error).

    Cheap when idle (three index look-ups); otherwise one pass over the requests (about
    15 µs a request on a small VM), so while the store keeps changing checkpoints are spaced at
    least 20 times that pass apart (at most ~5 % of one core).
    """
    cutoff_dt = now - settle
    cutoff = chain.iso(cutoff_dt)
    memo = _memo(store)

    # A full pass costs in proportion to the requests: keep it under ~5 % of the time.
    interval = max(min_interval, memo.pass_seconds * 20 * timedelta(seconds=1))

    def read(session: Session):
        last = latest(session)
        if last is not None and cutoff_dt - last.at < interval:
            return None
        probe = _probe(session)
        if last is not None and memo.checkpoint_id == last.id and memo.probe == probe and memo.settled:
            return None
        started = time.monotonic()
        entries, settled = heads_at(session, cutoff)
        memo.pass_seconds = time.monotonic() - started
        lseq, lhead = ledger_head(session)
        base, rewrite_all, problem = _signed_before(session, keys, last, memo)
        if problem is None and last is not None:
            problem = _inconsistent(session, last, base, entries)
        return last, probe, entries, settled, lseq, lhead, base, rewrite_all, problem

    found = store.read(read)
    if found is None:
        return None
    last, probe, entries, settled, lseq, lhead, base, rewrite_all, problem = found
    if problem:
        if memo.refused != problem:
            log.error("evidence checkpoint refused: %s; run `signoff evidence verify`", problem)
        memo.refused = problem
        return None
    memo.refused = None
    digest = heads_digest((rid, n, h) for rid, (n, h) in entries.items())
    if (
        last is not None
        and (last.ledger_seq, last.ledger_head, last.heads_digest) == (lseq, lhead, digest)
        and not rewrite_all
    ):
        _remember(memo, last.id, probe, settled, entries)
        return None
    key = keys.active
    signature = key.sign(statement(lseq, lhead, digest, cutoff, key.kid))
    moved = entries if rewrite_all else {rid: v for rid, v in entries.items() if base.get(rid) != v}

    def write(session: Session) -> CheckpointRow | None:
        if session.bind.dialect.name == "postgresql":
            # one checkpoint writer at a time across replicas (SQLite writers are serial anyway)
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        newest = latest(session)
        if (newest.id if newest else None) != (last.id if last else None):
            return None  # another replica wrote one meanwhile
        row = CheckpointRow(
            at=cutoff_dt, ledger_seq=lseq, ledger_head=lhead, heads_digest=digest, kid=key.kid, signature=signature
        )
        session.add(row)
        session.flush()
        _store_heads(session, moved, rewrite_all)
        return row

    row = store.transaction(write)
    if row is not None:
        _remember(memo, row.id, (probe[0], probe[1], row.id), settled, entries)
    return row


_PG_LOCK = 0x51670FFC  # advisory lock key of checkpoint writers


# A head that moved replaces the kept one (both dialects know ON CONFLICT … DO UPDATE).
_UPSERT_HEAD = {
    "sqlite": "INSERT INTO checkpoint_heads (request_id, seq, hash) VALUES (:request_id, :seq, :hash) "
    "ON CONFLICT (request_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    "postgresql": "INSERT INTO checkpoint_heads (request_id, seq, hash) VALUES (%(request_id)s, %(seq)s, %(hash)s) "
    "ON CONFLICT (request_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
}


def _store_heads(session: Session, moved: dict[str, tuple[int, str]], rewrite_all: bool) -> None:
    """The moved heads written, one ``executemany`` of plain rows: this runs under the
    writer lock (on SQLite, every other writer waits), with thousands of heads under load."""
    if rewrite_all:
        session.execute(delete(CheckpointHeadRow))
    fast.execute_many(
        session, _UPSERT_HEAD, [{"request_id": rid, "seq": n, "hash": h} for rid, (n, h) in moved.items()]
    )


def _remember(memo: _Memo, checkpoint_id: int, probe, settled: bool, entries) -> None:
    memo.checkpoint_id, memo.probe, memo.settled, memo.entries = checkpoint_id, probe, settled, entries


def _signed_before(
    session: Session, keys: KeyRing, last: Checkpoint | None, memo: _Memo
) -> tuple[dict[str, tuple[int, str]], bool, str | None]:
    """What ``last`` signed: (entries, whether the kept copy must be rewritten whole, problem)."""
    if last is None:
        return {}, True, None
    ok, reason = signature_ok(last, keys)
    if not ok:
        return {}, False, f"checkpoint {last.id}: {reason}"
    if last.ledger_seq:
        row = session.execute(select(LedgerRow.hash).where(LedgerRow.seq == last.ledger_seq)).first()
        if row is None or row[0] != last.ledger_head:
            return (
                {},
                False,
                (f"checkpoint {last.id}: ledger entry seq {last.ledger_seq} is {'gone' if row is None else 'altered'}"),
            )
    if memo.checkpoint_id == last.id:
        return memo.entries, False, None
    kept = stored_heads(session)
    if heads_digest((rid, n, h) for rid, (n, h) in kept.items()) == last.heads_digest:
        return kept, False, None
    # The kept copy is missing or altered (or predates it): recompute the past instead.
    then, _ = heads_at(session, chain.iso(last.at))
    if heads_digest((rid, n, h) for rid, (n, h) in then.items()) == last.heads_digest:
        return then, True, None
    return {}, False, f"checkpoint {last.id}: the request chains no longer match its signed heads"


def _inconsistent(
    session: Session, last: Checkpoint, base: dict[str, tuple[int, str]], entries: dict[str, tuple[int, str]]
) -> str | None:
    """Why the store no longer extends ``last``, whose entries were ``base`` (None: it does)."""
    later: list[tuple[str, int]] = []
    for rid, (n, h) in base.items():
        now_n, now_h = entries.get(rid, (0, ""))
        if now_n < n:
            return f"checkpoint {last.id}: request {rid} had {n} event(s), now {now_n}"
        if now_n == n and now_h != h:
            return f"checkpoint {last.id}: request {rid} event seq {n} is altered"
        if now_n > n:
            later.append((rid, n))
    hashes = _hashes_at(session, later)
    for rid, n in later:
        if hashes.get((rid, n)) != base[rid][1]:
            return f"checkpoint {last.id}: request {rid} event seq {n} is altered or gone"
    return None
