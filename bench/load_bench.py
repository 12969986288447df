"""Submission load and click latency, in one run (see bench/README.md).

Measures, on this machine, everything on 127.0.0.1:

(a) signed ``POST /v1/actions`` accepted per second at concurrency 32 against
    ``signoff serve`` on SQLite, and against a bare Starlette endpoint on the same server
    stack that only checks the same HMAC (bench/bare_hmac_app.py); their ratio and p99;
(b) the time until every accepted request is posted to a local fake Slack (counting its
    ``chat.postMessage`` calls), and each request's submit → post latency;
(c) Approve click → HTTP ack latency while the submission load runs (open loop, ``--click-rate``);
(d) Approve clicks replayed by ``--replay-connections`` closed-loop connections (16) for
    ``--replay-duration`` seconds after the load, timing each ack; then every click answered
    must be recorded (a decision or a ``click.repeated`` event).

``--db URL`` runs ``serve`` on a fresh PostgreSQL database created next to URL (dropped
afterwards) instead of SQLite; ``--auto-approve`` adds a rule with ``auto_approve`` (a
budget no run exhausts) so every submission is approved by policy (no clicks then).
The Slack stand-in answers every call after ``--slack-latency`` seconds (0.1: about what
Slack's Web API takes), so deliveries must overlap to keep up. By default it enforces no
rate limits and ``serve`` runs with ``SIGNOFF_SLACK_PACING=false``: at 1,000 requests a
second to one channel no implementation can post each within a second under Slack's limits
(about one message a second per channel), and the figure is to be the server's, not Slack's
pacing. ``--slack-limits`` enforces Slack's limits in the stand-in (429 with Retry-After, as
``SlackLimits``) and runs ``serve`` with its pacing and digests, as in production.
bench/run_all.py runs every row.

The load generator is ``wrk`` (Debian package ``wrk``) with bench/submit.lua and bodies
signed just before each phase; clicks come from bench/click_client.py. Both are separate
processes, and so are both servers; the fake Slack runs in this process.

    python bench/load_bench.py                # ~1 minute; prints a report
    python bench/load_bench.py --json out.json

Everything is bounded in time; the run stops by itself.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from common import database, free_port, machine_busy_seconds, pct
from common import machine as common_machine

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST = "127.0.0.1"
AGENT = "bench-bot"
CHANNEL = "C0BENCH"
APPROVER = "U0OWNER"

CONFIG = f"""\
agents:
  - id: {AGENT}
    sponsor: U0SPONSOR
    secret_env: BENCH_AGENT_SECRET
workflows:
  - id: bench
    description: load benchmark
    owner: {APPROVER}
    platform_owner: U0PLAT
    security_owner: U0SEC
    channel: {CHANNEL}
    approvers: [{APPROVER}]
    required_approvals: 1
    agents: [{AGENT}]
    timeout: 24h
"""

AUTO_RULES = """    rules:
      - name: auto
        match: {action_type: service.restart}
        auto_approve: {limit: 100000000 per 1h}
