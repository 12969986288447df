"""Prometheus metrics, one registry per app (no global state).

With ``serve --workers N`` every worker writes its counters and histograms to files in
``PROMETHEUS_MULTIPROC_DIR`` (the supervisor makes the directory), and a scrape, whichever
worker answers it, adds up all of them: the figures are the service's, not one worker's.
Gauges are read from the database at scrape time, so they are exact in either mode.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from signoff.store.db import Committed
from signoff.usecases.ports import Context

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STATUSES = ("pending", "approved", "rejected", "expired", "cancelled", "executing", "succeeded", "failed")
DECIDED = {
    "request.approved": "approved",
    "request.rejected": "rejected",
    "request.expired": "expired",
    "request.cancelled": "cancelled",
}

# seconds: a click within a minute … a request left to its 24 h timeout
DECISION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10)
SWEEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


def multiprocess_dir() -> str | None:
    path = os.environ.get(MULTIPROC_ENV, "").strip()
    return path or None


class _DatabaseGauges:
    """Requests by status and by workflow while pending, and the outbox's depth: read from the
    database at scrape time (exact whichever process answers)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def collect(self) -> Iterable[GaugeMetricFamily]:
        now = self.ctx.clock()
        g = self.ctx.uow.read(lambda repo: repo.gauges(now))
        by_status = GaugeMetricFamily("signoff_requests", "Requests by status", labels=["status"])
        for status in STATUSES:
            by_status.add_metric([status], g.by_status.get(status, 0))
        yield by_status
        by_workflow = GaugeMetricFamily(
            "signoff_pending_requests", "Requests awaiting a decision, by workflow", labels=["workflow"]
        )
        for workflow, n in sorted(g.pending_by_workflow.items()):
            by_workflow.add_metric([workflow], n)
        yield by_workflow
        # The sweep expires a request within a second of its deadline: a count that stays
        # above zero means no replica is sweeping.
        yield GaugeMetricFamily("signoff_requests_overdue", "Pending requests past their deadline", value=g.overdue)
        yield GaugeMetricFamily("signoff_outbox_pending", "Side effects not yet delivered", value=g.outbox_pending)
        yield GaugeMetricFamily("signoff_outbox_dead", "Side effects given up", value=g.outbox_dead)


class Metrics:
    """The counters and histograms of one process, and its ``/metrics`` text."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.registry = CollectorRegistry()
        r = self.registry
        self.submitted = Counter("signoff_requests_submitted", "Requests submitted by agents", ["workflow"], registry=r)
        self.outcomes = Counter("signoff_outcomes_reported", "Outcomes reported by executors", ["status"], registry=r)
        self.http_errors = Counter("signoff_http_errors", "HTTP error answers", ["status"], registry=r)
        self.auth_refused = Counter(
            "signoff_auth_refused", "Agent authentications refused, by reason", ["reason"], registry=r
        )
        self.exceptions = Counter(
            "signoff_exceptions_raised", "Exceptions raised for security review, by kind", ["kind"], registry=r
        )
        self.slack_ratelimited = Counter(
            "signoff_slack_ratelimited", "Slack answers of 429, by method", ["method"], registry=r
        )
        self.time_to_decision = Histogram(
            "signoff_time_to_decision_seconds",
            "From submission to approved, rejected, expired or cancelled",
            ["workflow", "outcome"],
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.delivery_lag = Histogram(
            "signoff_outbox_delivery_lag_seconds",
            "From a side effect's commit to its delivery",
            ["kind"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.slack_calls = Histogram(
            "signoff_slack_call_seconds",
            "Slack Web API calls, by method and outcome (ok, error, ratelimited, http_error, unreachable)",
            ["method", "outcome"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.sweep_seconds = Histogram(
            "signoff_sweep_seconds", "Duration of one deadline sweep", buckets=SWEEP_BUCKETS, registry=r
        )
        self._gauges = _DatabaseGauges(ctx)
        if multiprocess_dir() is None:
            self.registry.register(self._gauges)
        ctx.store.on_commit.append(self.committed)

    # -- observations ------------------------------------------------------------------
    def committed(self, events: list[Committed]) -> None:
        """Called by the store after each commit with the evidence events it wrote."""
        for e in events:
            outcome = DECIDED.get(e.type)
            if outcome is not None and e.submitted_at is not None:
                seconds = (_aware(e.at) - _aware(e.submitted_at)).total_seconds()
                self.time_to_decision.labels(workflow=e.workflow or "", outcome=outcome).observe(max(0.0, seconds))
            elif e.type == "exception.raised":
                self.exceptions.labels(kind=e.kind or "unknown").inc()

    def slack_call(self, method: str, outcome: str, seconds: float) -> None:
        self.slack_calls.labels(method=method, outcome=outcome).observe(seconds)
        if outcome == "ratelimited":
            self.slack_ratelimited.labels(method=method).inc()

    def delivered(self, kind: str, created_at: datetime | None, now: datetime) -> None:
        if created_at is not None:
            self.delivery_lag.labels(kind=kind).observe(max(0.0, (_aware(now) - _aware(created_at)).total_seconds()))

    def count_timeout(self) -> None:
        """A client cut off for sending its request too slowly (answered 408)."""
        self.http_errors.labels(status="408").inc()

    # -- exposition ----------------------------------------------------------------------
    def render(self) -> bytes:
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        registry.register(self._gauges)
        return generate_latest(registry)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)
