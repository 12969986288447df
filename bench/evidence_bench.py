"""Evidence: ``signoff evidence verify`` throughput and one request's export (see bench/README.md).

Two parts, each on a fresh database (a SQLite file, or a new PostgreSQL database created
next to the one ``--db`` names and dropped afterwards):

(a) verify — a store of at least N events (default 1,000,000). A few requests are made
    through the real use-cases (submit, Slack post, refused click, thread replies,
    decision, grant, outcome, escalation, expiry); they are the templates. Every other
    request is one of them cloned with its own id, times, title, action target and thread
    text, its events hash-chained again with ``signoff.domain.chain`` (as the use-cases
    write them), its request row carrying the right head and count, its ledger entry
    chained after the previous one; rows go in with bulk Core INSERTs (executemany), events
    in time order (as a live store interleaves them). A sample of chains is recomputed with
    the reference ``rfc8785`` package. Then ``write_checkpoint`` signs the store as of a
    moment late in its history.
    Measured, all on the same store and in this order:
      - a baseline: one process reads every event over the same DB-API driver (the
        columns verify reads, ``data`` as text) and SHA-256es each row's stored text —
        once in table order, once in ``(request_id, seq)`` order (the order chains are
        checked in);
      - ``python -m signoff.cli evidence verify`` as a subprocess (wall clock, as a user
        runs it: settings from the environment, keys from the database);
      - ``verify_store`` in-process, its own ``seconds``, with the default workers and with
        one process;
      - one event altered with plain SQL, then the CLI again: it must fail and name that
        event (a verifier that accepts anything measures nothing).
    Before measuring, written pages are flushed and the run waits (up to 60 s) for the
    machine to be quiet; each measurement runs ``--verify-repeat`` times (default 2), and
    up to 3 more times while no run was quiet (other work under 10 % of the machine); the
    fastest counts; the CPU seconds other work used during each run are reported (and, on
    PostgreSQL, the server's).
(b) export — one request with a 1,000-message Slack thread, made through the real
    use-cases (submit, post, 1,000 ``record_thread_message`` replies, a few edits and
    deletions, approval, grant, outcome). Timed: ``signoff evidence export ID --format
    json`` and ``--format html`` (CLI subprocesses), ``signoff evidence verify-bundle`` on
    the exported JSON, and in-process ``build_bundle``, ``render_html``, ``verify_bundle``;
    the same for an ordinary request (~10 events) for the fixed cost; output sizes. Each
    timing is the median of ``--repeat`` runs (default 3).

    python bench/evidence_bench.py                                  # SQLite, both parts
    python bench/evidence_bench.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/evidence_bench.py --parts verify --events 200000
    python bench/evidence_bench.py --json out.json

Nothing here is a test and nothing asserts a time; the run asserts only correctness (the
seeded store verifies, the altered one does not, bundles verify).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
from sqlalchemy import insert, select, update
from sqlalchemy.engine import make_url

from common import database, libpq, loadavg, machine, machine_busy_seconds
from signoff.bootstrap import build, load_keyring
from signoff.config import parse_config
from signoff.demo.samples import ROUTING, agent_entry
from signoff.domain import chain
from signoff.domain.canonical import sha256_hex
from signoff.evidence.checkpoint import write_checkpoint
from signoff.evidence.export import build_bundle, render_html, verify_bundle
from signoff.evidence.verify import verify_store
from signoff.settings import Settings
from signoff.store.repo import Repo
from signoff.store.tables import EventRow, LedgerRow, RequestRow
from signoff.usecases.agent_ops import get_request
from signoff.usecases.decide import decide
from signoff.usecases.outcome import record_outcome
from signoff.usecases.reply import record_thread_message
from signoff.usecases.slack_ops import record_posted
from signoff.usecases.submit import submit
from signoff.usecases.sweep import sweep

CHANNEL = "C0APPROVALS"
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)
SPACING = 30  # seconds between cloned requests: ~100,000 requests span ~35 days
SECRETS = {"BENCH_DEPLOY_SECRET": "deploy-secret", "BENCH_OTHER_SECRET": "other-secret"}

YAML = f"""
agents:
{agent_entry("BENCH_DEPLOY_SECRET")}\
  - id: other-bot
    sponsor: U0OTHERSP
    secret_env: BENCH_OTHER_SECRET
workflows:
  - id: prod-restart
    description: Restart production services
{ROUTING}\
    approvers: [U0OWNER, U0SPONSOR, U0SECOND, U0THIRD]
    required_approvals: 1
    agents: [deploy-bot, other-bot]
    timeout: 30m
    escalation:
      - after: 10m
        to: [U0ESC]
      - after: 20m
        to: [U0PLAT]
    execution:
      grant_ttl: 10m
