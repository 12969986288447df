"""The hot part of ``verify``: check the requests in one id range, on a plain DB-API
connection (sqlite3 or psycopg), with no SQLAlchemy in the loop.

It runs in the calling process and, for large stores, in helper processes too
(``python -c "…worker_main()"``), so it imports only the standard library and
``canon``: a worker starts in a fraction of a second.

For the requests with ``lo <= id < hi`` (``None``: unbounded), in the database's own
order, it streams the events ordered by ``(request_id, seq)`` alongside the request rows
ordered by ``id`` (the same order), and checks:

- each chain: ``seq`` 1, 2, 3 …, ``prev_hash`` links, ``hash`` recomputes (RFC 8785), and
  the last hash and the count are what the request row records;
- the request row against its ``request.submitted`` event (seq 1), parsed once for both;
- and it collects, for the latest checkpoint's moment ``cutoff``, each request's
  ``(id, n, hash_n)`` (see ``checkpoint``).

An event's ``data`` is normally parsed and re-encoded canonically before hashing. When the
stored text is already canonical (no ``": "``, which ``json.dumps``' default always
writes) it is first hashed as it is; only if that does not give the stored hash does it
take the full path. A match proves the hash covers exactly that text; a non-canonical text
could only match if someone recomputed the hash over it — and recomputed hashes are what
the request heads, the ledger and the signed checkpoints catch, whichever encoding was
used. Storing ``events.data`` canonically therefore makes verify several times faster.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from signoff.evidence.canon import (
    NotCanonicalizable,
    canonical_bytes,
    canonical_bytes_of_json,
    canonical_text_of_json,
    encode_canonical,
    event_hash,
    json_string,
    scan_json,
)

GENESIS = "0" * 64
FETCH = 5_000
_SUBMITTED_FIELDS = (
    "workflow",
    "title",
    "risk",
    "justification",
    "prompt",
    "parent_id",
    "rollback_of",
    "submitted_by",
    "executor",
    "sponsor",
)


class Failures:
    def __init__(self, limit: int):
        self.items: list[str] = []
        self.limit = limit

    def add(self, text: str) -> None:
        if len(self.items) < self.limit:
            self.items.append(text)

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit


def _where(pg: bool, column: str, lo: str | None, hi: str | None) -> tuple[str, list[str]]:
    mark = "%s" if pg else "?"
    conds, params = [], []
    if lo is not None:
        conds.append(f"{column} >= {mark}")
        params.append(lo)
    if hi is not None:
        conds.append(f"{column} < {mark}")
        params.append(hi)
    return (" WHERE " + " AND ".join(conds) if conds else ""), params


_cursor_serial = 0


def stream(dbc: Any, pg: bool, sql: str, params: list, per: int = FETCH) -> Iterator[tuple]:
    """Rows of ``sql``, fetched ``per`` at a time (a server-side cursor on PostgreSQL)."""
    global _cursor_serial
    if pg:
        _cursor_serial += 1
        cursor = dbc.cursor(name=f"signoff_verify_{_cursor_serial}")
        cursor.itersize = per
    else:
        cursor = dbc.cursor()
    try:
        cursor.execute(sql, params)
        while True:
            batch = cursor.fetchmany(per)
            if not batch:
                return
            yield from batch
    finally:
        cursor.close()


def _text(pg: bool, column: str) -> str:
    return f"{column}::text" if pg else f"CAST({column} AS TEXT)"


def _iso_utc(value: Any) -> str | None:
    """A stored timestamp (naive UTC: ``datetime`` from psycopg, text from SQLite) as the
    ``isoformat()`` the submit use-case recorded."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


