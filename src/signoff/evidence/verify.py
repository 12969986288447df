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
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Text, and_, cast, func, select
from sqlalchemy.engine import Connection

from signoff.domain import chain
from signoff.evidence import checkpoint as cp
from signoff.evidence.canon import (
    NotCanonicalizable,
    canonical_bytes_of_json,
    canonical_text_of_json,
    event_hash,
    json_string,
    ledger_hash,
)
from signoff.evidence.signing import verify_signature
from signoff.store.db import Store
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


class _Failures:
    def __init__(self, limit: int):
        self.items: list[str] = []
        self.limit = limit

    def add(self, text: str) -> None:
        if len(self.items) < self.limit:
            self.items.append(text)

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit


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
    with store.engine.connect().execution_options(**opts) as conn:
        with conn.begin():
            if pg_snapshot:
                conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{pg_snapshot}'")
            yield conn


PARALLEL_FROM = 150_000  # events; below this one process is quicker than starting another


def verify_store(store: Store, keys_or_jwks: Any, progress: Callable[[int], None] | None = None, *,
                 max_failures: int = 100, workers: int | None = None) -> VerifyResult:
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
            checkpoint_info = _check_checkpoint(last_cp, keys_or_jwks, ledger, at_cutoff, failures)
    return VerifyResult(ok=not failures.items, checked_events=events, checked_requests=len(request_ids),
                        failure=failures.items[0] if failures.items else None, failures=failures.items,
                        checkpoint=checkpoint_info, seconds=time.perf_counter() - started)


def _default_workers(conn: Connection) -> int:
    if (os.cpu_count() or 1) < 2:
        return 1
    approx = conn.execute(select(func.max(EventRow.id))).scalar() or 0
    return 2 if approx >= PARALLEL_FROM else 1


