"""Escalation and sweep: lag, idle tick cost and memory (see bench/README.md).

Three measurements, each on a database seeded in bulk (rows inserted directly, not
submitted one by one, so setup takes seconds):

(a) lag — N pending requests (default 10,000) whose first escalation step falls due
    spread evenly over a window (default 60 s). ``signoff serve`` runs as a separate
    process with its real sweep (``SIGNOFF_SWEEP_INTERVAL``, default 1 s) and its real
    outbox dispatcher, talking to a local fake Slack Web API in this process. For each
    request: the time from the step's deadline to the moment the fake Slack received the
    escalation DM (``chat.postMessage``); p50/p90/p99/max. Also the deadline → sweep part
    alone, from the ``late_seconds`` the sweep records in each ``escalation.fired`` event.
(b) tick — one sweep tick with M pending requests (default 100,000) of which none is due:
    ``sweep(ctx)`` called in-process many times; p50/p99/mean.
(c) memory — resident memory (VmRSS, peak VmHWM) of ``signoff serve`` idling over the M
    pending requests for a while, next to the same process over an empty database.

    python bench/sweep_bench.py                         # SQLite, all three (~2.5 minutes)
    python bench/sweep_bench.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/sweep_bench.py --parts tick,rss --pending 100000
    python bench/sweep_bench.py --json out.json

With a PostgreSQL URL each part runs in a fresh database created next to the given one
(and dropped afterwards). Everything is bounded in time; the run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.engine import make_url

from common import HOST, database, free_port, loadavg, machine, pct
from signoff.bootstrap import build
from signoff.config import parse_config
from signoff.demo.slack_standin import SlackStandIn, dm_channel
from signoff.domain.canonical import sha256_hex
from signoff.domain.chain import GENESIS
from signoff.settings import Settings
from signoff.store.tables import EventRow, OutboxRow, RequestRow, SlackMessageRow

SECRET_ENV = "BENCH_BOT_SECRET"
ESCALATE_TO = "U0ESCBENCH"
STEP_AFTER = 60  # seconds from submission to the escalation step

YAML = f"""
agents:
  - id: bench-bot
    sponsor: U0SPONSOR
    secret_env: {SECRET_ENV}
workflows:
  - id: bench
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    security_channel: C0SEC
    channel: C0APPROVALS
    agents: [bench-bot]
    timeout: 1h
    escalation:
      - after: {STEP_AFTER}s
        to: [{ESCALATE_TO}]
      - after: 30m
        to: [U0PLAT]
