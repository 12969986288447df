"""In-process policy evaluation: ``signoff.policy.evaluate`` on a 20-rule workflow, then the
change-window check on the effective definition, as ``submit`` does it (budgets excluded:
they need the database).

The workflow is built with the real configuration models (``Workflow.model_validate``);
the facts cycle through a fixed set chosen so that different rules apply (early, middle
and late rules, none at all, globs, environments, risks, rollbacks, mixed case and a
non-ASCII value). Each call is timed with ``time.perf_counter_ns``; the baseline, in the
same run, is a bare loop of ``fnmatchcase`` of a folded value over 20 folded patterns
(the least any glob-matching policy could do per request). A third line checks the moment
moving on by 1 ms a call, as "now" does in a server (the window check keeps the span of
time around the last moment it was asked about with the same answer).

    python bench/policy_bench.py                 # 200,000 calls each, prints the table
    python bench/policy_bench.py --calls 500000 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import loadavg, machine, pct
from signoff.config import Workflow
from signoff.domain.identifiers import fold
from signoff.policy import windows as win
from signoff.policy.evaluate import evaluate, schedule_of
from signoff.policy.rules import Facts

NOW = datetime(2026, 3, 4, 11, 30, tzinfo=UTC)  # a Wednesday
WEEKDAYS = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00", "timezone": "Europe/Berlin"}


def workflow() -> Workflow:
    """20 rules of the kinds a real file holds: denies, automation, overrides with windows
    and freezes, globs over type and target, environments, risks, rollbacks."""
    rules = [
        {"name": "no-drops", "match": {"action_type": "db.drop*"}, "deny": "never by agents"},
        {
            "name": "no-prod-truncate",
            "match": {"action_type": ["db.truncate", "db.delete*"], "environment": "production"},
            "deny": "no",
        },
        {
            "name": "rollbacks",
            "match": {"rollback": True},
            "auto_approve": {"limit": "10 per 1h"},
            "require_rollback": False,
        },
        {
            "name": "restart-low",
            "match": {"action_type": "service.restart", "risk": ["low", "medium"]},
            "auto_approve": {"limit": "5 per 1h", "scope": "target"},
        },
        {
            "name": "scale-staging",
            "match": {"action_type": "service.scale*", "environment": ["staging", "dev"]},
            "auto_approve": {"limit": "20 per 1h"},
        },
        {
            "name": "payments",
            "match": {"target": ["payments-*", "billing-*"]},
            "required_approvals": 2,
            "approvers": ["U0PAY1", "U0PAY2", "U0PAY3"],
            "windows": [WEEKDAYS],
        },
        {
            "name": "edge",
            "match": {"target": "edge-??", "environment": "production"},
            "windows": [WEEKDAYS],
            "freezes": [{"start": "2026-12-20T00:00:00Z", "end": "2027-01-04T00:00:00Z", "reason": "holidays"}],
        },
        {
            "name": "deploy-prod",
            "match": {"action_type": "deploy", "environment": "production", "risk": ["high", "critical"]},
            "windows": [WEEKDAYS],
            "approval_ttl": "2h",
            "confirm": "typed",
        },
        {"name": "deploy-sub", "match": {"action_type": "deploy.*"}, "approval_ttl": "4h"},
        {"name": "config-low", "match": {"action_type": "config.set", "risk": ["low"]}, "require_rollback": True},
        {"name": "flags", "match": {"action_type": "flag.*", "target": "[a-m]*"}, "timeout": "30m"},
        {"name": "flags-rest", "match": {"action_type": "flag.*"}, "timeout": "2h"},
        {
            "name": "dns",
            "match": {"action_type": ["dns.*", "cdn.purge"], "environment": "production"},
            "required_approvals": 2,
            "approvers": ["U0NET1", "U0NET2"],
        },
        {
            "name": "secrets",
            "match": {"action_type": "secret.rotate", "target": "*-key"},
            "approvers": ["U0SEC1"],
            "confirm": "typed",
        },
        {
            "name": "iam",
            "match": {"action_type": "iam.*", "risk": ["high", "critical"]},
            "required_approvals": 2,
            "approvers": ["U0SEC1", "U0SEC2"],
        },
        {"name": "backup", "match": {"action_type": "backup.restore"}, "windows": [WEEKDAYS]},
        {
            "name": "queue",
            "match": {"action_type": "queue.purge", "target": "*-dlq"},
            "auto_approve": {"limit": "3 per 1d"},
        },
        {
            "name": "cache",
            "match": {"action_type": "cache.flush", "environment": ["staging", "dev", "qa"]},
            "auto_approve": {"limit": "50 per 1h"},
        },
        {"name": "k8s-prod", "match": {"action_type": "k8s.*", "environment": "production"}, "timeout": "4h"},
        {
            "name": "catch-critical",
            "match": {"risk": ["critical"]},
            "required_approvals": 2,
            "approvers": ["U0OWNER", "U0SRE", "U0SEC1"],
        },
    ]
    assert len(rules) == 20
    return Workflow.model_validate(
        {
            "id": "bench",
            "owner": "U0OWNER",
            "platform_owner": "U0PLAT",
            "security_owner": "U0SEC1",
            "channel": "C0BENCH",
            "approvers": ["U0OWNER", "U0SRE"],
            "escalation": [{"after": "20m", "to": ["U0SRE"]}],
            "windows": [{"start": "00:00", "end": "24:00"}],
            "rules": rules,
        }
    )


FACTS = [
    Facts("db.drop_table", "orders", "production", "high"),
    Facts("DB.Truncate", "orders", "Production", "medium"),
    Facts("deploy", "api", "production", "low", is_rollback=True),
    Facts("service.restart", "api", "production", "low"),
    Facts("service.scale_up", "worker", "staging", "medium"),
    Facts("service.update", "payments-gw", "production", "medium"),
    Facts("service.update", "edge-01", "production", "high"),
    Facts("deploy", "web", "production", "high"),
    Facts("deploy.canary", "web", "staging", "medium"),
    Facts("config.set", "web", "production", "low"),
    Facts("flag.enable", "checkout", "production", "low"),
    Facts("flag.enable", "search", "production", "low"),
    Facts("dns.update", "example.com", "production", "medium"),
    Facts("secret.rotate", "stripe-key", "production", "high"),
    Facts("iam.grant", "role-admin", "production", "high"),
    Facts("backup.restore", "orders-db", "production", "high"),
    Facts("queue.purge", "orders-dlq", "production", "low"),
    Facts("cache.flush", "web", "qa", "low"),
    Facts("k8s.rollout", "web", "production", "medium"),
    Facts("anything.else", "web", "production", "critical"),
    Facts("service.update", "web", None, "medium"),  # no rule applies
    Facts("ｓｅｒｖｉｃｅ.restart", "ａｐｉ", "ＰＲＯＤＵＣＴＩＯＮ", "low"),  # fullwidth: folds to restart-low
]


def run_policy(wf: Workflow, calls: int, step: timedelta = timedelta(0)) -> tuple[list[int], dict[str, int], float]:
    """``step``: how far the moment checked moves on each call (0: always NOW)."""
    applied: dict[str, int] = {}
    times = [0] * calls
    n = len(FACTS)
    clock = time.perf_counter_ns
    nows = [NOW + step * i for i in range(calls)] if step else [NOW] * calls
    cpu0 = time.process_time()
    for i in range(calls):
        facts = FACTS[i % n]
        now = nows[i]
        t0 = clock()
        ev = evaluate(wf, facts)
        win.check([schedule_of(ev.effective)], now)
        times[i] = clock() - t0
        if i < n:
            applied[ev.rule_name or "(none)"] = applied.get(ev.rule_name or "(none)", 0) + 1
    return times, applied, time.process_time() - cpu0


def run_baseline(wf: Workflow, calls: int) -> tuple[list[int], float]:
    patterns = [fold(p) for r in wf.rules for p in ((r.match.action_type or r.match.target or ["*"])[:1])]
    patterns = (patterns + ["*"] * 20)[:20]
    times = [0] * calls
    n = len(FACTS)
    clock = time.perf_counter_ns
    cpu0 = time.process_time()
    for i in range(calls):
        facts = FACTS[i % n]
        t0 = clock()
        v = fold(facts.action_type)
        [fnmatchcase(v, p) for p in patterns]
        times[i] = clock() - t0
    return times, time.process_time() - cpu0


def summary(times: list[int], cpu: float) -> dict:
    """Calls per second of the timed calls' wall time, and per CPU-second of the whole loop
    (this process's CPU: what other work on a shared machine takes away does not count)."""
    total = sum(times) / 1e9
    ms = [t / 1e6 for t in times]
    return {
        "calls": len(times),
        "per_s": round(len(times) / total),
        "per_cpu_s": round(len(times) / cpu),
        "p50_ms": round(pct(ms, 50), 4),
        "p99_ms": round(pct(ms, 99), 4),
        "max_ms": round(max(ms), 3),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    wf = workflow()
    run_policy(wf, 2_000)  # warm the caches a long-running server has warm
    run_baseline(wf, 2_000)
    load_before = loadavg()
    gc.collect()
    base = summary(*run_baseline(wf, args.calls))
    times, applied, cpu = run_policy(wf, args.calls)
    pol = summary(times, cpu)
    # the moment checked moving on by 1 ms a call (200 s over 200,000 calls), as "now" does
    moving = summary(*run_policy(wf, args.calls, timedelta(milliseconds=1))[::2])
    out = {
        "machine": machine(),
        "loadavg": [load_before, loadavg()],
        "baseline": base,
        "policy": pol,
        "policy_moving_clock": moving,
        "ratio": round(pol["per_s"] / base["per_s"], 3),
        "rules_applied": applied,
    }
    print(
        f"load avg {load_before} -> {out['loadavg'][1]}; {len(FACTS)} facts cycled, rules applied: "
        + ", ".join(f"{k}×{v}" for k, v in applied.items())
    )
    print(f"{'':44} {'per s':>10} {'per CPU-s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, s in (
        ("baseline: fold + fnmatchcase over 20 globs", base),
        ("policy.evaluate + window check, 20 rules", pol),
        ("the same, the moment moving 1 ms a call", moving),
    ):
        print(f"{label:44} {s['per_s']:>10,} {s['per_cpu_s']:>10,} {s['p50_ms']:>8} {s['p99_ms']:>8} {s['max_ms']:>8}")
    print(f"ratio policy / baseline: {out['ratio']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