"""

TARGETS = [
    f"{name}-{region}"
    for name in ("checkout-api", "payments", "search", "catalog", "auth", "ledger", "notifier", "images")
    for region in ("eu", "us", "ap", "sa", "af")
]
# Thread messages as people write them; a few are not ASCII (accents, typographic quotes, emoji).
SAYINGS = [
    "checking the dashboards now",
    "p99 is back under 200ms on the canary, looks fine to me",
    "<@U0OWNER> can you take this one? I'm on the incident call",
    "is there a rollback plan if the restart doesn't clear the connection pool?",
    "the 14:02 deploy touched the pool size, restart should pick up the new value",
    "ok from my side",
    "let's wait for the batch job to finish first (ETA ~5 min)",
    "batch done, go ahead",
    "déploiement vérifié côté EU, RAS",
    "“graceful” restart drains in ~30s, users won't notice ✅",
    "+1",
    "I see 3 pods in CrashLoopBackOff in prod-eu, is that related?",
    "no, those are the old replica set, they'll go away",
    "approving after the canary check",
    "please attach the runbook link next time: https://wiki.example.com/runbooks/checkout-restart",
    "heads up: change freeze starts Friday 18:00 UTC",
    "graphs: error rate 0.02% → 0.01% after the last restart",
    "who owns the alert that fired at 13:58?",
    "merci, c'est bon pour moi",
    "thanks all",
]


# ---------------------------------------------------------------------- machine


def own_cpu_seconds() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def settle(limit: float = 0.25, max_wait: float = 60.0) -> float:
    """Flush written pages to disk, then wait (bounded) until the machine is quiet; returns
    the busy fraction (0..1 over all cores) seen last."""
    os.sync()
    end = time.monotonic() + max_wait
    while True:
        b0, t0 = machine_busy_seconds(), time.monotonic()
        time.sleep(2)
        busy = (machine_busy_seconds() - b0) / ((time.monotonic() - t0) * (os.cpu_count() or 1))
        if busy <= limit or time.monotonic() >= end:
            return round(busy, 3)
        log(f"machine is {busy:.0%} busy; waiting")


def postgres_cpu_seconds() -> float:
    """CPU seconds used so far by the PostgreSQL server's processes on this machine (its
    work for us is part of what is measured; it also serves other people's tests)."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if stat[stat.index("(") + 1 : stat.rindex(")")] != "postgres":
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # utime, stime, and (the postmaster's) cutime, cstime: backends that exited meanwhile
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK")