"""


# ---------------------------------------------------------------------- helpers
def sign(secret: str, ts: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), b"v1:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()


def submission(i: int) -> dict:
    return {
        "workflow": "bench",
        "title": f"Restart checkout-api pod {i} in prod-eu",
        "action": {
            "type": "service.restart",
            "target": f"checkout-api-{i % 50}",
            "environment": "production",
            "parameters": {"graceful": True, "drain_seconds": 30, "replicas": [1, 2, 3]},
        },
        "justification": "p99 latency doubled after the 14:02 deploy; a restart clears the stuck pool",
        "prompt": "Checkout is slow since the last deploy. Find out why and fix it. " * 3,
        "risk": "medium",
        "rollback": {"description": "no rollback needed: a restart is idempotent"},
    }


def write_signed_bodies(path: Path, secret: str, count: int) -> None:
    """One pre-signed request a line for submit.lua; timestamps are now (valid 300 s)."""
    ts = str(int(time.time()))
    with path.open("w") as f:
        for i in range(count):
            body = json.dumps(submission(i), separators=(",", ":")).encode()
            f.write(f"{AGENT}\t{ts}\t{sign(secret, ts, body)}\t{body.decode()}\n")


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no answer from {url} within {timeout} s")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) and its live descendants
    (the workers of `serve --workers`) so far."""
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                parent_of[int(entry.name)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        more = {p for p, pp in parent_of.items() if pp in tree and p not in tree}
        tree |= more
        grew = bool(more)
    total = 0
    for p in tree:
        fields = _stat(p)
        if fields:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def busy_fraction(seconds: float = 1.0) -> float:
    """How busy the machine is right now, 0..1 over all cores."""
    b0, t0 = machine_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    return (machine_busy_seconds() - b0) / ((time.monotonic() - t0) * (os.cpu_count() or 1))


def wait_quiet(limit: float, max_wait: float) -> float:
    """Wait (bounded) until other work on the machine settles; returns the busy fraction seen."""
    end = time.monotonic() + max_wait
    busy = busy_fraction()
    while busy > limit and time.monotonic() < end:
        print(f"machine is {busy:.0%} busy with other work; waiting", file=sys.stderr, flush=True)
        time.sleep(4)
        busy = busy_fraction()
    return round(busy, 3)


class CpuWindow:
    """CPU seconds used during a window: the whole machine, one server, our children, us."""

    def __init__(self, server_pid: int):
        self.pid = server_pid

    def __enter__(self):
        import resource

        self.m0, self.s0 = machine_busy_seconds(), cpu_seconds(self.pid)
        self.c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.u0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        import resource

        c1, u1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        self.wall = time.monotonic() - self.t0
        self.machine = machine_busy_seconds() - self.m0
        self.server = cpu_seconds(self.pid) - self.s0
        self.children = (c1.ru_utime + c1.ru_stime) - (self.c0.ru_utime + self.c0.ru_stime)
        self.me = (u1.ru_utime + u1.ru_stime) - (self.u0.ru_utime + self.u0.ru_stime)

    def summary(self) -> dict:
        other = self.machine - self.server - self.children - self.me
        return {
            "wall_s": round(self.wall, 2),
            "machine_busy_s": round(self.machine, 2),
            "server_s": round(self.server, 2),
            "load_generator_s": round(self.children, 2),
            "bench_process_s": round(self.me, 2),
            "other_s": round(max(other, 0), 2),
        }


def run_wrk(url: str, bodies: Path, *, duration: float, connections: int, threads: int) -> dict:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "submit.lua"),
        url,
        "--",
        str(bodies),
        "/v1/actions",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[len("WRK_RESULT ") :])
    secs = r["duration_us"] / 1e6
    # new requests (201) only: a pre-signed body sent again is a cheaper replay (200)
    r["accepted_per_s"] = round(r["created"] / secs, 1)
    r["replayed"] = r["ok"] - r["created"]
    r["p99_ms"] = round(r["latency_us"]["p99"] / 1000, 1)
    r["p50_ms"] = round(r["latency_us"]["p50"] / 1000, 1)
    return r


def machine() -> dict:
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return {**common_machine(), "wrk": wrk_version.strip()}


def git_describe() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_fake_slack(args=None):
    """The Slack Web API stand-in the tests and ``signoff demo`` use, on loopback."""
    try:
        from signoff.demo.slack_standin import SlackLimits, SlackStandIn
    except ImportError:  # an older tree: signoff.standin, or before it the tests' copy
        try:
            from signoff.standin import SlackLimits, SlackStandIn
        except ImportError:
            sys.path.insert(0, str(REPO / "tests"))
            from fakes.slack_api import FakeSlack as SlackStandIn
            from fakes.slack_api import SlackLimits
    slack = SlackStandIn()
    slack.delay = getattr(args, "slack_latency", 0.0)
    if getattr(args, "slack_limits", False):
        slack.limits = SlackLimits()
    slack.start()
    return slack


