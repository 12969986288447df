"""Prometheus metrics, one registry per app (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from sqlalchemy import func, select

from signoff.store.tables import OutboxRow, RequestRow
from signoff.usecases.ports import Context


class Metrics:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.registry = CollectorRegistry()
        self.submitted = Counter("signoff_requests_submitted", "Requests submitted by agents", ["workflow"],
                                 registry=self.registry)
        self.outcomes = Counter("signoff_outcomes_reported", "Outcomes reported by executors", ["status"],
                                registry=self.registry)
        self.http_errors = Counter("signoff_http_errors", "HTTP error answers", ["status"], registry=self.registry)
        self.by_status = Gauge("signoff_requests", "Requests by status", ["status"], registry=self.registry)
        self.outbox = Gauge("signoff_outbox_pending", "Side effects not yet delivered", registry=self.registry)
        self.outbox_dead = Gauge("signoff_outbox_dead", "Side effects given up", registry=self.registry)

    def render(self) -> bytes:
        def read(session):
            counts = dict(session.execute(select(RequestRow.status, func.count()).group_by(RequestRow.status)).all())
            pending = session.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.state == "pending"))
            dead = session.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.state == "dead"))
            return counts, pending, dead

        counts, pending, dead = self.ctx.store.read(read)
        for status in ("pending", "approved", "rejected", "expired", "cancelled", "executing", "succeeded", "failed"):
            self.by_status.labels(status=status).set(counts.get(status, 0))
        self.outbox.set(pending or 0)
        self.outbox_dead.set(dead or 0)
        return generate_latest(self.registry)