class Window:
    """A measured window: wall seconds; CPU seconds of the PostgreSQL server; CPU seconds
    all other work on the machine used meanwhile (not us, our children, or the server)."""

    def __init__(self, pg: bool = False):
        self.pg = pg

    def _now(self):
        return machine_busy_seconds(), own_cpu_seconds(), postgres_cpu_seconds() if self.pg else 0.0

    def __enter__(self):
        self.start, self.t0 = self._now(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        (m0, o0, p0), (m1, o1, p1) = self.start, self._now()
        self.server = p1 - p0
        self.others = max(0.0, (m1 - m0) - (o1 - o0) - self.server)
        return False


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- databases


def dbapi_connect(url: str):
    """A plain DB-API connection (the driver verify uses)."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        import sqlite3

        return sqlite3.connect(u.database, isolation_level=None)
    import psycopg

    return psycopg.connect(libpq(url))


class Clock:
    def __init__(self, start: datetime = T0):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> datetime:
        self.now += timedelta(**kw)
        return self.now


def runtime(url: str, clock: Clock):
    for k, v in SECRETS.items():
        os.environ.setdefault(k, v)
    return build(Settings(SIGNOFF_DATABASE_URL=url), config=parse_config(YAML), clock=clock)


def slack_ts(at: datetime, micro: int = 0) -> str:
    return f"{int(at.timestamp())}.{micro:06d}"


def cli_env(url: str) -> dict:
    """The environment a user runs the CLI with: the database URL; keys from the database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNOFF_", "SLACK_"))}
    env["SIGNOFF_DATABASE_URL"] = url
    return env


def run_cli(args: list[str], url: str, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "signoff.cli", *args],
        cwd=cwd,
        env=cli_env(url),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return time.perf_counter() - started, proc


def cli_fixed_cost(url: str, cwd: Path) -> float:
    """What every evidence command pays before its own work: the interpreter, imports,
    settings, the schema check and loading the keys (an export of a request that is not there)."""
    wall, proc = run_cli(["evidence", "export", "no-such-request"], url, cwd)
    assert proc.returncode == 1 and "no request" in proc.stderr, proc.stderr
    return round(wall, 3)


# ---------------------------------------------------------------------- (a) the store


class History:
    """Drives requests through the real use-cases (the templates for cloning)."""

    def __init__(self, rt, clock: Clock):
        self.rt, self.ctx, self.clock = rt, rt.context, clock

    def submit(self, agent: str = "deploy-bot", **over) -> str:
        body = {
            "workflow": "prod-restart",
            "title": "Restart checkout-api in prod-eu",
            "action": {
                "type": "service.restart",
                "target": "checkout-api-eu",
                "environment": "production",
                "parameters": {"graceful": True},
            },
            "justification": "p99 latency doubled after the 14:02 deploy; the pool size change needs a restart",
            "prompt": "checkout latency alert fired, investigate and fix",
            "risk": "medium",
        }
        body.update(over)
        return submit(self.ctx, agent_id=agent, body=body).request["id"]

    def post(self, rid: str) -> str:
        ts = slack_ts(self.clock(), 100)
        msg_id = self.ctx.store.read(lambda s: Repo(s).messages(rid, role="request")[0].id)
        record_posted(self.ctx, message_id=msg_id, channel=CHANNEL, ts=ts)
        return ts

    def reply(self, root: str, user: str, text: str, k: int) -> str:
        ts = slack_ts(self.clock(), 200 + k)
        assert record_thread_message(
            self.ctx,
            event={"type": "message", "channel": CHANNEL, "user": user, "text": text, "ts": ts, "thread_ts": root},
            event_id=None,
        )
        return ts

    def edit(self, root: str, user: str, ts: str, old: str, new: str) -> None:
        assert record_thread_message(
            self.ctx,
            event={
                "type": "message",
                "subtype": "message_changed",
                "channel": CHANNEL,
                "message": {"user": user, "ts": ts, "text": new, "thread_ts": root},
                "previous_message": {"user": user, "ts": ts, "text": old, "thread_ts": root},
            },
            event_id=None,
        )

    def delete(self, root: str, user: str, ts: str, old: str) -> None:
        assert record_thread_message(
            self.ctx,
            event={
                "type": "message",
                "subtype": "message_deleted",
                "channel": CHANNEL,
                "deleted_ts": ts,
                "previous_message": {"user": user, "ts": ts, "text": old, "thread_ts": root},
            },
            event_id=None,
        )

    def decide(self, rid: str, user: str, decision: str, expect: str) -> None:
        got = decide(self.ctx, request_id=rid, user=user, decision=decision, channel=CHANNEL).outcome
        assert got == expect, (got, expect)

    def execute(self, rid: str, status: str, agent: str = "deploy-bot") -> None:
        assert get_request(self.ctx, agent_id=agent, request_id=rid)["status"] == "executing"
        record_outcome(
            self.ctx,
            agent_id=agent,
            request_id=rid,
            body={
                "status": status,
                "detail": "restarted 12/12 pods" if status == "succeeded" else "3 pods failed readiness after restart",
            },
        )


def make_templates(h: History) -> list[tuple[str, int]]:
    """Four lifecycles (request id, weight out of 20): succeeded with a thread; a refused
    click then approved, failed; rejected after a discussion; escalated, then expired."""
    c = h.clock
    ok = h.submit()
    root = h.post(ok)
    c.advance(seconds=40)
    h.reply(root, "U0OWNER", SAYINGS[0], 0)
    c.advance(seconds=70)
    h.reply(root, "U0SECOND", SAYINGS[1], 1)
    c.advance(seconds=20)
    h.decide(ok, "U0OWNER", "approve", "approved")
    c.advance(seconds=35)
    h.execute(ok, "succeeded")

    c.advance(minutes=3)
    failed = h.submit(
        title="Restart payments in prod-us", risk="high", rollback={"description": "redeploy the previous image tag"}
    )
    root = h.post(failed)
    c.advance(seconds=25)
    h.decide(failed, "U0SPONSOR", "approve", "refused")
    c.advance(seconds=50)
    h.reply(root, "U0OWNER", SAYINGS[3], 0)
    c.advance(seconds=90)
    h.decide(failed, "U0OWNER", "approve", "approved")
    c.advance(seconds=60)
    h.execute(failed, "failed")

    c.advance(minutes=3)
    rejected = h.submit(agent="other-bot", title="Restart search in prod-ap", risk="low")
    root = h.post(rejected)
    for k in range(3):
        c.advance(seconds=45)
        h.reply(root, ("U0SECOND", "U0OWNER", "U0THIRD")[k], SAYINGS[4 + k], k)
    c.advance(seconds=30)
    h.decide(rejected, "U0SECOND", "reject", "rejected")

    c.advance(minutes=3)
    expired = h.submit(title="Restart catalog in prod-sa")
    root = h.post(expired)
    c.advance(seconds=100)
    h.reply(root, "U0OWNER", SAYINGS[12], 0)
    c.advance(minutes=10)
    sweep(h.ctx)  # escalation step 1
    c.advance(minutes=10)
    sweep(h.ctx)  # step 2
    c.advance(minutes=10)
    sweep(h.ctx)  # expired
    return [(ok, 12), (failed, 3), (rejected, 3), (expired, 2)]


_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(.*)$")
_SHIFT_INTS = {"iat", "nbf", "exp"}


class Template:
    """One real request (row and events) that clones are made from."""

    def __init__(self, conn, rid: str, weight: int):
        table = RequestRow.__table__
        self.rid, self.weight = rid, weight
        self.row = dict(conn.execute(select(table).where(table.c.id == rid)).mappings().one())
        ev = EventRow.__table__
        self.events = [
            dict(r)
            for r in conn.execute(
                select(ev.c.seq, ev.c.at, ev.c.type, ev.c.actor, ev.c.data)
                .where(ev.c.request_id == rid)
                .order_by(ev.c.seq)
            ).mappings()
        ]
        self.slack_ts: set[str] = set()
        for e in self.events:
            for key in ("ts", "thread_ts"):
                if isinstance(e["data"].get(key), str):
                    self.slack_ts.add(e["data"][key])

    def clone(self, i: int, offset: int, key, sha_of: dict) -> tuple[dict, list[dict]]:
        """Request ``i``: the template's history moved ``offset`` seconds later, with its
        own id, title, target and thread text, chained again from the genesis hash."""
        rid = str(uuid.uuid4())
        delta = timedelta(seconds=offset)
        target = TARGETS[i % len(TARGETS)]
        action = {**self.row["action"], "target": target}
        digest = sha_of.get(target)
        if digest is None:
            digest = sha_of[target] = sha256_hex(action)
        smap = {self.rid: rid, self.row["action_sha256"]: digest}
        for ts in self.slack_ts:
            sec, _, frac = ts.partition(".")
            smap[ts] = f"{int(sec) + offset}.{frac}"

        def shift_iso(s: str) -> str:
            m = _ISO.match(s)
            if not m:
                return s
            moved = datetime.fromisoformat(m.group(1)).replace(tzinfo=timezone.utc) + delta
            return moved.strftime("%Y-%m-%dT%H:%M:%S") + m.group(2)

        def tx(v, k=None):
            if isinstance(v, dict):
                return {kk: tx(vv, kk) for kk, vv in v.items()}
            if isinstance(v, list):
                return [tx(x) for x in v]
            if isinstance(v, str):
                if v in smap:
                    return smap[v]
                return shift_iso(v) if v[:2] == "20" else v
            if k in _SHIFT_INTS and isinstance(v, int) and not isinstance(v, bool):
                return v + offset
            return v

        service, region = target.rsplit("-", 1)
        title = f"Restart {service} in prod-{region} (#{i})"
        row = {}
        for col, v in self.row.items():
            if isinstance(v, datetime):
                row[col] = v + delta
            elif col in ("grant_token", "policy"):
                row[col] = v
            else:
                row[col] = tx(v, col)
        row.update(id=rid, title=title, action=action, action_sha256=digest)
        if row.get("grant_claims"):
            row["grant_token"] = jwt.encode(
                row["grant_claims"], key.private, algorithm="EdDSA", headers={"kid": key.kid}
            )
        events = []
        prev = chain.GENESIS
        said = 0
        for e in self.events:
            data = tx(e["data"])
            if e["type"] == "request.submitted":
                data["title"], data["action"] = title, action
            elif e["type"] in ("thread.reply", "thread.edited"):
                data["text"] = SAYINGS[(i * 7 + said) % len(SAYINGS)]
                said += 1
            at = shift_iso(e["at"])
            digest_e = chain.link(prev, chain.event_body(rid, e["seq"], at, e["type"], e["actor"], data))
            events.append(
                {
                    "request_id": rid,
                    "seq": e["seq"],
                    "at": at,
                    "type": e["type"],
                    "actor": e["actor"],
                    "data": data,
                    "prev_hash": prev,
                    "hash": digest_e,
                }
            )
            prev = digest_e
        row["event_count"], row["head_hash"] = len(events), prev
        return row, events


def seed_store(url: str, target_events: int, checkpoint_at: float = 0.95) -> dict:
    """Templates through the use-cases, then clones in bulk until ``target_events``; then a
    signed checkpoint as of the moment ``checkpoint_at`` of the way through the history."""
    clock = Clock()
    rt = runtime(url, clock)
    store, keys = rt.store, rt.context.keys
    started = time.perf_counter()
    weighted = make_templates(History(rt, clock))
    with store.engine.connect() as conn:
        templates = [Template(conn, rid, w) for rid, w in weighted]
        lrow = conn.execute(select(LedgerRow.seq, LedgerRow.hash).order_by(LedgerRow.seq.desc()).limit(1)).one()
        count = conn.execute(select(EventRow.id)).all()
    events_total, requests_total = len(count), len(templates)
    ledger_seq, ledger_prev = lrow.seq, lrow.hash
    cycle = [t for t in templates for _ in range(t.weight)]
    base_offset = int((clock() - T0).total_seconds()) + 3600
    sha_of: dict[str, str] = {}
    chunk = 2000
    i = 0
    tables = (RequestRow.__table__, EventRow.__table__, LedgerRow.__table__)
    while events_total < target_events:
        rows, events, ledger = [], [], []
        for _ in range(chunk):
            if events_total + len(events) >= target_events:
                break
            t = cycle[(i * 7) % len(cycle)]  # spread the lifecycles through the history
            offset = base_offset + i * SPACING
            row, evs = t.clone(i, offset, keys.active, sha_of)
            rows.append(row)
            events.extend((e, i) for e in evs)
            ledger_seq += 1
            at = chain.iso(row["created_at"])
            h = chain.link(ledger_prev, {"seq": ledger_seq, "request_id": row["id"], "at": at})
            ledger.append({"seq": ledger_seq, "request_id": row["id"], "at": at, "prev_hash": ledger_prev, "hash": h})
            ledger_prev = h
            i += 1
        # events in the order a live store writes them: by time, requests interleaved
        events.sort(key=lambda x: (x[0]["at"], x[1], x[0]["seq"]))
        with store.engine.begin() as conn:
            conn.execute(insert(tables[0]), rows)
            conn.execute(insert(tables[1]), [e for e, _ in events])
            conn.execute(insert(tables[2]), ledger)
        events_total += len(events)
        requests_total += len(rows)
        if i % 20000 < chunk:
            log(f"  seeded {requests_total:,} requests, {events_total:,} events")
    seed_seconds = time.perf_counter() - started
    if store.dialect == "postgresql":  # what autovacuum would have done by now on a live store
        with dbapi_connect(url) as dbc:
            dbc.autocommit = True
            dbc.execute("VACUUM ANALYZE")
    last_offset = base_offset + max(0, i - 1) * SPACING
    cut = T0 + timedelta(seconds=base_offset + (last_offset - base_offset) * checkpoint_at)
    cp = write_checkpoint(store, keys, cut + timedelta(seconds=30))
    assert cp is not None, "no checkpoint written"
    info = {
        "requests": requests_total,
        "events": events_total,
        "templates": [t.rid for t in templates],
        "events_per_request": round(events_total / requests_total, 2),
        "seed_seconds": round(seed_seconds, 1),
        "checkpoint": {"id": cp.id, "at": chain.iso(cp.at), "ledger_seq": cp.ledger_seq},
        "clone_sample": [r["id"] for r in rows[:3]],
    }
    store.dispose()
    return info


def reference_check(url: str, rids: list[str]) -> None:
    """A few seeded chains recomputed with the reference RFC 8785 implementation,
    independently of the project's canonical JSON and of verify."""
    import rfc8785

    with dbapi_connect(url) as dbc:
        cast = "CAST(data AS TEXT)" if url.startswith("sqlite") else "data::text"
        mark = "?" if url.startswith("sqlite") else "%s"
        for rid in rids:
            prev = chain.GENESIS
            for seq, at, type_, actor, data, p, h in dbc.execute(
                f"SELECT seq, at, type, actor, {cast}, prev_hash, hash FROM events WHERE request_id = {mark} "
                "ORDER BY seq",
                [rid],
            ).fetchall():
                body = rfc8785.dumps(chain.event_body(rid, seq, at, type_, actor, json.loads(data)))
                assert p == prev and hashlib.sha256(prev.encode() + body).hexdigest() == h, (rid, seq)
                prev = h


# ---------------------------------------------------------------------- (a) measuring


def baseline(url: str, ordered: bool) -> dict:
    """The floor: every event's verify columns read over the same driver, SHA-256 of each
    row's stored text. One process, no parsing, no chain logic."""
    pg = not url.startswith("sqlite")
    sql = (
        "SELECT request_id, seq, at, type, actor, "
        + ("data::text" if pg else "CAST(data AS TEXT)")
        + ", prev_hash, hash FROM events"
        + (" ORDER BY request_id, seq" if ordered else "")
    )
    sha = hashlib.sha256
    n = 0
    started = time.perf_counter()
    dbc = dbapi_connect(url)
    try:
        if pg:
            cur = dbc.cursor(name="bench_baseline")
            cur.itersize = 5000
        else:
            cur = dbc.cursor()
        cur.execute(sql)
        while True:
            batch = cur.fetchmany(5000)
            if not batch:
                break
            for rid, seq, at, type_, actor, data, prev, _digest in batch:
                sha(f"{prev}{actor}{at}{data}{rid}{seq}{type_}".encode()).hexdigest()
                n += 1
        cur.close()
    finally:
        dbc.close()
    seconds = time.perf_counter() - started
    return {"events": n, "seconds": round(seconds, 3), "events_per_s": round(n / seconds)}


QUIET = 0.10  # a run is "quiet" when other work used under 10 % of the machine meanwhile
EXTRA_RUNS = 3  # runs added (after waiting for quiet) when none of the planned ones was


def measure(label: str, run, repeat: int, pg: bool) -> dict:
    """``run()`` returns (seconds, events, extra); repeated ``repeat`` times, plus up to
    ``EXTRA_RUNS`` more while no run was quiet. The fastest counts (other work on a shared
    machine only ever slows a run down); every run's seconds and the CPU seconds other
    work (and the PostgreSQL server) used meanwhile are kept alongside."""
    runs: list[dict] = []
    cores = os.cpu_count() or 1
    while len(runs) < repeat or (not any(r["quiet"] for r in runs) and len(runs) < repeat + EXTRA_RUNS):
        if len(runs) >= repeat:
            settle()
        with Window(pg) as w:
            seconds, events, extra = run()
        quiet = w.others <= QUIET * cores * w.seconds + 0.3  # (/proc/stat counts in ticks)
        runs.append(
            {
                "seconds": round(seconds, 3),
                "events_per_s": round(events / seconds),
                "others_cpu_s": round(w.others, 2),
                "server_cpu_s": round(w.server, 2),
                "quiet": quiet,
                **extra,
            }
        )
        log(
            f"{label}: {seconds:.2f} s, {events / seconds:,.0f} events/s (other work {w.others:.1f} CPU s"
            + (f", server {w.server:.1f} CPU s" if pg else "")
            + ")"
        )
    top = dict(min(runs, key=lambda r: r["seconds"]))
    for key in ("seconds", "others_cpu_s", "server_cpu_s", "quiet"):
        top["runs" if key == "seconds" else key] = [r[key] for r in runs]
    return top


def bench_verify(base: str, workdir: Path, n: int, repeat: int, keep: bool) -> dict:
    out: dict = {"database": "sqlite" if base == "sqlite" else "postgresql"}
    pg = base != "sqlite"
    with database(base, workdir, "verify", keep) as url:
        log(f"seeding {n:,} events ({out['database']})")
        out["store"] = seed = seed_store(url, n)
        log(f"seeded in {seed['seed_seconds']} s: {seed['requests']:,} requests, {seed['events']:,} events")
        reference_check(url, seed["templates"] + seed["clone_sample"])
        if base == "sqlite":
            out["store"]["file_mib"] = round(Path(make_url(url).database).stat().st_size / 2**20, 1)
        out["busy_before"] = settle()
        out["load_before"] = loadavg()

        for key, ordered in (("baseline_table_order", False), ("baseline_chain_order", True)):

            def run_baseline(ordered=ordered):
                started = time.perf_counter()
                b = baseline(url, ordered=ordered)
                return time.perf_counter() - started, b["events"], {}

            out[key] = measure(key.replace("_", " "), run_baseline, repeat, pg)

        def run_cli_verify():
            wall, proc = run_cli(["evidence", "verify"], url, workdir)
            assert proc.returncode == 0, proc.stderr
            m = re.search(r"OK: ([\d,]+) request\(s\), ([\d,]+) event\(s\)", proc.stdout)
            assert m, proc.stdout
            checked = int(m.group(2).replace(",", ""))
            assert checked == seed["events"], (checked, seed["events"])
            return wall, checked, {"stdout": proc.stdout.strip()}

        out["cli"] = measure("CLI verify", run_cli_verify, repeat, pg)
        out["cli"]["fixed_seconds"] = cli_fixed_cost(url, workdir)

        from signoff.store.db import Store

        store = Store(url)
        keys = load_keyring(store, None)
        for label, workers in (("in_process", None), ("in_process_one_worker", 1)):

            def run_in_process(workers=workers):
                result = verify_store(store, keys, workers=workers)
                assert result.ok, result.failures[:3]
                assert result.checked_events == seed["events"]
                assert result.checkpoint and result.checkpoint["id"] == seed["checkpoint"]["id"]
                return result.seconds, result.checked_events, {}

            out[label] = measure(f"verify_store (workers={workers or 'default'})", run_in_process, repeat, pg)

        # alter one thread message in the middle of the store: verify must name it
        ev = EventRow.__table__
        with store.engine.connect() as conn:
            rid = conn.execute(
                select(RequestRow.id).order_by(RequestRow.id).offset(seed["requests"] // 2).limit(1)
            ).scalar_one()
            victim = conn.execute(
                select(ev.c.id, ev.c.seq, ev.c.data)
                .where(ev.c.request_id == rid, ev.c.type == "thread.reply")
                .order_by(ev.c.seq)
                .limit(1)
            ).one()
        with store.engine.begin() as conn:
            conn.execute(
                update(ev).where(ev.c.id == victim.id).values(data={**victim.data, "text": "nothing to see here"})
            )
        wall_t, proc = run_cli(["evidence", "verify"], url, workdir)
        expected = f"request {rid} event seq {victim.seq}: hash mismatch"
        assert proc.returncode == 1 and expected in proc.stderr, (proc.returncode, proc.stdout, proc.stderr)
        out["tampered"] = {"seconds": round(wall_t, 3), "reported": proc.stderr.strip().splitlines()[-1]}
        log(f"altered store: {out['tampered']['reported']}")
        store.dispose()
        out["load_after"] = loadavg()
    for key in ("cli", "in_process", "in_process_one_worker"):
        for order in ("table_order", "chain_order"):
            out[key][f"ratio_{order}"] = round(out[key]["events_per_s"] / out[f"baseline_{order}"]["events_per_s"], 3)
    return out


# ---------------------------------------------------------------------- (b) export


def median_time(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def bench_export(base: str, workdir: Path, messages: int, repeat: int, keep: bool) -> dict:
    out: dict = {"database": "sqlite" if base == "sqlite" else "postgresql", "messages": messages}
    with database(base, workdir, "export", keep) as url:
        out["load_before"] = loadavg()
        clock = Clock()
        rt = runtime(url, clock)
        h = History(rt, clock)
        small = h.submit(title="Restart auth in prod-eu")
        root = h.post(small)
        clock.advance(seconds=30)
        h.reply(root, "U0OWNER", SAYINGS[0], 0)
        h.reply(root, "U0SECOND", SAYINGS[5], 1)
        h.decide(small, "U0OWNER", "approve", "approved")
        h.execute(small, "succeeded")

        clock.advance(minutes=5)
        big = h.submit()
        root = h.post(big)
        users = ["U0OWNER", "U0SECOND", "U0THIRD", "U0PLAT", "U0SEC", "U0DEV1", "U0DEV2", "U0DEV3"]
        sent: list[tuple[str, str, str]] = []
        started = time.perf_counter()
        pace = min(1.0, 1500 / max(1, messages))  # the whole thread well inside the 30-minute deadline
        for k in range(messages):
            clock.advance(seconds=pace)
            user, text = users[k % len(users)], f"{SAYINGS[k % len(SAYINGS)]} [{k + 1}]"
            sent.append((h.reply(root, user, text, k), user, text))
        capture = time.perf_counter() - started
        for k in range(0, len(sent), max(1, len(sent) // 10))[:10]:  # a few edits and deletions
            ts, user, text = sent[k]
            h.edit(root, user, ts, text, text + " (edited)")
        for k in range(len(sent) // 20, len(sent), max(1, len(sent) // 5))[:5]:
            ts, user, text = sent[k]
            h.delete(root, user, ts, text)
        clock.advance(seconds=30)
        h.decide(big, "U0OWNER", "approve", "approved")
        h.execute(big, "succeeded")
        out["capture"] = {"seconds": round(capture, 3), "ms_per_message": round(capture * 1000 / messages, 2)}
        log(f"thread capture: {messages} replies in {capture:.2f} s")

        store, keys = rt.store, rt.context.keys
        now = clock()
        out["busy_before"] = settle()
        for name, rid in (("thread_request", big), ("ordinary_request", small)):
            res: dict = {"id": rid}
            t_build, bundle = median_time(lambda rid=rid: build_bundle(store, keys, rid, now), repeat)
            assert bundle["integrity"]["ok"], bundle["integrity"]
            res["events"] = bundle["chain"]["event_count"]
            res["thread_messages"] = len(bundle["thread"])
            t_json, text = median_time(lambda bundle=bundle: json.dumps(bundle, indent=2, ensure_ascii=False), repeat)
            t_html, _page = median_time(lambda bundle=bundle: render_html(bundle), repeat)
            t_vb, verdict = median_time(lambda text=text: verify_bundle(json.loads(text), keys.jwks()), repeat)
            assert verdict[0], verdict
            res["in_process"] = {
                "build_bundle_s": round(t_build, 4),
                "json_dumps_s": round(t_json, 4),
                "render_html_s": round(t_html, 4),
                "verify_bundle_s": round(t_vb, 4),
            }
            files = {}
            for fmt in ("json", "html"):
                path = workdir / f"{name}.{fmt}"

                def export_cli(fmt=fmt, path=path, rid=rid):
                    wall, proc = run_cli(["evidence", "export", rid, "--format", fmt, "-o", str(path)], url, workdir)
                    assert proc.returncode == 0, proc.stderr
                    return wall

                files[fmt] = {
                    "cli_seconds": round(statistics.median(export_cli() for _ in range(repeat)), 3),
                    "bytes": path.stat().st_size,
                }

            def verify_bundle_cli(name=name):
                wall, proc = run_cli(["evidence", "verify-bundle", str(workdir / f"{name}.json")], url, workdir)
                assert proc.returncode == 0 and proc.stdout.startswith("OK"), (proc.stdout, proc.stderr)
                return wall

            files["verify_bundle_cli_seconds"] = round(statistics.median(verify_bundle_cli() for _ in range(repeat)), 3)
            res["cli"] = files
            out[name] = res
            log(f"{name}: {res}")
        out["cli_startup_seconds"] = cli_fixed_cost(url, workdir)
        store.dispose()
        out["load_after"] = loadavg()
    return out


# ---------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--db",
        default="sqlite",
        help="sqlite (default) or a PostgreSQL URL (a fresh database is "
        "created next to it for each part and dropped afterwards)",
    )
    p.add_argument("--parts", default="verify,export", help="comma-separated: verify, export")
    p.add_argument("--events", type=int, default=1_000_000, help="events in the verify store (default 1,000,000)")
    p.add_argument("--messages", type=int, default=1000, help="thread messages in the exported request")
    p.add_argument("--verify-repeat", type=int, default=2, help="runs of each verify measurement; the fastest counts")
    p.add_argument("--repeat", type=int, default=3, help="export timings: the median of this many runs")
    p.add_argument("--json", help="also write every figure to this file")
    p.add_argument("--keep-db", action="store_true", help="keep the PostgreSQL databases (for a look afterwards)")
    args = p.parse_args()
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = set(parts) - {"verify", "export"}
    if unknown:
        p.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    base = args.db if args.db == "sqlite" else args.db.replace("postgresql://", "postgresql+psycopg://", 1)
    results: dict = {"machine": machine(), "db": "sqlite" if base == "sqlite" else "postgresql", "commit": git_commit()}
    with tempfile.TemporaryDirectory(prefix="signoff-evidence-bench-") as tmp:
        workdir = Path(tmp)
        if "verify" in parts:
            results["verify"] = bench_verify(base, workdir, args.events, args.verify_repeat, args.keep_db)
        if "export" in parts:
            results["export"] = bench_export(base, workdir, args.messages, args.repeat, args.keep_db)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def server(x: dict) -> str:
    return f"; PostgreSQL server {x['server_cpu_s']} CPU s" if any(x["server_cpu_s"]) else ""


def git_commit() -> str | None:
    """The commit measured (with "+changes" when src/ differs from it)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def report(r: dict) -> None:
    m = r["machine"]
    print(
        f"machine: nproc={m['nproc']}, {m['cpu']}, {m['ram_gib']} GiB RAM, Python {m['python']}; commit {r['commit']}"
    )
    v = r.get("verify")
    if v:
        s = v["store"]
        print(
            f"\n(a) verify, {v['database']}: {s['requests']:,} requests, {s['events']:,} events "
            f"({s['events_per_request']}/request), seeded in {s['seed_seconds']} s; "
            f"busy {v['busy_before']:.0%} before; load {v['load_before']} -> {v['load_after']}"
        )
        for key, label in (
            ("baseline_table_order", "baseline: read + SHA-256, table order"),
            ("baseline_chain_order", "baseline: read + SHA-256, (request_id, seq) order"),
        ):
            b = v[key]
            print(
                f"  {label:<52} {b['seconds']:>8.2f} s {b['events_per_s']:>11,}/s   "
                f"(other work: {b['others_cpu_s']} CPU s{server(b)})"
            )
        for key, label in (
            ("cli", "signoff evidence verify (CLI, wall clock)"),
            ("in_process", "verify_store in-process (default workers)"),
            ("in_process_one_worker", "verify_store in-process, one process"),
        ):
            x = v[key]
            print(
                f"  {label:<52} {x['seconds']:>8.2f} s {x['events_per_s']:>11,}/s   "
                f"x{x['ratio_table_order']:.2f} / x{x['ratio_chain_order']:.2f} of the baselines "
                f"(runs {x['runs']} s; other work {x['others_cpu_s']} CPU s{server(x)}"
                f"{'' if any(x['quiet']) else '; NO QUIET RUN'})"
            )
        print(
            f"  CLI fixed cost (export of a missing id): {v['cli']['fixed_seconds']:.2f} s; altered store: "
            f"{v['tampered']['reported']}"
        )
    e = r.get("export")
    if e:
        print(
            f"\n(b) export, {e['database']}: capture {e['messages']} replies {e['capture']['ms_per_message']} "
            f"ms each; CLI fixed cost {e['cli_startup_seconds']:.2f} s; load {e['load_before']} -> {e['load_after']}"
        )
        for name in ("thread_request", "ordinary_request"):
            x = e[name]
            ip, c = x["in_process"], x["cli"]
            print(f"  {name} ({x['events']} events, {x['thread_messages']} thread messages):")
            print(
                f"    CLI export json {c['json']['cli_seconds']:.2f} s ({c['json']['bytes']:,} B), "
                f"html {c['html']['cli_seconds']:.2f} s ({c['html']['bytes']:,} B), "
                f"verify-bundle {c['verify_bundle_cli_seconds']:.2f} s"
            )
            print(
                f"    in-process build_bundle {ip['build_bundle_s'] * 1000:.1f} ms, json.dumps "
                f"{ip['json_dumps_s'] * 1000:.1f} ms, render_html {ip['render_html_s'] * 1000:.1f} ms, "
                f"verify_bundle {ip['verify_bundle_s'] * 1000:.1f} ms"
            )


if __name__ == "__main__":
    sys.exit(main())
