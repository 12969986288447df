"""Approve clicks as Slack sends them, at a fixed rate, timing each HTTP ack.

Run by load_bench.py as its own process while the submission load runs::

    python bench/click_client.py --url http://127.0.0.1:PORT/slack/events --secret S \
        --targets targets.json --rate 20 --duration 8 --out clicks.json

``targets.json`` is a list of ``{"request_id", "channel", "ts"}``; each click approves one
request as ``--user``. The schedule is open-loop (a click is sent at its time whether or not
earlier ones were answered), so a slow server shows up as latency, not as fewer clicks.

``--connections N`` replays clicks instead: N connections each send the next click as soon
as the last one was answered (closed loop), cycling through the targets for ``--duration``
seconds, each click signed afresh. A request clicked again is a repeated click (recorded as
evidence, answered with an ephemeral note), as when approvers click a message twice.
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
        "actions": [
            {
                "type": "button",
                "action_id": "signoff.approve",
                "block_id": "signoff.decision",
                "value": target["request_id"],
                "action_ts": str(time.time()),
            }
        ],
    }
    raw = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + raw, hashlib.sha256).hexdigest()
    return raw, {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def summarize(results: list[tuple[float, int]], errors: list[str], sent: int, **extra) -> dict:
    lat = sorted(r[0] * 1000 for r in results)
    statuses: dict[str, int] = {}
    for _, s in results:
        statuses[str(s)] = statuses.get(str(s), 0) + 1

    def pct(p: float) -> float | None:
        if not lat:
            return None
        return round(lat[min(len(lat) - 1, round(p / 100 * len(lat) + 0.5) - 1)], 2)

    return {
        "sent": sent,
        "answered": len(results),
        "errors": len(errors),
        "error_samples": errors[:3],
        "statuses": statuses,
        **extra,
        "latency_ms": {
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "max": round(lat[-1], 2) if lat else None,
            "mean": round(sum(lat) / len(lat), 2) if lat else None,
        },
    }


async def replay(args) -> dict:
    """``--connections`` closed-loop connections replaying clicks for ``--duration`` s."""
    import httpx

    with open(args.targets) as f:
        targets = json.load(f)
    results: list[tuple[float, int]] = []
    errors: list[str] = []
    n = args.connections
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as client:
        health = args.url.rsplit("/slack/", 1)[0] + "/healthz"
        await asyncio.gather(*(client.get(health) for _ in range(n)))  # open the connections untimed
        await asyncio.sleep(args.delay)
        end = time.perf_counter() + args.duration

        async def loop(k: int) -> None:
            i = k
            while time.perf_counter() < end:
                raw, headers = signed_click(args.secret, args.user, targets[i % len(targets)])
                i += n
                t0 = time.perf_counter()
                try:
                    resp = await client.post(args.url, content=raw, headers=headers)
                    results.append((time.perf_counter() - t0, resp.status_code))
                except Exception as exc:  # a timeout is a result too
                    errors.append(f"{type(exc).__name__}: {exc}")

        t0 = time.perf_counter()
        await asyncio.gather(*(loop(k) for k in range(n)))
        took = time.perf_counter() - t0
    return summarize(
        results,
        errors,
        len(results) + len(errors),
        connections=n,
        rate_per_s=round(len(results) / took, 1),
        seconds=round(took, 2),
    )


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
    return summarize(results, errors, count, rate_per_s=args.rate)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--targets", required=True)
    p.add_argument("--user", default="U0OWNER")
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument(
        "--connections",
        type=int,
        default=0,
        help="replay clicks over this many closed-loop connections instead of --rate open-loop",
    )
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--delay", type=float, default=1.0, help="seconds to wait before the first click")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost")):
        raise SystemExit("click_client only sends to loopback")
    result = asyncio.run(replay(args) if args.connections else run(args))
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
