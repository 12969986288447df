"""The example Prometheus alert rules parse as PromQL and name only metrics signoff exposes."""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser
import yaml

from signoff.api.metrics import Metrics

RULES = Path(__file__).resolve().parents[2] / "manifests" / "prometheus" / "alerts.yaml"


class _Store:
    def __init__(self):
        self.on_commit = []


class _UnitOfWork:
    """Reads answer an empty database (the gauges count nothing)."""

    def read(self, fn):
        from signoff.store.repo import Gauges

        class Repo:
            def gauges(self, now):
                return Gauges({}, {}, 0, 0, 0)

        return fn(Repo())


class _Ctx:
    store = _Store()
    uow = _UnitOfWork()

    @staticmethod
    def clock():
        from datetime import datetime, timezone

        return datetime.now(timezone.utc)


def exposed_names() -> set[str]:
    text = Metrics(_Ctx()).render().decode()
    return {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", text, re.M)}


def test_every_rule_parses_and_names_real_metrics():
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) >= 6
    names = exposed_names()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"Signoff[A-Za-z]+", rule["alert"])
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"]
        promql_parser.parse(rule["expr"])  # raises ValueError naming the problem
        for metric in re.findall(r"\bsignoff_[a-z_]+", rule["expr"]):
            base = re.sub(r"_(bucket|count|sum)$", "", metric)
            assert metric in names or base in names, f"{rule['alert']}: {metric} is not exposed ({sorted(names)})"
    alerts = {r["alert"] for r in rules}
    assert {"SignoffOutboxLagging", "SignoffSlackErrors", "SignoffPendingPastDeadline", "SignoffSweepSlow"} <= alerts


def test_the_docs_show_the_same_rules():
    docs = (RULES.parents[2] / "docs" / "operations.md").read_text()
    assert "manifests/prometheus/alerts.yaml" in docs