def check_range(
    dbc: Any,
    pg: bool,
    lo: str | None,
    hi: str | None,
    cutoff: str | None,
    max_failures: int,
    progress: Callable[[int], None] | None = None,
    every: int = 100_000,
) -> dict:
    """Check the requests with ids in [lo, hi); see the module docstring."""
    failures = Failures(max_failures)
    where, params = _where(pg, "id", lo, hi)
    heads = {
        rid: (n or 0, head)
        for rid, n, head in stream(dbc, pg, "SELECT id, event_count, head_hash FROM requests" + where, params)
    }
    # the columns _Submissions checks (in its order), for the ordered stream and the one-off look-up
    columns = (
        "SELECT id, "
        + ", ".join(_SUBMITTED_FIELDS)
        + ", "
        + _text(pg, "action")
        + ", action_sha256, "
        + _text(pg, "rollback")
        + ", deadline, policy_hash, "
        + _text(pg, "policy")
        + " FROM requests"
    )
    rows = stream(dbc, pg, columns + where + " ORDER BY id", params, per=1000)
    ewhere, eparams = _where(pg, "request_id", lo, hi)
    events = stream(
        dbc,
        pg,
        "SELECT request_id, seq, at, type, actor, "
        + _text(pg, "data")
        + ", prev_hash, hash FROM events"
        + ewhere
        + " ORDER BY request_id, seq",
        eparams,
    )
    one = columns + " WHERE id = " + ("%s" if pg else "?")

    def lookup(rid: str) -> tuple | None:
        cursor = dbc.cursor()
        try:
            cursor.execute(one, [rid])
            return cursor.fetchone()
        finally:
            cursor.close()

    submissions = _Submissions(rows, failures, lookup)

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
    # Small data documents repeat a lot (the same decision, status change or policy
    # check in many requests): each distinct one is canonicalized once.
    known: dict[str, str] = {}
    canonical_data = canonical_text_of_json
    as_json = json_string
    sha256 = hashlib.sha256

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
            failures.add(
                f"request {rid} event seq {n + 1}: missing — the request records {rec[0]} "
                f"event(s), the chain ends at seq {n}"
            )
        elif rec[0] < n:
            failures.add(
                f"request {rid} event seq {rec[0] + 1}: not in the request record "
                f"(it records {rec[0]} event(s), the chain has {n})"
            )
        elif rec[1] != head:
            failures.add(f"request {rid} event seq {n}: its hash is not the head the request records")

    for rid, seq, at, type_, actor, data, prev, digest in events:
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
            failures.add(
                f"request {rid} event seq {n}: missing (the next stored event is seq {seq})"
                if seq > n
                else f"request {rid} event seq {seq}: out of order"
            )
            broken = True
            continue
        if prev != expect:
            failures.add(
                f"request {rid} event seq {seq}: prev_hash does not link to "
                + ("the genesis hash" if seq == 1 else f"seq {seq - 1}")
                + " (events reordered, removed or inserted)"
            )
            broken = True
            continue
        good = False
        if '": ' not in data:
            # Data stored as its canonical text (no ": " separator, unlike json.dumps'
            # default) is hashed as it is: no parsing. Any other text takes the full path.
            try:
                good = (
                    sha256(
                        f'{prev}{{"actor":{as_json(actor)},"at":{as_json(at)},"data":{data},'
                        f'"request_id":{rid_json},"seq":{seq},"type":{as_json(type_)}}}'.encode()
                    ).hexdigest()
                    == digest
                )
            except UnicodeEncodeError:
                good = False
        if seq == 1:
            # parsed once: for the hash and to check the request row against it
            value = scan_json(data)
            submissions.check(rid, rid in heads, type_, value, data)
        if not good:
            if seq == 1:
                try:
                    body = encode_canonical(value) if value is not None else None
                except (TypeError, ValueError):
                    body = None
            else:
                body = known.get(data)
                if body is None:
                    body = canonical_data(data)
                    if body is not None and len(data) <= 400 and len(known) < 100_000:
                        known[data] = body
            try:
                if body is None:
                    raise UnicodeEncodeError("utf-8", "", 0, 0, "slow path")
                good = (
                    sha256(
                        f'{prev}{{"actor":{as_json(actor)},"at":{as_json(at)},"data":{body},'
                        f'"request_id":{rid_json},"seq":{seq},"type":{as_json(type_)}}}'.encode()
                    ).hexdigest()
                    == digest
                )
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
    submissions.finish()
    for rid, (n, _) in heads.items():
        if rid not in seen:
            failures.add(
                f"request {rid} event seq 1: missing — the request records {n} event(s), none are stored"
                if n
                else f"request {rid} event seq 1: missing — the request has no events"
            )
    return {"events": count, "at_cutoff": at_cutoff, "failures": failures.items}