"""


# ---------------------------------------------------------------------- machine


# ---------------------------------------------------------------------- databases


def prepare(url: str):
    """Create the schema (migrations) and return (runtime, workflow)."""
    rt = build(Settings(SIGNOFF_DATABASE_URL=url), config=parse_config(YAML))
    return rt, rt.context.config().workflow("bench")


def seed(url: str, wf, created: list[datetime], *, root_posted: bool) -> list[str]:
    """Insert pending requests (one per ``created`` moment) in bulk; returns their ids.

    With ``root_posted`` each also gets its root Slack message, already posted, so the
    only Slack work left is what the sweep causes.
    """
    policy, policy_hash = wf.model_dump(mode="json"), wf.policy_hash()
    action = {"type": "service.restart", "target": "checkout-api", "environment": "production"}
    digest = sha256_hex(action)
    steps = [s.after for s in wf.escalation]
    engine = create_engine(url)
    ids = []
    chunk = 5000
    with engine.begin() as conn:
        for start in range(0, len(created), chunk):
            rows, msgs = [], []
            for i, c in enumerate(created[start : start + chunk], start):
                rid = str(uuid.uuid4())
                ids.append(rid)
                rows.append(
                    dict(
                        id=rid,
                        workflow=wf.id,
                        title=f"bench request {i}",
                        action=action,
                        action_sha256=digest,
                        risk="medium",
                        justification="benchmark",
                        prompt=None,
                        rollback=None,
                        parent_id=None,
                        rollback_of=None,
                        submitted_by="bench-bot",
                        executor="bench-bot",
                        sponsor="U0SPONSOR",
                        status="pending",
                        created_at=c,
                        deadline=c + wf.timeout,
                        decided_at=None,
                        due_at=c + steps[0],
                        steps_fired=0,
                        not_before=None,
                        approval_expires_at=None,
                        policy=policy,
                        policy_hash=policy_hash,
                        exceptions=[],
                        event_count=0,
                        head_hash=GENESIS,
                        version=1,
                    )
                )
                if root_posted:
                    msgs.append(
                        dict(
                            request_id=rid,
                            role="request",
                            target="C0APPROVALS",
                            channel="C0APPROVALS",
                            ts=f"1600000000.{i:06d}",
                            created_at=c,
                            posted_at=c,
                        )
                    )
            conn.execute(insert(RequestRow.__table__), rows)
            if msgs:
                conn.execute(insert(SlackMessageRow.__table__), msgs)
    engine.dispose()
    return ids


# ---------------------------------------------------------------------- serve as a process


def signoff_command() -> list[str]:
    script = Path(sys.executable).with_name("signoff")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from signoff.cli import main; main()"]


class Serve:
    def __init__(self, url: str, slack_url: str, workdir: Path, interval: float, name: str, workers: int = 1):
        config = workdir / "signoff.yaml"
        config.write_text(YAML)
        key = (
            Ed25519PrivateKey.generate()
            .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            .decode()
        )
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNOFF_", "SLACK_"))}
        env.update(
            {
                "SLACK_BOT_TOKEN": "xoxb-bench",
                "SLACK_SIGNING_SECRET": "bench-signing-secret",
                "SIGNOFF_SLACK_API_URL": slack_url,
                "SIGNOFF_DATABASE_URL": url,
                "SIGNOFF_CONFIG": str(config),
                "SIGNOFF_SWEEP_INTERVAL": str(interval),
                "SIGNOFF_SIGNING_KEY": key,
                SECRET_ENV: "bench-secret",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.log = workdir / f"serve-{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                signoff_command() + ["serve", "--host", HOST, "--port", str(self.port), "--workers", str(workers)],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 60) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"signoff serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"signoff serve not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def rss(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                fields[k] = int(v.split()[0])
        return fields["VmRSS"], fields["VmHWM"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ---------------------------------------------------------------------- figures


def summary(values: list[float], unit_scale: float = 1.0, digits: int = 3) -> dict:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "n": len(values),
        "p50": round(pct(values, 50) * unit_scale, digits),
        "p90": round(pct(values, 90) * unit_scale, digits),
        "p99": round(pct(values, 99) * unit_scale, digits),
        "max": round(max(values) * unit_scale, digits) if values else None,
        "mean": round(statistics.fmean(values) * unit_scale, digits) if values else None,
    }


# ---------------------------------------------------------------------- (a) lag


def bench_lag(base: str, workdir: Path, n: int, spread: float, interval: float, lead: float, workers: int = 1) -> dict:
    print(f"(a) lag: {n} pending, first step due spread over {spread:.0f} s, sweep every {interval} s")
    with database(base, workdir, "lag") as url, SlackStandIn() as slack:
        rt, wf = prepare(url)
        rt.store.dispose()
        now = datetime.now(timezone.utc)
        first_due = now + timedelta(seconds=lead)
        step = timedelta(seconds=STEP_AFTER)
        due = [first_due + timedelta(seconds=spread * i / n) for i in range(n)]
        t = time.monotonic()
        ids = seed(url, wf, [d - step for d in due], root_posted=True)
        due_of = {rid: d.timestamp() for rid, d in zip(ids, due, strict=True)}
        print(f"    seeded in {time.monotonic() - t:.1f} s")
        serve = Serve(url, slack.url, workdir, interval, "lag", workers)
        try:
            ready = serve.wait_ready()
            left = (first_due - datetime.now(timezone.utc)).total_seconds()
            print(f"    serve ready in {ready:.1f} s; first deadline in {left:.1f} s")
            if left < 0:
                raise SystemExit("serve started after the first deadline; raise --lead")
            channel = dm_channel(ESCALATE_TO)
            deadline = time.monotonic() + left + spread + 120
            while time.monotonic() < deadline:
                got = sum(1 for c in slack.calls_to("chat.postMessage") if c.params.get("channel") == ESCALATE_TO)
                if got >= n:
                    break
                time.sleep(0.5)
            posts = {}
            for c in slack.calls_to("chat.postMessage"):
                if c.params.get("channel") != ESCALATE_TO or not c.ok or c.params.get("thread_ts"):
                    continue
                rid = ((c.params.get("metadata") or {}).get("event_payload") or {}).get("request_id")
                if rid in due_of:
                    posts.setdefault(rid, c.at)
            lags = [posts[r] - due_of[r] for r in posts]
            rss = serve.rss()
        finally:
            serve.stop()
        engine = create_engine(url)
        with engine.connect() as conn:
            late = [
                float(d["late_seconds"])
                for (d,) in conn.execute(select(EventRow.data).where(EventRow.type == "escalation.fired"))
            ]
            outbox_left = conn.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.state == "pending"))
        engine.dispose()
        calls = len(slack.calls)
        ats = sorted(c.at for c in slack.calls)
        # calls a second while the dispatcher had work: first to last call of the run
        calls_per_s = round(calls / (ats[-1] - ats[0]), 1) if len(ats) > 1 else None
    out = {
        "requests": n,
        "spread_s": spread,
        "sweep_interval_s": interval,
        "escalation_posts": len(posts),
        "missing": n - len(posts),
        "deadline_to_post_s": summary(lags),
        "deadline_to_sweep_s": summary(late),
        "slack_calls": calls,
        "slack_calls_per_s": calls_per_s,
        "outbox_left": outbox_left,
        "serve_rss_mib": round(rss[0] / 1024, 1),
        "serve_peak_rss_mib": round(rss[1] / 1024, 1),
        "dm_channel": channel,
    }
    print(f"    deadline → escalation post: {out['deadline_to_post_s']}")
    print(f"    deadline → sweep:           {out['deadline_to_sweep_s']}")
    print(f"    Slack calls: {calls} at {calls_per_s}/s (first to last call)")
    return out


# ---------------------------------------------------------------------- (b) tick


def bench_tick(base: str, workdir: Path, m: int, ticks: int) -> dict:
    print(f"(b) tick: one sweep with {m} pending, none due ({ticks} ticks)")
    from signoff.usecases.sweep import sweep

    with database(base, workdir, "tick") as url:
        rt, wf = prepare(url)
        now = datetime.now(timezone.utc)
        t = time.monotonic()
        # every first step falls due between 1 and 2 hours from now: nothing due during the run
        seed(
            url,
            wf,
            [
                now + timedelta(hours=1) + timedelta(seconds=3600 * i / m) - timedelta(seconds=STEP_AFTER)
                for i in range(m)
            ],
            root_posted=False,
        )
        print(f"    seeded in {time.monotonic() - t:.1f} s")
        ctx = rt.context
        for _ in range(20):  # warm the pool and the caches
            sweep(ctx)
        times = []
        for _ in range(ticks):
            t0 = time.perf_counter()
            report = sweep(ctx)
            times.append(time.perf_counter() - t0)
            assert report.touched == 0
        rt.store.dispose()
    out = {"pending": m, "ticks": ticks, "tick_ms": summary(times, 1000, 3)}
    print(f"    tick (ms): {out['tick_ms']}")
    return out


# ---------------------------------------------------------------------- (c) memory


def bench_rss(base: str, workdir: Path, m: int, interval: float, idle: float) -> dict:
    print(f"(c) memory: signoff serve idling {idle:.0f} s, empty database vs {m} pending")
    out = {}
    with SlackStandIn() as slack:
        for label, count in (("empty", 0), ("pending", m)):
            with database(base, workdir, f"rss{label}") as url:
                rt, wf = prepare(url)
                rt.store.dispose()
                if count:
                    now = datetime.now(timezone.utc)
                    seed(
                        url,
                        wf,
                        [now + timedelta(hours=1) + timedelta(seconds=3600 * i / count) for i in range(count)],
                        root_posted=True,
                    )
                serve = Serve(url, slack.url, workdir, interval, f"rss-{label}")
                try:
                    serve.wait_ready()
                    peak = 0
                    t0 = time.monotonic()
                    while time.monotonic() - t0 < idle:
                        httpx.get(f"{serve.base}/readyz", timeout=5)
                        peak = max(peak, serve.rss()[0])
                        time.sleep(0.5)
                    rss, hwm = serve.rss()
                finally:
                    serve.stop()
            out[label] = {
                "requests": count,
                "rss_mib": round(rss / 1024, 1),
                "max_sampled_rss_mib": round(peak / 1024, 1),
                "peak_hwm_mib": round(hwm / 1024, 1),
            }
            print(f"    {label}: {out[label]}")
    return out


# ---------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default="sqlite", help="'sqlite' (a file per part) or a PostgreSQL URL")
    ap.add_argument("--parts", default="lag,tick,rss")
    ap.add_argument("--requests", type=int, default=10_000, help="(a) pending requests")
    ap.add_argument("--spread", type=float, default=60.0, help="(a) seconds over which the deadlines fall")
    ap.add_argument("--lead", type=float, default=20.0, help="(a) seconds from seeding to the first deadline")
    ap.add_argument("--interval", type=float, default=1.0, help="SIGNOFF_SWEEP_INTERVAL for serve")
    ap.add_argument("--pending", type=int, default=100_000, help="(b, c) pending requests, none due")
    ap.add_argument("--ticks", type=int, default=2000, help="(b) sweep ticks timed")
    ap.add_argument("--idle", type=float, default=15.0, help="(c) seconds serve idles while sampled")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="(a) `serve --workers` (memory figures are of one process: (c) always uses 1)",
    )
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    result = {
        "machine": machine(),
        "db": "sqlite" if args.db == "sqlite" else make_url(args.db).get_backend_name(),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(json.dumps(result["machine"]))
    with tempfile.TemporaryDirectory(prefix="signoff-sweep-bench-") as tmp:
        workdir = Path(tmp)
        if "lag" in parts:
            before = loadavg()
            result["lag"] = bench_lag(
                args.db, workdir, args.requests, args.spread, args.interval, args.lead, args.workers
            )
            result["lag"]["loadavg_before_after"] = [before, loadavg()]
        if "tick" in parts:
            before = loadavg()
            result["tick"] = bench_tick(args.db, workdir, args.pending, args.ticks)
            result["tick"]["loadavg_before_after"] = [before, loadavg()]
        if "rss" in parts:
            before = loadavg()
            result["rss"] = bench_rss(args.db, workdir, args.pending, args.interval, args.idle)
            result["rss"]["loadavg_before_after"] = [before, loadavg()]
    text_out = json.dumps(result, indent=2)
    print(text_out)
    if args.json:
        Path(args.json).write_text(text_out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
