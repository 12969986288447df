"""Every row of the performance targets in one command, each run ``--repeat`` times.

Rows (each load row measures the bare HMAC endpoint with the same worker count in the
same run, so every ratio is taken within one run):

- submissions, SQLite, ``serve`` one process, with Approve clicks during the load (20/s,
  open loop) and then clicks replayed by 16 closed-loop connections;
- submissions, SQLite, ``serve --workers 2``, with clicks;
- submissions, PostgreSQL, ``serve --workers 2``, with clicks (only with ``--pg URL`` or
  ``SIGNOFF_TEST_POSTGRES_URL`` set: a fresh database is made next to it and dropped);
- auto-approved submissions (a rule with ``auto_approve``), SQLite, one process;
- submissions, SQLite, one process, with Slack's rate limits enforced by the stand-in and
  ``serve``'s pacing and digests on (row ``limits``: what production does; the post figure
  is then Slack's limits, not the server);
- in-process policy evaluation (bench/policy_bench.py).

The Slack stand-in answers each call in ``--slack-latency`` seconds (0.1, as Slack's Web
API about does). Except in the ``limits`` row, it enforces no rate limits and ``serve`` runs
with ``SIGNOFF_SLACK_PACING=false``. The 1-minute load average before and after each run is
printed next to it.

    python bench/run_all.py                       # ~10 minutes on a quiet 2-core machine
    python bench/run_all.py --repeat 1 --duration 5 --json all.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import loadavg, machine

HERE = Path(__file__).resolve().parent


def load_row(label: str, extra: list[str], args) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [
        sys.executable,
        str(HERE / "load_bench.py"),
        "--duration",
        str(args.duration),
        "--quiet-wait",
        str(args.quiet_wait),
        "--drain-timeout",
        str(args.drain_timeout),
        "--slack-latency",
        str(args.slack_latency),
        "--json",
        str(out),
        *extra,
    ]
    before = loadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration * 4 + 900)
    after = loadavg()
    try:
        res = json.loads(out.read_text()) if proc.returncode == 0 else None
    except (OSError, ValueError):
        res = None
    finally:
        out.unlink(missing_ok=True)
    if res is None:
        return {"label": label, "error": (proc.stdout + proc.stderr)[-2000:], "load": (before, after)}
    return {"label": label, "load": (before, after), "res": res}


def policy_row(args) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    before = loadavg()
    subprocess.run(
        [sys.executable, str(HERE / "policy_bench.py"), "--calls", str(args.policy_calls), "--json", str(out)],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    res = json.loads(out.read_text())
    out.unlink(missing_ok=True)
    return {"label": "policy", "load": (before, loadavg()), "res": res}


def _fmt_load(load) -> str:
    return f"{load[0]} → {load[1]}"


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| row | accepted/s | bare HMAC /s (same run) | ratio | submit p50 / p99 ms | submit → post p99 s "
            "| click ack p50 / p99 ms, 20/s during load | click ack p50 / p99 ms, 16 connections replaying "
            "| non-2xx | serve CPU-s / other CPU-s | load avg |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["label"] == "policy":
            p, b = r["res"]["policy"], r["res"]["baseline"]
            mv = r["res"].get("policy_moving_clock")
            moving = f"; moment moving 1 ms a call: {mv['per_s']:,}/s, p99 {mv['p99_ms']} ms" if mv else ""
            lines.append(
                f"| policy.evaluate + window check, 20 rules | {p['per_s']:,}/s "
                f"({p['per_cpu_s']:,} per CPU-s{moving}) "
                f"| fnmatch loop: {b['per_s']:,}/s ({b['per_cpu_s']:,} per CPU-s) | {r['res']['ratio']} "
                f"| {p['p50_ms']} / {p['p99_ms']} | — | — | — | — | — | {_fmt_load(r['load'])} |"
            )
            continue
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error'][-200:]!r} | | | | | | | | | {_fmt_load(r['load'])} |")
            continue
        bare, s = r["res"]["bare"], r["res"]["signoff"]
        sub, clicks, posting = s["submit"], s["clicks"], s["posting"]
        ratio = sub["accepted_per_s"] / bare["accepted_per_s"] if bare["accepted_per_s"] else 0
        lat = clicks.get("latency_ms")
        click = (
            f"{lat['p50']} / {lat['p99']} ({clicks.get('answered')} at {clicks.get('rate_per_s')}/s)" if lat else "—"
        )
        rp = s.get("replay") or {}
        rlat = rp.get("latency_ms")
        replay = (
            (
                f"{rlat['p50']} / {rlat['p99']} ({rp.get('answered')} at {rp.get('rate_per_s')}/s; "
                f"{rp.get('recorded')} recorded)"
            )
            if rlat
            else "—"
        )
        lines.append(
            f"| {r['label']} | {sub['accepted_per_s']:,.0f} | {bare['accepted_per_s']:,.0f} | {ratio:.3f} "
            f"| {sub['p50_ms']} / {sub['p99_ms']} | {posting['submit_to_post_s']['p99']} "
            f"({posting['posted']}/{posting['requests_total']} posted) | {click} | {replay} | {sub['not_ok']} "
            f"| {sub['cpu']['server_s']} / {sub['cpu']['other_s']} of {sub['cpu']['wall_s']} s "
            f"| {_fmt_load(r['load'])} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=2, help="runs of each row")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per load run")
    p.add_argument(
        "--pg",
        default=os.environ.get("SIGNOFF_TEST_POSTGRES_URL"),
        help="PostgreSQL URL for the PostgreSQL row (default: $SIGNOFF_TEST_POSTGRES_URL)",
    )
    p.add_argument(
        "--quiet-wait", type=float, default=30.0, help="seconds each phase may wait for the machine to be quiet"
    )
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--policy-calls", type=int, default=200_000)
    p.add_argument("--slack-latency", type=float, default=0.1, help="seconds the Slack stand-in takes per call")
    p.add_argument("--rows", default="sqlite1,sqlite2,pg2,auto,limits,policy", help="comma-separated subset")
    p.add_argument("--json", help="also write every raw figure here")
    args = p.parse_args()
    want = set(args.rows.split(","))
    plan = [
        ("sqlite1", "submissions, SQLite, 1 process", ["--workers", "1"]),
        ("sqlite2", "submissions, SQLite, --workers 2", ["--workers", "2"]),
    ]
    if args.pg:
        plan.append(("pg2", "submissions, PostgreSQL, --workers 2", ["--workers", "2", "--db", args.pg]))
    elif "pg2" in want:
        print("no PostgreSQL URL (--pg or SIGNOFF_TEST_POSTGRES_URL): the PostgreSQL row is skipped", flush=True)
    plan.append(("auto", "auto-approved, SQLite, 1 process", ["--workers", "1", "--auto-approve"]))
    plan.append(
        (
            "limits",
            "submissions, SQLite, 1 process, Slack's rate limits and pacing on",
            ["--workers", "1", "--slack-limits", "--replay-connections", "0"],
        )
    )
    m = machine()
    print(f"machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM, Python {m['python']}", flush=True)
    rows = []
    for n in range(args.repeat):
        for key, label, extra in plan:
            if key in want:
                r = load_row(f"{label} (run {n + 1})", extra, args)
                rows.append(r)
                print(table([r]).splitlines()[-1], flush=True)
        if "policy" in want:
            r = policy_row(args)
            rows.append(r)
            print(table([r]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": m, "rows": rows}, indent=2, default=str))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
