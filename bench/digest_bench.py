"""Digests: a burst of requests to one channel against a Slack that enforces its limits.

N requests (default 100) are submitted at once to one workflow whose requests all go to one
channel. The outbox delivers them to the Slack stand-in with Slack's rate limits on
(``SlackLimits``: about one ``chat.postMessage`` a second per channel, short bursts, answered
429 with ``Retry-After`` beyond) and a latency of ``--latency`` seconds a call (default
0.1). Measured per request: the time from its submission until a message showing it (its
own, or a digest) was accepted by Slack — "in front of its owner"; p50/p99/max. Also the
number of messages posted and of 429 answers.

Modes, in one run: ``digest`` (``digest_after: 5s``, the default), ``paced`` (``digest_after:
0``: pacing only, one message per request) and, with ``--modes ...,unpaced``, neither (no
pacing: what the outbox did before it paced; slow, ~100 s of 429s).

    python bench/digest_bench.py
    python bench/digest_bench.py --requests 100 --latency 0.1 --modes digest,paced,unpaced
    python bench/digest_bench.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import database, loadavg, machine, pct
from signoff.bootstrap import build
from signoff.config import parse_config
from signoff.demo.slack_standin import SlackLimits, SlackStandIn
from signoff.outbox.dispatcher import Dispatcher
from signoff.settings import Settings
from signoff.slack.app import web_client
from signoff.slack.delivery import SlackDelivery
from signoff.slack.pacing import Pacer
from signoff.usecases.ports import system_clock
from signoff.usecases.submit import submit

CHANNEL = "C0BENCHAPPROVALS"


def _yaml(digest_after: str) -> str:
    return f"""
agents:
  - id: bench-bot
    sponsor: U0BENCHSPONSOR
    secret_env: BENCH_BOT_SECRET
workflows:
  - id: bench
    owner: U0BENCHOWNER
    platform_owner: U0BENCHPLAT
    security_owner: U0BENCHSEC
    security_channel: C0BENCHSEC
    channel: {CHANNEL}
    agents: [bench-bot]
    timeout: 1h
    digest_after: {digest_after}
"""


def _shown_at(fake: SlackStandIn) -> dict[str, float]:
    """Request id -> when Slack first accepted a message showing it (its buttons)."""
    out: dict[str, float] = {}
    for call in fake.calls_to("chat.postMessage"):
        if not call.ok or call.params.get("thread_ts"):
            continue
        blocks = call.params.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        for b in blocks or []:
            if b.get("type") == "actions":
                for e in b.get("elements", []):
                    if e.get("action_id") == "signoff.approve":
                        out.setdefault(e["value"], call.at)
    return out


def run(mode: str, n: int, latency: float, db_base: str, workdir: Path, timeout: float) -> dict:
    os.environ.setdefault("BENCH_BOT_SECRET", "bench-secret")
    with database(db_base, workdir, f"digest_{mode}") as url:
        rt = build(
            Settings(SIGNOFF_DATABASE_URL=url),
            config=parse_config(_yaml("0" if mode != "digest" else "5s")),
            clock=system_clock,
        )
        with SlackStandIn() as fake:
            fake.limits = SlackLimits()
            fake.delay = latency
            pacer = Pacer() if mode != "unpaced" else None
            delivery = SlackDelivery(rt.context, web_client("xoxb-bench", fake.url), pacer)
            dispatcher = Dispatcher(rt.context, delivery.handlers())
            dispatcher.plan = delivery.plan
            rt.context.notify = dispatcher.wake
            dispatcher.start(idle_interval=0.05)
            try:
                submitted: dict[str, float] = {}
                body = {
                    "workflow": "bench",
                    "action": {"type": "service.restart", "target": "api", "environment": "production"},
                    "justification": "benchmark",
                    "risk": "medium",
                }
                t0 = time.time()
                for i in range(n):
                    rid = submit(rt.context, agent_id="bench-bot", body={**body, "title": f"Burst {i}"}).request["id"]
                    submitted[rid] = time.time()
                submit_s = time.time() - t0
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    shown = _shown_at(fake)
                    if len(set(submitted) & set(shown)) == n:
                        break
                    time.sleep(0.1)
                shown = _shown_at(fake)
                waits = [shown[r] - at for r, at in submitted.items() if r in shown]
                posts = [c for c in fake.calls_to("chat.postMessage") if c.ok and not c.params.get("thread_ts")]
                refused = [c for c in fake.calls if c.status == 429]
                digests = sum(1 for c in posts if "requests need a decision" in json.dumps(c.params.get("blocks")))
                return {
                    "mode": mode,
                    "requests": n,
                    "shown": len(waits),
                    "submit_seconds": round(submit_s, 2),
                    "p50_s": round(pct(waits, 50) or 0, 2),
                    "p99_s": round(pct(waits, 99) or 0, 2),
                    "max_s": round(max(waits or [0]), 2),
                    "messages": len(posts),
                    "digests": digests,
                    "answers_429": len(refused),
                }
            finally:
                dispatcher.stop()
                rt.store.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.1, help="seconds the stand-in waits before each answer")
    ap.add_argument("--modes", default="digest,paced")
    ap.add_argument("--db", default="sqlite", help="sqlite, or a PostgreSQL URL (a fresh database is made next to it)")
    ap.add_argument("--timeout", type=float, default=400.0, help="seconds a mode may take at most")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    print(json.dumps({"machine": machine(), "loadavg_1m": loadavg()}), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            r = run(mode.strip(), args.requests, args.latency, args.db, Path(tmp), args.timeout)
            results.append(r)
            print(json.dumps(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