def _ranges(request_ids: list[str], parts: int) -> list[tuple[str | None, str | None]]:
    """Split the requests (in the database's own order) into ``parts`` ranges [lo, hi)."""
    parts = max(1, min(parts, len(request_ids)))
    bounds = [request_ids[len(request_ids) * k // parts] for k in range(1, parts)]
    edges = [None, *bounds, None]
    return list(zip(edges[:-1], edges[1:]))


def _run_ranges(store: Store, conn: Connection, ranges, cutoff, pg_snapshot, max_failures, progress) -> list[dict]:
    if len(ranges) == 1:
        result = _check_range(conn, *ranges[0], cutoff, max_failures, progress)
        if progress is not None:
            progress(result["events"])
        return [result]
    workers = [_Worker(store.url, lo, hi, cutoff, pg_snapshot, max_failures) for lo, hi in ranges[1:]]

    def mine(n: int) -> None:
        if progress is not None:
            progress(n + sum(w.progress for w in workers))

    try:
        results = [_check_range(conn, *ranges[0], cutoff, max_failures, mine if progress else None)]
        results.extend(w.result() for w in workers)
    finally:
        for w in workers:
            w.stop()
    if progress is not None:
        progress(sum(r["events"] for r in results))
    return results


class _Worker:
    """A verify process for one range of requests (a plain subprocess: no fork of a
    threaded parent, no re-import of the caller's ``__main__``)."""

    def __init__(self, url, lo, hi, cutoff, pg_snapshot, max_failures):
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
            [sys.executable, "-c", "from signoff.evidence.verify import _worker_main; _worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._proc.stdin.write(pickle.dumps((url, lo, hi, cutoff, pg_snapshot, max_failures)))
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


def _worker_main() -> None:
    """Entry point of a verify worker process: arguments and answers are pickles on stdin/stdout."""
    import pickle
    import sys

    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the answer pipe

    def send(kind, payload) -> None:
        pickle.dump((kind, payload), out)
        out.flush()

    try:
        url, lo, hi, cutoff, pg_snapshot, max_failures = pickle.load(sys.stdin.buffer)
        store = Store(url, pool_size=1)
        try:
            with snapshot(store, pg_snapshot=pg_snapshot) as conn:
                result = _check_range(conn, lo, hi, cutoff, max_failures, lambda n: send("progress", n),
                                      every=20_000)
        finally:
            store.dispose()
        send("ok", result)
    except BaseException:  # report anything to the parent rather than dying silently
        import traceback

        send("error", traceback.format_exc())


def _stream(conn: Connection, stmt, per: int = 10_000):
    return conn.execution_options(yield_per=per).execute(stmt)


def _in_range(column, lo, hi):
    conds = []
    if lo is not None:
        conds.append(column >= lo)
    if hi is not None:
        conds.append(column < hi)
    return conds


def _check_range(conn: Connection, lo: str | None, hi: str | None, cutoff: str | None, max_failures: int,
                 progress: Callable[[int], None] | None, every: int = PROGRESS_EVERY) -> dict:
    """Checks 1 and 2 for the requests with ids in [lo, hi)."""
    failures = _Failures(max_failures)
    heads = {rid: (n or 0, head) for rid, n, head in _stream(
        conn, select(RequestRow.id, RequestRow.event_count, RequestRow.head_hash)
        .where(*_in_range(RequestRow.id, lo, hi)))}
    events, at_cutoff = _check_events(conn, lo, hi, heads, cutoff, failures, progress, every)
    _check_submissions(conn, lo, hi, failures)
    return {"events": events, "at_cutoff": at_cutoff, "failures": failures.items}


# -- 1. the events ------------------------------------------------------------------------

def _raw_events(conn: Connection, lo: str | None, hi: str | None, per: int = 10_000):
    """The events of [lo, hi) ordered by (request_id, seq), straight from the driver
    (SQLAlchemy's row layer costs about a microsecond an event; this is the hot path)."""
    pg = conn.dialect.name == "postgresql"
    mark = "%s" if pg else "?"
    where, params = [], []
    if lo is not None:
        where.append(f"request_id >= {mark}")
        params.append(lo)
    if hi is not None:
        where.append(f"request_id < {mark}")
        params.append(hi)
    sql = ("SELECT request_id, seq, at, type, actor, " + ("data::text" if pg else "CAST(data AS TEXT)")
           + ", prev_hash, hash FROM events" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY request_id, seq")
    dbapi = conn.connection.dbapi_connection
    if pg:
        cursor = dbapi.cursor(name=f"signoff_verify_{os.getpid()}_{id(conn)}")  # server-side: streamed
        cursor.itersize = per
    else:
        cursor = dbapi.cursor()
    try:
        cursor.execute(sql, params)
        while True:
            batch = cursor.fetchmany(per)
            if not batch:
                return
            yield from batch
    finally:
        cursor.close()


def _check_events(conn: Connection, lo, hi, heads: dict[str, tuple[int, str]], cutoff: str | None,
                  failures: _Failures, progress, every: int) -> tuple[int, list[tuple[str, int, str]]]:
    at_cutoff: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    count = 0
    next_report = every
    cur = None
    rid_json = ""
    n = 0
    expect = GENESIS
    broken = False
    cut_n, cut_h = 0, ""
    # The hot loop: canonical bytes inlined (see ``canon``). Small data documents repeat a
    # lot (the same decision, status change or policy check in many requests): each
    # distinct one is canonicalized once.
    known: dict[str, str] = {}
    canonical_data = canonical_text_of_json
    as_json = json_string
    sha256 = hashlib.sha256
    template = '{"actor":%s,"at":%s,"data":%s,"request_id":%s,"seq":%d,"type":%s}'

    def close(rid: str, n: int, head: str, broken: bool, cut_n: int, cut_h: str) -> None:
        seen.add(rid)
        if cut_n:
            at_cutoff.append((rid, cut_n, cut_h))
        if broken:
            return
        rec = heads.get(rid)
        if rec is None:
            failures.add(f"request {rid}: its record is missing (events seq 1–{n} remain)")
        elif rec[0] > n:
            failures.add(f"request {rid} event seq {n + 1}: missing — the request records {rec[0]} "
                         f"event(s), the chain ends at seq {n}")
        elif rec[0] < n:
            failures.add(f"request {rid} event seq {rec[0] + 1}: not in the request record "
                         f"(it records {rec[0]} event(s), the chain has {n})")
        elif rec[1] != head:
            failures.add(f"request {rid} event seq {n}: its hash is not the head the request records")

    for rid, seq, at, type_, actor, data, prev, digest in _raw_events(conn, lo, hi):
        count += 1
        if rid != cur:
            if cur is not None:
                close(cur, n, expect, broken, cut_n, cut_h)
            cur, n, expect, broken, cut_n, cut_h = rid, 0, GENESIS, False, 0, ""
            rid_json = as_json(rid)
            if count >= next_report:
                if progress is not None:
                    progress(count)
                next_report = count + every
        if broken:
            continue
        n += 1
        if seq != n:
            failures.add(f"request {rid} event seq {n}: missing (the next stored event is seq {seq})"
                         if seq > n else f"request {rid} event seq {seq}: out of order")
            broken = True
            continue
        if prev != expect:
            failures.add(f"request {rid} event seq {seq}: prev_hash does not link to "
                         + ("the genesis hash" if seq == 1 else f"seq {seq - 1}")
                         + " (events reordered, removed or inserted)")
            broken = True
            continue
        body = known.get(data)
        if body is None:
            body = canonical_data(data)
            if body is not None and len(data) <= 400 and len(known) < 100_000:
                known[data] = body
        try:
            if body is None:
                raise UnicodeEncodeError("utf-8", "", 0, 0, "slow path")
            good = sha256((prev + template % (as_json(actor), as_json(at), body, rid_json, seq, as_json(type_)))
                          .encode()).hexdigest() == digest
        except UnicodeEncodeError:
            try:
                good = event_hash(prev, rid, seq, at, type_, actor, data) == digest
            except NotCanonicalizable as exc:
                failures.add(f"request {rid} event seq {seq}: content cannot be canonicalized ({exc})")
                broken = True
                continue
        if not good:
            failures.add(f"request {rid} event seq {seq}: hash mismatch — the {type_} event was altered")
            broken = True
            continue
        expect = digest
        if cutoff is not None and at <= cutoff:
            cut_n, cut_h = seq, digest
    if cur is not None:
        close(cur, n, expect, broken, cut_n, cut_h)
    for rid, (n, _) in heads.items():
        if rid not in seen:
            failures.add(f"request {rid} event seq 1: missing — the request records {n} event(s), none are stored"
                         if n else f"request {rid} event seq 1: missing — the request has no events")
    return count, at_cutoff


# -- 2. what was asked -----------------------------------------------------------------------

_FIELDS = ("workflow", "title", "risk", "justification", "prompt", "parent_id", "rollback_of", "submitted_by",
           "executor", "sponsor")


def _check_submissions(conn: Connection, lo, hi, failures: _Failures) -> None:
    R, E = RequestRow, EventRow
    stmt = (select(R.id, R.workflow, R.title, R.risk, R.justification, R.prompt, R.parent_id, R.rollback_of,
                   R.submitted_by, R.executor, R.sponsor, cast(R.action, Text), R.action_sha256, cast(R.rollback, Text),
                   R.deadline, R.policy_hash, cast(R.policy, Text), E.type, cast(E.data, Text))
            .join(E, and_(E.request_id == R.id, E.seq == 1))
            .where(*_in_range(R.id, lo, hi)))
    policy_hashes: dict[str, str] = {}
    for row in _stream(conn, stmt, 2000):
        if failures.full:
            return
        problem = _submission_problem(row, policy_hashes)
        if problem:
            failures.add(f"request {row[0]}: {problem}")


def _submission_problem(row, policy_hashes: dict[str, str]) -> str | None:
    rid, *plain = row[:11]
    action_text, action_sha, rollback_text, deadline, policy_hash, policy_text, etype, data_text = row[11:]
    if etype != "request.submitted":
        return f"event seq 1 is {etype}, not request.submitted"
    try:
        data = json.loads(data_text)
    except ValueError:
        return "the request.submitted event's data is not JSON"
    if not isinstance(data, dict):
        return "the request.submitted event's data is not an object"
    for name, value in zip(_FIELDS, plain):
        got = data.get(name)
        if got != value or type(got) is not type(value):
            return f"the request record's {name} differs from its request.submitted event (seq 1)"
    try:
        # The action as recorded must hash to the action_sha256 the event carries (which
        # the event's own hash protects): equal hashes, equal canonical actions.
        if hashlib.sha256(canonical_bytes_of_json(action_text or "null")).hexdigest() != action_sha:
            return "the request record's action does not hash to its action_sha256"
        if data.get("action_sha256") != action_sha:
            return "the request record's action differs from its request.submitted event (seq 1)"
        if (json.loads(rollback_text) if rollback_text not in (None, "null") else None) != data.get("rollback"):
            return "the request record's rollback differs from its request.submitted event (seq 1)"
        # Policy snapshots repeat (one per workflow version): hash each distinct text once.
        text = policy_text or "null"
        digest = policy_hashes.get(text)
        if digest is None:
            digest = hashlib.sha256(canonical_bytes_of_json(text)).hexdigest()
            if len(policy_hashes) < 10_000:
                policy_hashes[text] = digest
        if digest != policy_hash:
            return "the request record's policy snapshot does not hash to its policy_sha256"
    except (NotCanonicalizable, ValueError):
        return "the request record's action, rollback or policy is not canonical JSON"
    if data.get("policy_sha256") != policy_hash:
        return "the request record's policy_sha256 differs from its request.submitted event (seq 1)"
    if deadline is None or data.get("deadline") != deadline.isoformat():
        return "the request record's deadline differs from its request.submitted event (seq 1)"
    return None


# -- 3. the ledger ---------------------------------------------------------------------------

def _check_ledger(conn: Connection, heads: set[str], failures: _Failures) -> dict[int, str]:
    """Checks the ledger; returns {seq: hash} (for the checkpoint's ledger entry)."""
    stmt = select(LedgerRow.seq, LedgerRow.request_id, LedgerRow.at, LedgerRow.prev_hash,
                  LedgerRow.hash).order_by(LedgerRow.seq)
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
            failures.add(f"ledger seq {expect_seq}: missing (the next entry is seq {seq}) — a request's "
                         "record was deleted")
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

def _check_checkpoint(row, keys_or_jwks: Any, ledger: dict[int, str], at_cutoff: list[tuple[str, int, str]],
                      failures: _Failures) -> dict[str, Any]:
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
            failures.add(f"{name}: ledger entry seq {row.ledger_seq} is gone — requests recorded before "
                         "the checkpoint were deleted")
        elif have != row.ledger_head:
            failures.add(f"{name}: ledger entry seq {row.ledger_seq} differs from the signed ledger head")
    if cp.heads_digest(at_cutoff) != row.heads_digest:
        failures.add(f"{name}: the request chains no longer match the signed heads — events or a whole "
                     f"request recorded before {at} were deleted or rewritten")
    return info