def posted_count(db: str) -> int:
    """Requests whose message Slack accepted (on its own or in a digest), as recorded."""
    return db_query(db, "SELECT count(*) FROM slack_messages WHERE role = 'request' AND posted_at IS NOT NULL")[0][0]


def clicks_recorded(db: str) -> int:
    """Approve clicks by the bench's approver recorded as evidence (decided or repeated)."""
    return db_query(
        db,
        "SELECT count(*) FROM events WHERE actor = :a AND type IN ('decision.recorded', 'click.repeated')",
        {"a": APPROVER},
    )[0][0]


def posted_request_ids(slack) -> dict[str, str]:
    """request id -> ts of every successful top-level post to the bench channel."""
    out = {}
    for c in slack.calls_to("chat.postMessage"):
        if c.params.get("thread_ts") or c.params.get("channel") != CHANNEL:
            continue
        resp = getattr(c, "response", None) or {}
        if getattr(c, "status", 200) != 200 or not resp.get("ok", True):
            continue
        meta = c.params.get("metadata") or {}
        rid = (meta.get("event_payload") or {}).get("request_id")
        if rid:
            out[rid] = resp.get("ts") or ""
    return out


_ENGINES: dict = {}


def db_query(db: str, sql: str, args: dict | None = None) -> list[tuple]:
    """Read-only queries of the server's database (``db``: a SQLAlchemy URL)."""
    if db.startswith("sqlite:///"):
        conn = sqlite3.connect(f"file:{db[len('sqlite:///') :]}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, args or {}).fetchall()
        finally:
            conn.close()
    from sqlalchemy import create_engine, text

    engine = _ENGINES.get(db) or _ENGINES.setdefault(db, create_engine(db, pool_size=1))
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), args or {})]


def parse_ts(value) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def db_time(db: str, t: datetime):
    """``t`` as the database stores times (naive UTC; SQLite as text)."""
    naive = t.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(sep=" ") if db.startswith("sqlite:") else naive