class _Submissions:
    """Request rows (ordered like the events) checked against their request.submitted event."""

    def __init__(self, rows: Iterator[tuple], failures: Failures, lookup: Callable[[str], tuple | None]):
        self.rows = rows
        self.failures = failures
        self.lookup = lookup
        self.merged = True
        self.policy_hashes: dict[str, str] = {}

    def _row(self, rid: str) -> tuple | None:
        # Rows come in the same order as the events' request ids; rows skipped here are
        # requests with no events at all (reported separately). Should the two orders ever
        # disagree, look the remaining rows up one by one.
        if self.merged:
            for row in self.rows:
                if row[0] == rid:
                    return row
            self.merged = False
        return self.lookup(rid)

    def check(self, rid: str, has_row: bool, etype: str, value: Any, data_text: str) -> None:
        if not has_row or self.failures.full:
            return
        row = self._row(rid)
        if row is None:
            return
        scanned = value is not None
        if not scanned:  # outside the fast path: parse plainly
            try:
                value = json.loads(data_text)
            except ValueError:
                value = None
        problem = self._problem(row, etype, value, scanned, data_text)
        if problem:
            self.failures.add(f"request {rid}: {problem}")

    def finish(self) -> None:
        for _ in self.rows:  # drain (closes the cursor)
            pass

    @staticmethod
    def _event_rollback(data: dict, scanned: bool, data_text: str) -> bytes | None:
        """RFC 8785 bytes of the event's ``rollback`` (None when it has none).

        A value from ``scan_json`` encodes exactly on the fast path unless it holds a number
        the fast encoder refuses; then (and for a plainly parsed value) the reference path."""
        rollback = data.get("rollback")
        if rollback is None:
            return None
        if scanned:
            try:
                return encode_canonical(rollback).encode("utf-8")
            except (TypeError, ValueError):
                rollback = json.loads(data_text).get("rollback")
        return canonical_bytes(rollback)

    def _problem(self, row: tuple, etype: str, data: Any, scanned: bool, data_text: str) -> str | None:
        plain = row[1:11]
        action_text, action_sha, rollback_text, deadline, policy_hash, policy_text = row[11:]
        if etype != "request.submitted":
            return f"event seq 1 is {etype}, not request.submitted"
        if not isinstance(data, dict):
            return "the request.submitted event's data is not a JSON object"
        for name, value in zip(_SUBMITTED_FIELDS, plain, strict=True):
            got = data.get(name)
            if got != value or type(got) is not type(value):
                return f"the request record's {name} differs from its request.submitted event (seq 1)"
        try:
            # The action as recorded must hash to the action_sha256 the event carries
            # (which the event's own hash protects): equal hashes, equal canonical actions.
            if hashlib.sha256(canonical_bytes_of_json(action_text or "null")).hexdigest() != action_sha:
                return "the request record's action does not hash to its action_sha256"
            if data.get("action_sha256") != action_sha:
                return "the request record's action differs from its request.submitted event (seq 1)"
            # Compared as RFC 8785 bytes, each side exact (fast where it provably can be):
            # any text, in any plane, and any number the writer could hash compare equal.
            recorded = canonical_bytes_of_json(rollback_text) if rollback_text not in (None, "null") else None
            if recorded != self._event_rollback(data, scanned, data_text):
                return "the request record's rollback differs from its request.submitted event (seq 1)"
            # Policy snapshots repeat (one per workflow version): hash each distinct text once.
            text = policy_text or "null"
            digest = self.policy_hashes.get(text)
            if digest is None:
                digest = hashlib.sha256(canonical_bytes_of_json(text)).hexdigest()
                if len(self.policy_hashes) < 10_000:
                    self.policy_hashes[text] = digest
            if digest != policy_hash:
                return "the request record's policy snapshot does not hash to its policy_sha256"
        except (NotCanonicalizable, ValueError, TypeError):
            return "the request record's action, rollback or policy is not canonical JSON"
        if data.get("policy_sha256") != policy_hash:
            return "the request record's policy_sha256 differs from its request.submitted event (seq 1)"
        try:
            stored = _iso_utc(deadline)
        except (TypeError, ValueError):
            stored = None
        if stored is None or data.get("deadline") != stored:
            return "the request record's deadline differs from its request.submitted event (seq 1)"
        return None


# -- worker processes -------------------------------------------------------------------------

_SNAPSHOT_RE = re.compile(r"^[0-9A-Fa-f-]+$")


def connect(target: dict, pg_snapshot: str | None):
    """A read-only DB-API connection inside one snapshot: ``target`` is
    ``{"sqlite": path}`` or ``{"postgresql": libpq URI}``."""
    if "sqlite" in target:
        import sqlite3
        from urllib.parse import quote

        # read-only: a helper never creates or changes the file
        dbc = sqlite3.connect(
            f"file:{quote(target['sqlite'], safe='/')}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        dbc.execute("PRAGMA busy_timeout=30000")
        dbc.execute("BEGIN")  # a read transaction: one WAL snapshot throughout
        return dbc
    import psycopg

    dbc = psycopg.connect(target["postgresql"], autocommit=False)
    dbc.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    dbc.read_only = True
    if pg_snapshot:
        if not _SNAPSHOT_RE.match(pg_snapshot):
            raise ValueError("bad snapshot id")
        dbc.execute(f"SET TRANSACTION SNAPSHOT '{pg_snapshot}'")
    return dbc


def worker_main() -> None:
    """A verify helper process: arguments and answers are pickles on stdin/stdout."""
    import pickle
    import sys

    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the answer pipe

    def send(kind: str, payload: Any) -> None:
        pickle.dump((kind, payload), out)
        out.flush()

    try:
        target, lo, hi, cutoff, pg_snapshot, max_failures = pickle.load(sys.stdin.buffer)
        dbc = connect(target, pg_snapshot)
        try:
            result = check_range(
                dbc, "postgresql" in target, lo, hi, cutoff, max_failures, lambda n: send("progress", n), every=20_000
            )
        finally:
            try:
                dbc.rollback()
            finally:
                dbc.close()
        send("ok", result)
    except BaseException:  # report anything to the parent rather than dying silently
        import traceback

        send("error", traceback.format_exc())
