"""Long-polls under load (see bench/README.md): 1,000 agents waiting at once on one
``signoff serve`` process (SQLite) while others submit at concurrency 32.

In one run, against one server process:

(a) submissions accepted per second and their p99, without waiters;
(b) the same with 1,000 concurrent ``GET /v1/actions/{id}?wait=30`` (each on a request of
    its own, re-issued as soon as it answers), and the server's resident memory meanwhile;
(c) decision → waiter answered: approve clicks (signed like Slack's) on awaited requests
    while (b) runs; for each, the time from the decision (its recorded time) to the moment
    the waiting client got the answer.

The submission load and the waiters are separate processes of this script
(``--role submit`` / ``--role wait``; Python asyncio clients: ``wrk`` is not assumed);
the fake Slack runs in the main process.

    python bench/waiters_bench.py            # ~1 minute
    python bench/waiters_bench.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from click_client import signed_click
from common import free_port, loadavg, pct
from common import machine as common_machine
from load_bench import (
    AGENT,
    APPROVER,
    CHANNEL,
    CONFIG,
    load_fake_slack,
    posted_request_ids,
    sign,
    stop,
    submission,
    wait_http,
)

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"


def headers(secret: str, raw: bytes, ago: int = 0) -> dict:
    ts = str(int(time.time()) - ago)
    return {
        "X-Signoff-Agent": AGENT,
        "X-Signoff-Timestamp": ts,
        "X-Signoff-Signature": sign(secret, ts, raw),
        "Content-Type": "application/json",
    }


# ---------------------------------------------------------------------- client roles
async def role_submit(url: str, secret: str, concurrency: int, duration: float, out: Path) -> None:
    """Closed loop: ``concurrency`` clients submitting one after another for ``duration`` s."""
    lat: list[float] = []
    errors = 0
    end = time.monotonic() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:

        async def one(k: int):
            nonlocal errors
            i = 0
            while time.monotonic() < end:
                raw = json.dumps(submission(k * 1_000_000 + i)).encode()
                i += 1
                t0 = time.monotonic()
                r = await c.post("/v1/actions", content=raw, headers=headers(secret, raw))
                if r.status_code in (200, 201):
                    lat.append(time.monotonic() - t0)
                else:
                    errors += 1

        t0 = time.monotonic()
        await asyncio.gather(*(one(k) for k in range(concurrency)))
        took = time.monotonic() - t0
    out.write_text(
        json.dumps(
            {
                "ok": len(lat),
                "errors": errors,
                "seconds": took,
                "per_s": len(lat) / took,
                "p50_ms": pct(lat, 50) * 1000 if lat else None,
                "p99_ms": pct(lat, 99) * 1000 if lat else None,
            }
        )
    )


async def role_wait(url: str, secret: str, ids: list[str], duration: float, out: Path) -> None:
    """One long-poll per id (wait=30), re-issued on answer while pending; records when the
    answer for a decided request arrived, with the decision's time."""
    woke: list[dict] = []
    answers = 0
    end = time.monotonic() + duration
    limits = httpx.Limits(max_connections=len(ids) + 10, max_keepalive_connections=len(ids) + 10)
    async with httpx.AsyncClient(base_url=url, timeout=90, limits=limits) as c:

        async def poll(n: int, rid: str):
            nonlocal answers
            while time.monotonic() < end:
                path = f"/v1/actions/{rid}?wait=30"
                try:
                    r = await c.get(path, headers=headers(secret, b"", ago=n % 200))
                except httpx.HTTPError:
                    await asyncio.sleep(0.5)
                    continue
                answers += 1
                v = r.json()
                if r.status_code == 200 and v.get("status") != "pending":
                    at = v["decisions"][0]["at"] if v.get("decisions") else None
                    woke.append({"id": rid, "answered": time.time(), "decided": at})
                    out.write_text(json.dumps({"woke": woke, "answers": answers}))  # as it goes: stopped by a signal
                    return

        Path(str(out) + ".ready").write_text("")
        await asyncio.gather(*(poll(n, rid) for n, rid in enumerate(ids)))
    out.write_text(json.dumps({"woke": woke, "answers": answers}))


# ---------------------------------------------------------------------- orchestration
def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_submit(url: str, secret: str, args, tmp: Path, name: str) -> subprocess.Popen:
    out = tmp / f"{name}.json"
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role",
            "submit",
            "--url",
            url,
            "--secret",
            secret,
            "--concurrency",
            str(args.concurrency),
            "--duration",
            str(args.duration),
            "--out",
            str(out),
        ]
    )