# ---------------------------------------------------------------------- phases
def bench_bare(args, tmp: Path, env: dict, secret: str) -> dict:
    port = free_port()
    log = (tmp / "bare.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "bare_hmac_app.py"), "--port", str(port), "--workers", str(args.workers)],
        env=env,
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://{HOST}:{port}/healthz", 30, proc)
        bodies = tmp / "bare.tsv"
        write_signed_bodies(bodies, secret, args.bodies)
        url = f"http://{HOST}:{port}"
        run_wrk(url, bodies, duration=args.warmup, connections=args.concurrency, threads=args.wrk_threads)
        r = {"busy_before": wait_quiet(args.quiet, args.quiet_wait)}
        with CpuWindow(proc.pid) as cpu:
            r.update(
                run_wrk(url, bodies, duration=args.duration, connections=args.concurrency, threads=args.wrk_threads)
            )
        r["cpu"] = cpu.summary()
        return r
    finally:
        stop(proc)
        log.close()


def bench_signoff(args, tmp: Path, env: dict, secret: str, slack_secret: str, slack) -> dict:
    with database(args.db, tmp, "load") as db:
        return _bench_signoff(args, tmp, env, secret, slack_secret, slack, db)


def _bench_signoff(args, tmp: Path, env: dict, secret: str, slack_secret: str, slack, db: str) -> dict:
    port = free_port()
    base = f"http://{HOST}:{port}"
    env = {
        **env,
        "SLACK_BOT_TOKEN": "xoxb-bench",
        "SLACK_SIGNING_SECRET": slack_secret,
        "SIGNOFF_SLACK_API_URL": slack.url,
        "SIGNOFF_DATABASE_URL": db,
        "SIGNOFF_SLACK_PACING": "true" if args.slack_limits else "false",
        "SIGNOFF_CONFIG": str(tmp / "signoff.yaml"),
        "SIGNOFF_PUBLIC_URL": base,
    }
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "signoff.cli",
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(args.workers),
        ],
        env=env,
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    result: dict = {}
    try:
        wait_http(f"{base}/healthz", 60, proc)

        # Requests for the clicks, made and posted before the load starts.
        n_clicks = 0 if args.auto_approve else int(args.click_rate * args.click_duration)
        ids = []
        with httpx.Client(base_url=base, timeout=10) as http:
            for i in range(n_clicks):
                raw = json.dumps(submission(100_000 + i)).encode()
                ts = str(int(time.time()))
                r = http.post(
                    "/v1/actions",
                    content=raw,
                    headers={
                        "X-Signoff-Agent": AGENT,
                        "X-Signoff-Timestamp": ts,
                        "X-Signoff-Signature": sign(secret, ts, raw),
                        "Content-Type": "application/json",
                    },
                )
                if r.status_code != 201:
                    raise RuntimeError(f"setup submission answered {r.status_code}: {r.text[:300]}")
                ids.append(r.json()["id"])
        end = time.monotonic() + 60
        while True:  # where Slack put each (its own message, or a digest with Slack's limits on)
            posted = {
                rid: (ch, ts)
                for rid, ch, ts in db_query(
                    db, "SELECT request_id, channel, ts FROM slack_messages WHERE role = 'request' AND ts IS NOT NULL"
                )
            }
            if all(i in posted for i in ids):
                break
            if time.monotonic() > end:
                raise RuntimeError("the click targets were not posted within 60 s")
            time.sleep(0.1)
        targets = [{"request_id": i, "channel": posted[i][0], "ts": posted[i][1]} for i in ids]
        (tmp / "targets.json").write_text(json.dumps(targets))

        bodies = tmp / "signoff.tsv"
        write_signed_bodies(bodies, secret, args.bodies)
        warm = run_wrk(base, bodies, duration=args.warmup, connections=args.concurrency, threads=args.wrk_threads)
        result["warmup"] = {k: warm[k] for k in ("ok", "not_ok", "statuses", "accepted_per_s")}

        # Let the dispatcher catch up with the warm-up so the measured run starts level.
        count0 = db_query(db, "SELECT count(*) FROM requests")[0][0]
        end = time.monotonic() + args.drain_timeout
        while posted_count(db) < count0 and time.monotonic() < end:
            time.sleep(0.2)

        busy_before = wait_quiet(args.quiet, args.quiet_wait)
        write_signed_bodies(bodies, secret, args.bodies)
        click_out = tmp / "clicks.json"

        def clicks(*mode, out: Path) -> list[str]:
            """click_client.py's command line: Approve clicks on the targets, as ``mode`` says."""
            return [
                sys.executable,
                str(HERE / "click_client.py"),
                "--url",
                f"{base}/slack/events",
                "--secret",
                slack_secret,
                "--targets",
                str(tmp / "targets.json"),
                "--user",
                APPROVER,
                *map(str, mode),
                "--out",
                str(out),
            ]

        clicker = (
            None
            if not n_clicks
            else subprocess.Popen(
                clicks("--rate", args.click_rate, "--duration", args.click_duration, "--delay", 1.0, out=click_out),
                cwd=tmp,
                env=env,
            )
        )
        time.sleep(0.5)  # the click client's imports; its first click is 1 s after it is ready
        posted_before = posted_count(db)
        t_start = datetime.now(UTC)
        profiler = None
        if args.profile:  # sample `serve` during the measured run (py-spy, collapsed stacks)
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            gil = ["--gil"] if os.environ.get("BENCH_PROFILE_GIL") else []
            profiler = subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "-p",
                    str(proc.pid),
                    "-d",
                    str(int(args.duration)),
                    "-r",
                    "250",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "-t",
                    "--subprocesses",
                    *gil,
                    "-o",
                    args.profile,
                ],
                stdout=subprocess.DEVNULL,
            )
        with CpuWindow(proc.pid) as cpu:
            r = run_wrk(base, bodies, duration=args.duration, connections=args.concurrency, threads=args.wrk_threads)
        if profiler is not None:
            profiler.wait(timeout=60)
        t_end_wall = time.time()
        t_end = datetime.now(UTC)
        r["busy_before"] = busy_before
        r["cpu"] = cpu.summary()
        posted_during = posted_count(db) - posted_before
        r["posted_during_load_per_s"] = round(posted_during / (r["duration_us"] / 1e6), 1)
        result["submit"] = r
        if clicker is not None:
            try:
                clicker.wait(timeout=args.click_duration + 60)
            except subprocess.TimeoutExpired:
                clicker.kill()
        result["clicks"] = json.loads(click_out.read_text()) if click_out.exists() else {"error": "no clicks"}

        # (b) until every accepted request is posted (requests wrk gave up waiting for at
        # the end of its run may still be committed just after: count again each time)
        end = time.monotonic() + args.drain_timeout
        while True:
            total = db_query(db, "SELECT count(*) FROM requests")[0][0]
            posted = posted_count(db)
            if posted >= total or time.monotonic() > end:
                break
            time.sleep(0.05)
        drained = posted >= total
        drain_s = time.time() - t_end_wall
        rows = db_query(
            db,
            """
            SELECT r.created_at, m.posted_at FROM requests r JOIN slack_messages m ON m.request_id = r.id
            WHERE m.role = 'request' AND m.posted_at IS NOT NULL AND r.created_at >= :t0 AND r.created_at <= :t1""",
            {"t0": db_time(db, t_start), "t1": db_time(db, t_end)},
        )
        lags = [(parse_ts(p) - parse_ts(c)).total_seconds() for c, p in rows]
        result["posting"] = {
            "requests_total": total,
            "posted": posted,
            "all_posted": drained,
            "seconds_after_load_end": round(drain_s, 2),
            "submit_to_post_s": {
                "requests": len(lags),
                "p50": _r(pct(lags, 50)),
                "p99": _r(pct(lags, 99)),
                "max": _r(max(lags) if lags else None),
            },
        }
        # (d) clicks replayed over closed-loop connections, after the load
        if ids and args.replay_connections:
            before = clicks_recorded(db)
            wait_quiet(args.quiet, min(args.quiet_wait, 30))
            replay_out = tmp / "replay.json"
            with CpuWindow(proc.pid) as cpu:
                subprocess.run(
                    clicks(
                        "--connections",
                        args.replay_connections,
                        "--duration",
                        args.replay_duration,
                        "--delay",
                        0.5,
                        out=replay_out,
                    ),
                    cwd=tmp,
                    env=env,
                    timeout=args.replay_duration + 120,
                )
            replayed = json.loads(replay_out.read_text()) if replay_out.exists() else {"error": "no clicks"}
            replayed["cpu"] = cpu.summary()
            answered = replayed.get("statuses", {}).get("200", 0)
            t0 = time.monotonic()
            end = t0 + args.drain_timeout
            while clicks_recorded(db) - before < answered and time.monotonic() < end:
                time.sleep(0.1)
            replayed["recorded"] = clicks_recorded(db) - before
            replayed["recorded_within_s"] = round(time.monotonic() - t0, 2)
            result["replay"] = replayed
        # the clicks' decisions (recorded after the ack, by then settled)
        if ids:
            decided = db_query(db, "SELECT count(*) FROM decisions WHERE by = :by", {"by": APPROVER})[0][0]
            approved = db_query(
                db,
                "SELECT count(*) FROM requests WHERE status IN ('approved', 'executing') "
                "AND id IN (" + ",".join(f":i{n}" for n in range(len(ids))) + ")",
                {f"i{n}": i for n, i in enumerate(ids)},
            )[0][0]
            result["clicks"]["decisions_recorded"] = decided
            result["clicks"]["requests_approved"] = approved
        result["statuses"] = dict(db_query(db, "SELECT status, count(*) FROM requests GROUP BY status"))
        return result
    finally:
        stop(proc)
        log.close()


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def report(res: dict) -> str:
    m, bare, s = res["machine"], res["bare"], res["signoff"]
    sub, clicks, posting = s["submit"], s["clicks"], s["posting"]
    rp = s.get("replay") or {}
    ratio = sub["accepted_per_s"] / bare["accepted_per_s"] if bare["accepted_per_s"] else 0
    lines = [
        (
            f"commit {res.get('commit')}; machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM, "
            f"Python {m['python']}, {m['wrk']}"
        ),
        (
            f"concurrency {res['params']['concurrency']}, {res['params']['duration']} s measured after "
            f"{res['params']['warmup']} s warm-up; Slack stand-in answers in {res['params']['slack_latency']} s, "
            f"{'with' if res['params']['slack_limits'] else 'without'} Slack's rate limits"
        ),
        "",
        "| figure | result | target |",
        "|---|---|---|",
        f"| bare HMAC endpoint, accepted/s | {bare['accepted_per_s']:,.0f} (p99 {bare['p99_ms']} ms) | — |",
        (
            f"| signoff serve ({'SQLite' if res['params']['db'] == 'sqlite' else 'PostgreSQL'}, "
            f"{res['params']['workers']} process(es){', auto-approved' if res['params']['auto_approve'] else ''}), "
            f"accepted/s | {sub['accepted_per_s']:,.0f} | ≥ 1,000 |"
        ),
        f"| ratio signoff / bare | {ratio:.3f} | ≥ 0.10 |",
        f"| submit latency p50 / p99 | {sub['p50_ms']} / {sub['p99_ms']} ms | p99 ≤ 100 ms |",
        (
            f"| non-2xx answers / socket errors / replays answered 200 | {sub['not_ok']} {sub['statuses'] or ''} / "
            f"{sum(sub['errors'].values())} / {sub.get('replayed', 0)} | 0 |"
        ),
        f"| posted to fake Slack during the load | {sub['posted_during_load_per_s']:,.0f}/s | — |",
        (
            f"| every accepted request posted, after load end | {posting['seconds_after_load_end']} s "
            f"({posting['posted']}/{posting['requests_total']}) | — |"
        ),
        (
            f"| submit → post, p50 / p99 / max (requests of the measured run) | "
            f"{posting['submit_to_post_s']['p50']} / {posting['submit_to_post_s']['p99']} / "
            f"{posting['submit_to_post_s']['max']} s | — |"
        ),
        *(
            [
                (
                    f"| Approve click → ack, p50 / p99 / max ({clicks.get('answered')} clicks at "
                    f"{clicks.get('rate_per_s')}/s) | {clicks['latency_ms']['p50']} / {clicks['latency_ms']['p99']} / "
                    f"{clicks['latency_ms']['max']} ms | p99 ≤ 100 ms |"
                ),
                (
                    f"| clicks answered 200 / decisions recorded | {clicks['statuses'].get('200', 0)} / "
                    f"{clicks.get('decisions_recorded')} | all |"
                ),
            ]
            if "latency_ms" in clicks
            else []
        ),
        *(
            [
                (
                    f"| Approve click → ack, {rp['connections']} connections replaying clicks, p50 / p99 / max "
                    f"({rp['answered']} clicks, {rp['rate_per_s']}/s) | {rp['latency_ms']['p50']} / "
                    f"{rp['latency_ms']['p99']} / {rp['latency_ms']['max']} ms | p99 ≤ 100 ms |"
                ),
                (
                    f"| replayed clicks answered 200 / recorded as evidence | {rp['statuses'].get('200', 0)} / "
                    f"{rp['recorded']} (within {rp['recorded_within_s']} s) | all |"
                ),
            ]
            if "latency_ms" in rp
            else []
        ),
        f"| requests by status at the end | {s.get('statuses')} | — |",
        (
            f"| CPU seconds in the measured run, bare: server / wrk / other processes | "
            f"{bare['cpu']['server_s']} / {bare['cpu']['load_generator_s']} / {bare['cpu']['other_s']} "
            f"of {bare['cpu']['wall_s']} s wall | — |"
        ),
        (
            f"| CPU seconds in the measured run, signoff: server / wrk / fake Slack / other (incl. clicks) | "
            f"{sub['cpu']['server_s']} / {sub['cpu']['load_generator_s']} / {sub['cpu']['bench_process_s']} / "
            f"{sub['cpu']['other_s']} of {sub['cpu']['wall_s']} s wall | — |"
        ),
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes for both servers (`signoff serve --workers`, uvicorn workers for the bare one)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per server")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument(
        "--bodies",
        type=int,
        default=40000,
        help="distinct pre-signed bodies (more than a run sends: each answer is then a new request)",
    )
    p.add_argument("--click-rate", type=float, default=20.0, help="Approve clicks per second during the load")
    p.add_argument("--click-duration", type=float, default=8.0)
    p.add_argument(
        "--replay-connections",
        type=int,
        default=16,
        help="closed-loop connections replaying Approve clicks after the load (0: none)",
    )
    p.add_argument("--replay-duration", type=float, default=5.0)
    p.add_argument(
        "--slack-latency", type=float, default=0.1, help="seconds the Slack stand-in takes to answer each call"
    )
    p.add_argument(
        "--slack-limits",
        action="store_true",
        help="the stand-in enforces Slack's rate limits; serve paces its calls and digests",
    )
    p.add_argument("--drain-timeout", type=float, default=300.0)
    p.add_argument(
        "--quiet",
        type=float,
        default=0.15,
        help="wait until the machine is at most this busy (0..1) before each measured run",
    )
    p.add_argument("--quiet-wait", type=float, default=120.0, help="but wait at most this many seconds")
    p.add_argument(
        "--db",
        default="sqlite",
        help="sqlite (a file, the default) or a PostgreSQL URL next to which a fresh database is made",
    )
    p.add_argument(
        "--auto-approve", action="store_true", help="a rule auto-approves every submission (no clicks are sent)"
    )
    p.add_argument("--only", choices=["bare", "signoff"], help="run one side only")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument(
        "--profile", metavar="FILE", help="sample `serve` with py-spy during the measured run; collapsed stacks to FILE"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="signoff-bench-"))
    secret, slack_secret = secrets.token_hex(32), secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNOFF_", "SLACK_"))}
    env.update(BENCH_AGENT_ID=AGENT, BENCH_AGENT_SECRET=secret, PYTHONUNBUFFERED="1")
    (tmp / "signoff.yaml").write_text(CONFIG + (AUTO_RULES if args.auto_approve else ""))
    res: dict = {
        "machine": machine(),
        "params": vars(args),
        "when": datetime.now(UTC).isoformat(),
        "commit": git_describe(),
    }
    slack = None
    try:
        if args.only != "signoff":
            res["bare"] = bench_bare(args, tmp, env, secret)
            print(f"bare: {res['bare']['accepted_per_s']:,.0f}/s, p99 {res['bare']['p99_ms']} ms", flush=True)
        if args.only != "bare":
            slack = load_fake_slack(args)
            res["signoff"] = bench_signoff(args, tmp, env, secret, slack_secret, slack)
            print(
                f"signoff: {res['signoff']['submit']['accepted_per_s']:,.0f}/s, "
                f"p99 {res['signoff']['submit']['p99_ms']} ms",
                flush=True,
            )
    finally:
        if slack is not None:
            slack.stop()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    if "bare" in res and "signoff" in res:
        print()
        print(report(res))
    else:
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
