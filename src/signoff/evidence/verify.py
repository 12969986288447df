"""``signoff evidence verify``: check every chain in the store, in one consistent snapshot.

Checks, in this order (failures are named ``request <id> event seq <n>: …`` or
``request <id>: …``; the first one found is ``VerifyResult.failure``):

1. every request's events: ``seq`` runs 1, 2, 3 … with no gap, each ``prev_hash`` is the
   previous event's hash (``GENESIS`` first), each ``hash`` recomputes from the event
   (``domain.chain.link``/``event_body``, RFC 8785), and the last one is the head the
   request row records (``event_count``, ``head_hash``);
2. the request row agrees with its ``request.submitted`` event (seq 1) on what was asked:
   workflow, title, action (and its SHA-256), risk, justification, prompt, rollback,
   parent, submitter, executor, sponsor, deadline, policy hash (and the policy snapshot
   hashes to it);
3. the ledger chain is intact (seq 1, 2, 3 …, links, hashes), every entry's request still
   exists and every request has an entry;
4. the latest checkpoint's signature verifies, its ledger entry is still there unchanged,
   and the request heads as of its moment (see ``checkpoint``) still hash to its digest:
   events or whole requests deleted after a checkpoint show here.

Checks 1 and 2 are the bulk of the work (``scan``). A large store is split into ranges of
request ids, one per core (two at most by default), each checked by its own process on its
own connection; on PostgreSQL they share the parent's exported snapshot, on SQLite each
range is read in one WAL snapshot (a range's events and request rows are always consistent
with each other).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, make_url

from signoff.domain import chain
from signoff.evidence import checkpoint as cp
from signoff.evidence.canon import ledger_hash
from signoff.evidence.scan import Failures as _Failures
from signoff.evidence.scan import check_range
from signoff.evidence.signing import verify_signature
from signoff.store.db import Store, sqlite_file
from signoff.store.tables import CheckpointRow, EventRow, LedgerRow, RequestRow

PROGRESS_EVERY = 100_000
GENESIS = chain.GENESIS


@dataclass
class VerifyResult:
    ok: bool
    checked_events: int
    checked_requests: int
    failure: str | None
    failures: list[str] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None  # the checkpoint checked, if any
    seconds: float = 0.0


@contextmanager
def snapshot(store: Store, *, pg_snapshot: str | None = None):
    """A read-only connection that sees one consistent state of the database.

    PostgreSQL: REPEATABLE READ (optionally importing another transaction's exported
    snapshot, so parallel workers see exactly the same state). SQLite: a deferred
    ``BEGIN`` in WAL mode, which is a snapshot too.
    """
    if store.dialect == "postgresql":
        opts = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    else:
        opts = {"signoff_readonly": True}  # BEGIN (deferred): a WAL snapshot
    with store.engine.connect().execution_options(**opts) as conn, conn.begin():
        if pg_snapshot:
            conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{pg_snapshot}'")
        yield conn


PARALLEL_FROM = 150_000  # events; below this one process is quicker than starting another


def verify_store(
    store: Store,
    keys_or_jwks: Any,
    progress: Callable[[int], None] | None = None,
    *,
    max_failures: int = 100,
    workers: int | None = None,
) -> VerifyResult:
    """Check the whole evidence store; see the module docstring.

    ``keys_or_jwks``: the ``KeyRing`` or a JWKS, for checkpoint signatures.
    ``progress(n)`` is called with the number of events checked so far, about every
    100,000. ``workers``: processes to split the requests over (default: 2 on a machine
    with two or more cores when the store holds over 150,000 events, else 1).
    """
    started = time.perf_counter()
    failures = _Failures(max_failures)
    with snapshot(store) as conn:
        last_cp = conn.execute(select(CheckpointRow).order_by(CheckpointRow.id.desc()).limit(1)).first()
        cutoff = chain.iso(last_cp.at) if last_cp is not None else None
        request_ids = [rid for (rid,) in _stream(conn, select(RequestRow.id).order_by(RequestRow.id))]
        parts = workers or _default_workers(conn)
        ranges = _ranges(request_ids, parts)
        pg_snapshot = None
        if len(ranges) > 1 and store.dialect == "postgresql":
            pg_snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
        results = _run_ranges(store, conn, ranges, cutoff, pg_snapshot, max_failures, progress)
        events = 0
        at_cutoff: list[tuple[str, int, str]] = []
        for part in results:
            events += part["events"]
            at_cutoff.extend(part["at_cutoff"])
            for text in part["failures"]:
                failures.add(text)
        ledger = _check_ledger(conn, set(request_ids), failures)
        checkpoint_info = None
        if last_cp is not None:
            checkpoint_info = _check_checkpoint(conn, last_cp, keys_or_jwks, ledger, at_cutoff, failures)
    return VerifyResult(
        ok=not failures.items,
        checked_events=events,
        checked_requests=len(request_ids),
        failure=failures.items[0] if failures.items else None,
        failures=failures.items,
        checkpoint=checkpoint_info,
        seconds=time.perf_counter() - started,
    )


def _default_workers(conn: Connection) -> int:
    in_memory = conn.dialect.name == "sqlite" and conn.engine.url.database in (None, "", ":memory:")
    if (os.cpu_count() or 1) < 2 or in_memory:
        return 1
    approx = conn.execute(select(func.max(EventRow.id))).scalar() or 0
    return 2 if approx >= PARALLEL_FROM else 1


def _ranges(request_ids: list[str], parts: int) -> list[tuple[str | None, str | None]]:
    """Split the requests (in the database's own order) into ``parts`` ranges [lo, hi)."""
    parts = max(1, min(parts, len(request_ids)))
    bounds = [request_ids[len(request_ids) * k // parts] for k in range(1, parts)]
    edges = [None, *bounds, None]
    return list(pairwise(edges))


def _run_ranges(store: Store, conn: Connection, ranges, cutoff, pg_snapshot, max_failures, progress) -> list[dict]:
    pg = store.dialect == "postgresql"
    dbc = conn.connection.dbapi_connection  # the snapshot's own connection, for the hot loop
    if len(ranges) == 1:
        result = check_range(dbc, pg, *ranges[0], cutoff, max_failures, progress, PROGRESS_EVERY)
        if progress is not None:
            progress(result["events"])
        return [result]
    target = _target(store)
    workers = [_Worker(target, lo, hi, cutoff, pg_snapshot, max_failures) for lo, hi in ranges[1:]]

    def mine(n: int) -> None:
        if progress is not None:
            progress(n + sum(w.progress for w in workers))

    try:
        results = [check_range(dbc, pg, *ranges[0], cutoff, max_failures, mine if progress else None, PROGRESS_EVERY)]
        results.extend(w.result() for w in workers)
    finally:
        for w in workers:
            w.stop()
    if progress is not None:
        progress(sum(r["events"] for r in results))
    return results


def _target(store: Store) -> dict:
    """How a helper process reaches the same database without SQLAlchemy."""
    url = make_url(store.url)
    if store.dialect == "sqlite":
        path = sqlite_file(store.url)
        if path is None:
            raise ValueError("an in-memory SQLite database cannot be verified in several processes")
        return {"sqlite": path}
    return {"postgresql": url.set(drivername="postgresql").render_as_string(hide_password=False)}


class _Worker:
    """A verify process for one range of requests (a plain subprocess: no fork of a
    threaded parent, no re-import of the caller's ``__main__``, no SQLAlchemy)."""

    def __init__(self, target, lo, hi, cutoff, pg_snapshot, max_failures):
        import pickle
        import subprocess
        import sys
        import threading

        import signoff

        root = os.path.dirname(os.path.dirname(os.path.abspath(signoff.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.progress = 0
        self._result = None
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from signoff.evidence.scan import worker_main; worker_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._proc.stdin.write(pickle.dumps((target, lo, hi, cutoff, pg_snapshot, max_failures)))
        self._proc.stdin.close()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import pickle

        try:
            while True:
                kind, payload = pickle.load(self._proc.stdout)
                if kind == "progress":
                    self.progress = payload
                else:
                    self._result = (kind, payload)
                    return
        except (EOFError, pickle.UnpicklingError, OSError) as exc:
            self._result = ("error", f"verify worker stopped: {exc!r}")

    def result(self) -> dict:
        self._reader.join()
        self._proc.wait()
        kind, payload = self._result or ("error", "no answer")
        if kind != "ok":
            raise RuntimeError(f"evidence verify worker failed: {payload}")
        return payload

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def _stream(conn: Connection, stmt, per: int = 10_000):
    return conn.execution_options(yield_per=per).execute(stmt)


# -- 3. the ledger ---------------------------------------------------------------------------


def _check_ledger(conn: Connection, heads: set[str], failures: _Failures) -> dict[int, str]:
    """Checks the ledger; returns {seq: hash} (for the checkpoint's ledger entry)."""
    stmt = select(LedgerRow.seq, LedgerRow.request_id, LedgerRow.at, LedgerRow.prev_hash, LedgerRow.hash).order_by(
        LedgerRow.seq
    )
    expect_seq, expect_prev = 1, GENESIS
    in_ledger: set[str] = set()
    hashes: dict[int, str] = {}
    broken = False
    for seq, rid, at, prev, digest in _stream(conn, stmt):
        hashes[seq] = digest
        in_ledger.add(rid)
        if rid not in heads:
            failures.add(f"request {rid}: deleted — ledger entry seq {seq} names it but its record is gone")
        if broken:
            continue
        if seq != expect_seq:
            failures.add(
                f"ledger seq {expect_seq}: missing (the next entry is seq {seq}) — a request's record was deleted"
            )
            broken = True
            continue
        if prev != expect_prev:
            failures.add(f"ledger seq {seq} (request {rid}): prev_hash does not link to seq {seq - 1}")
            broken = True
            continue
        if ledger_hash(prev, seq, rid, at) != digest:
            failures.add(f"ledger seq {seq} (request {rid}): hash mismatch — the entry was altered")
            broken = True
            continue
        expect_seq, expect_prev = seq + 1, digest
    for rid in heads:
        if rid not in in_ledger:
            failures.add(f"request {rid}: not in the ledger (its ledger entry was deleted, or the record inserted)")
    return hashes


# -- 4. the latest checkpoint --------------------------------------------------------------


def _check_checkpoint(
    conn: Connection,
    row,
    keys_or_jwks: Any,
    ledger: dict[int, str],
    at_cutoff: list[tuple[str, int, str]],
    failures: _Failures,
) -> dict[str, Any]:
    at = chain.iso(row.at)
    name = f"checkpoint {row.id} (as of {at})"
    info = {"id": row.id, "at": at, "ledger_seq": row.ledger_seq, "kid": row.kid}
    data = cp.statement(row.ledger_seq, row.ledger_head, row.heads_digest, at, row.kid)
    ok, reason = verify_signature(keys_or_jwks, row.kid, data, row.signature)
    if not ok:
        failures.add(f"{name}: {reason}")
        return info
    if row.ledger_seq:
        have = ledger.get(row.ledger_seq)
        if have is None:
            failures.add(
                f"{name}: ledger entry seq {row.ledger_seq} is gone — requests recorded before "
                "the checkpoint were deleted"
            )
        elif have != row.ledger_head:
            failures.add(f"{name}: ledger entry seq {row.ledger_seq} differs from the signed ledger head")
    if cp.heads_digest(at_cutoff) != row.heads_digest:
        kept = cp.stored_heads(conn)
        if cp.heads_digest((rid, n, h) for rid, (n, h) in kept.items()) == row.heads_digest:
            now = {rid: (n, h) for rid, n, h in at_cutoff}
            for text in cp.name_changes(row.id, kept, now):
                failures.add(f"{text} (checkpoint as of {at})")
        else:
            failures.add(
                f"{name}: the request chains no longer match the signed heads — events or a whole "
                f"request recorded before {at} were deleted or rewritten (the copy of the signed heads "
                "kept with it was changed too, so which one cannot be told)"
            )
    return info
