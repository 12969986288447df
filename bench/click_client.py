"""Approve clicks as Slack sends them, at a fixed rate, timing each HTTP ack.

Run by load_bench.py as its own process while the submission load runs::

    python bench/click_client.py --url http://127.0.0.1:PORT/slack/events --secret S \
        --targets targets.json --rate 20 --duration 8 --out clicks.json

``targets.json`` is a list of ``{"request_id", "channel", "ts"}``; each click approves one
request as ``--user``. The schedule is open-loop (a click is sent at its time whether or not
earlier ones were answered), so a slow server shows up as latency, not as fewer clicks.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import time
from urllib.parse import urlencode


def signed_click(secret: str, user: str, target: dict) -> tuple[bytes, dict]:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower()},
        "team": {"id": "T0BENCH"},
        "api_app_id": "A0BENCH",
        "token": "x",
        "channel": {"id": target["channel"]},
        "container": {"type": "message", "channel_id": target["channel"], "message_ts": target["ts"]},
        "message": {"ts": target["ts"]},
        "trigger_id": "1.2.3",
        "actions": [{"type": "button", "action_id": "signoff.approve", "block_id": "signoff.decision",
                     "value": target["request_id"], "action_ts": str(time.time())}],
    }
    raw = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + raw, hashlib.sha256).hexdigest()
    return raw, {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig,
                 "Content-Type": "application/x-www-form-urlencoded"}


async def run(args) -> dict:
    import httpx

    with open(args.targets) as f:
        targets = json.load(f)
    count = min(len(targets), int(args.rate * args.duration))
    results: list[tuple[float, int]] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as client:
        # one request first so the connection set-up is not timed
        await client.get(args.url.rsplit("/slack/", 1)[0] + "/healthz")

        async def one(target: dict) -> None:
            raw, headers = signed_click(args.secret, args.user, target)
            t0 = time.perf_counter()
            try:
                resp = await client.post(args.url, content=raw, headers=headers)
                results.append((time.perf_counter() - t0, resp.status_code))
            except Exception as exc:  # a timeout is a result too
                errors.append(f"{type(exc).__name__}: {exc}")

        start = time.perf_counter() + args.delay
        tasks = []
        for k in range(count):
            due = start + k / args.rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(targets[k])))
        await asyncio.gather(*tasks)
    lat = sorted(r[0] * 1000 for r in results)
    statuses: dict[str, int] = {}
    for _, s in results:
        statuses[str(s)] = statuses.get(str(s), 0) + 1

    def pct(p: float) -> float | None:
        if not lat:
            return None
        return round(lat[min(len(lat) - 1, round(p / 100 * len(lat) + 0.5) - 1)], 2)

    return {"sent": count, "answered": len(results), "errors": len(errors), "error_samples": errors[:3],
            "statuses": statuses, "rate_per_s": args.rate,
            "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": round(lat[-1], 2) if lat else None,
                           "mean": round(sum(lat) / len(lat), 2) if lat else None}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--targets", required=True)
    p.add_argument("--user", default="U0OWNER")
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--delay", type=float, default=1.0, help="seconds to wait before the first click")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost")):
        raise SystemExit("click_client only sends to loopback")
    result = asyncio.run(run(args))
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