def result(tmp: Path, name: str) -> dict:
    return json.loads((tmp / f"{name}.json").read_text())


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--role", choices=["main", "submit", "wait"], default="main")
    p.add_argument("--url")
    p.add_argument("--secret")
    p.add_argument("--ids")
    p.add_argument("--out")
    p.add_argument("--waiters", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--clicks", type=int, default=100)
    p.add_argument("--json")
    args = p.parse_args()
    if args.role == "submit":
        asyncio.run(role_submit(args.url, args.secret, args.concurrency, args.duration, Path(args.out)))
        return 0
    if args.role == "wait":
        ids = json.loads(Path(args.ids).read_text())
        asyncio.run(role_wait(args.url, args.secret, ids, args.duration, Path(args.out)))
        return 0

    secret, slack_secret = secrets.token_hex(16), secrets.token_hex(16)
    slack = load_fake_slack()
    tmp = Path(tempfile.mkdtemp(prefix="signoff-waiters-"))
    (tmp / "signoff.yaml").write_text(CONFIG)
    port = free_port()
    base = f"http://{HOST}:{port}"
    env = {
        **os.environ,
        "BENCH_AGENT_SECRET": secret,
        "SLACK_BOT_TOKEN": "xoxb-bench",
        "SLACK_SIGNING_SECRET": slack_secret,
        "SIGNOFF_SLACK_API_URL": slack.url,
        "SIGNOFF_DATABASE_URL": f"sqlite:///{tmp / 'signoff.db'}",
        "SIGNOFF_CONFIG": str(tmp / "signoff.yaml"),
        "SIGNOFF_PUBLIC_URL": base,
    }
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "signoff.cli", "serve", "--host", HOST, "--port", str(port)],
        env=env,
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    waiter = None
    res: dict = {
        "machine": common_machine(),
        "waiters": args.waiters,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
    }
    try:
        wait_http(f"{base}/healthz", 60, proc)
        # the requests the waiters wait on, posted to (fake) Slack before anything is measured
        ids = []
        with httpx.Client(base_url=base, timeout=30) as http:
            for i in range(args.waiters):
                raw = json.dumps(submission(500_000 + i)).encode()
                r = http.post("/v1/actions", content=raw, headers=headers(secret, raw))
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
        deadline = time.monotonic() + 120
        while not all(i in (posted := posted_request_ids(slack)) for i in ids[: args.clicks]):
            if time.monotonic() > deadline:
                raise RuntimeError("the awaited requests were not posted in time")
            time.sleep(0.2)

        # (a) submissions alone
        res["rss_idle_kb"] = rss_kb(proc.pid)
        res["load_before"] = loadavg()
        run_submit(base, secret, args, tmp, "alone").wait(timeout=args.duration + 120)
        res["alone"] = result(tmp, "alone")

        # (b) with the waiters, (c) clicks on awaited requests meanwhile
        (tmp / "ids.json").write_text(json.dumps(ids))
        waiter = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--role",
                "wait",
                "--url",
                base,
                "--secret",
                secret,
                "--ids",
                str(tmp / "ids.json"),
                "--duration",
                str(args.duration + 30),
                "--out",
                str(tmp / "waits.json"),
            ]
        )
        while not (tmp / "waits.json.ready").exists():
            time.sleep(0.1)
        time.sleep(5)  # all 1,000 polls have arrived and are waiting
        res["rss_waiting_kb"] = rss_kb(proc.pid)
        sub = run_submit(base, secret, args, tmp, "with_waiters")
        time.sleep(2)
        clicks = ids[: args.clicks]
        gap = max(0.02, (args.duration - 4) / max(1, len(clicks)))
        with httpx.Client(base_url=base, timeout=30) as http:
            for rid in clicks:
                raw, h = signed_click(
                    slack_secret, APPROVER, {"request_id": rid, "channel": CHANNEL, "ts": posted[rid]}
                )
                http.post("/slack/events", content=raw, headers=h)
                time.sleep(gap)
        res["rss_under_load_kb"] = rss_kb(proc.pid)
        sub.wait(timeout=args.duration + 120)
        res["with_waiters"] = result(tmp, "with_waiters")
        stop(waiter)
        waiter.wait(timeout=30)
        waits = json.loads((tmp / "waits.json").read_text()) if (tmp / "waits.json").exists() else {"woke": []}
        lat = [
            w["answered"] - datetime.fromisoformat(w["decided"].replace("Z", "+00:00")).timestamp()
            for w in waits["woke"]
            if w.get("decided")
        ]
        res["woken"] = {
            "n": len(lat),
            "p50_ms": pct(lat, 50) * 1000 if lat else None,
            "p99_ms": pct(lat, 99) * 1000 if lat else None,
            "max_ms": max(lat) * 1000 if lat else None,
        }
        res["load_after"] = loadavg()
    finally:
        if waiter is not None and waiter.poll() is None:
            stop(waiter)
        stop(proc)
        log.close()
        slack.stop()
    a, w = res["alone"], res["with_waiters"]
    print(f"machine: {res['machine']}")
    print(
        f"submissions alone:        {a['per_s']:.0f}/s, p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms "
        f"({a['errors']} errors)"
    )
    print(
        f"with {args.waiters} waiters:   {w['per_s']:.0f}/s, p50 {w['p50_ms']:.1f} ms, p99 {w['p99_ms']:.1f} ms "
        f"({w['errors']} errors)"
    )
    print(
        f"RSS: idle {res['rss_idle_kb'] / 1024:.0f} MiB, {args.waiters} waiting "
        f"{res['rss_waiting_kb'] / 1024:.0f} MiB, waiting + load {res['rss_under_load_kb'] / 1024:.0f} MiB"
    )
    wk = res["woken"]
    if wk["n"]:
        print(
            f"decision → waiter answered: p50 {wk['p50_ms']:.0f} ms, p99 {wk['p99_ms']:.0f} ms, "
            f"max {wk['max_ms']:.0f} ms over {wk['n']} clicks"
        )
    print(f"load average before/after: {res['load_before']} / {res['load_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
