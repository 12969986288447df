"""The metrics decisions, expiries, exceptions and a scrape produce (SQLite and PostgreSQL)."""

from __future__ import annotations

import re

import pytest

from signoff.api.metrics import Metrics
from signoff.usecases.decide import decide
from signoff.usecases.submit import submit
from signoff.usecases.sweep import sweep
from support import runtime, submission


def sample(text: str, name: str, labels: str) -> float:
    m = re.search(re.escape(name) + r"\{" + labels + r"\} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name}{{{labels}}} not in:\n{text}"
    return float(m.group(1))


@pytest.fixture
def rt(db_url, monkeypatch, clock):
    r = runtime(db_url, clock=clock, monkeypatch=monkeypatch)
    yield r
    r.store.dispose()


def test_decisions_expiries_and_exceptions_are_observed_once_committed(rt, clock):
    metrics = Metrics(rt.context)
    ctx = rt.context
    approved = submit(ctx, agent_id="deploy-bot", body=submission()).request["id"]
    rejected = submit(ctx, agent_id="deploy-bot", body=submission()).request["id"]
    submit(ctx, agent_id="deploy-bot", body=submission())  # left to expire
    clock.advance(seconds=90)
    assert decide(ctx, request_id=approved, user="U0OWNER", decision="approve").status == "approved"
    assert decide(ctx, request_id=rejected, user="U0OWNER", decision="reject").status == "rejected"
    decide(ctx, request_id=approved, user="U0OWNER", decision="approve")  # a repeat: no second observation
    clock.advance(hours=2)
    sweep(ctx)

    text = metrics.render().decode()
    wf = rt.context.config().workflows[0].id
    assert sample(text, "signoff_time_to_decision_seconds_count", f'outcome="approved",workflow="{wf}"') == 1
    assert sample(text, "signoff_time_to_decision_seconds_sum", f'outcome="approved",workflow="{wf}"') == 90
    assert (
        sample(text, "signoff_time_to_decision_seconds_bucket", f'le="120.0",outcome="approved",workflow="{wf}"') == 1
    )
    assert sample(text, "signoff_time_to_decision_seconds_bucket", f'le="60.0",outcome="approved",workflow="{wf}"') == 0
    assert sample(text, "signoff_time_to_decision_seconds_count", f'outcome="rejected",workflow="{wf}"') == 1
    assert sample(text, "signoff_time_to_decision_seconds_count", f'outcome="expired",workflow="{wf}"') == 1
    assert sample(text, "signoff_exceptions_raised_total", 'kind="rejected"') == 1
    assert sample(text, "signoff_exceptions_raised_total", 'kind="expired"') == 1
    assert sample(text, "signoff_requests", 'status="approved"') == 1
    assert "signoff_pending_requests{" not in text  # none pending any more


def test_pending_by_workflow_gauge(rt):
    metrics = Metrics(rt.context)
    for _ in range(3):
        submit(rt.context, agent_id="deploy-bot", body=submission())
    wf = rt.context.config().workflows[0].id
    assert sample(metrics.render().decode(), "signoff_pending_requests", f'workflow="{wf}"') == 3
