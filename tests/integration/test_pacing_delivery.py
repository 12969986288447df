"""Delivery against a Slack that enforces its rate limits: paced, every message posted once,
(almost) no 429s; without pacing the same burst meets a wall of 429s."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from fakes.slack_api import FakeSlack
from signoff.demo.slack_standin import SlackLimits
from signoff.outbox.dispatcher import Dispatcher
from signoff.slack.app import web_client
from signoff.slack.delivery import SlackDelivery
from signoff.slack.pacing import Pacer
from signoff.store.tables import OutboxRow
from signoff.usecases.ports import system_clock
from signoff.usecases.submit import submit
from support import runtime, submission, wait_until

N = 6


def _run(sqlite_url, monkeypatch, paced: bool):
    rt = runtime(sqlite_url, clock=system_clock, monkeypatch=monkeypatch)
    with FakeSlack() as fake:
        fake.limits = SlackLimits()
        pacer = Pacer(clock=time.monotonic) if paced else None
        dispatcher = Dispatcher(
            rt.context, SlackDelivery(rt.context, web_client("xoxb-t", fake.url), pacer).handlers(), workers=4
        )
        try:
            for i in range(N):
                submit(rt.context, agent_id="deploy-bot", body=submission(title=f"burst {i}"))
            dispatcher.start(idle_interval=0.05)
            wait_until(lambda: len([c for c in fake.calls_to("chat.postMessage") if c.ok]) >= N, 20, "all posted")
            # every job done: no call to Slack is left to come
            wait_until(
                lambda: (
                    not rt.store.read(
                        lambda s: s.scalar(
                            select(func.count()).select_from(OutboxRow).where(OutboxRow.state == "pending")
                        )
                    )
                ),
                20,
                "the outbox done",
            )
            ok = [c for c in fake.calls_to("chat.postMessage") if c.ok]
            limited = [c for c in fake.calls_to("chat.postMessage") if c.status == 429]
            return ok, limited
        finally:
            dispatcher.stop()
            rt.store.dispose()


@pytest.mark.timeout(60)
def test_paced_delivery_meets_no_wall_of_429s(sqlite_url, monkeypatch):
    ok, limited = _run(sqlite_url, monkeypatch, paced=True)
    assert len(ok) == N
    assert len(limited) <= 1, f"{len(limited)} answers of 429"
    spread = ok[-1].at - ok[0].at
    assert spread >= N - 3, "one a second after a burst of two"


@pytest.mark.timeout(60)
def test_without_pacing_the_same_burst_is_refused_and_still_delivered(sqlite_url, monkeypatch):
    ok, limited = _run(sqlite_url, monkeypatch, paced=False)
    assert len(ok) == N  # Retry-After honoured: late, but nothing lost or doubled
    assert len(limited) >= N - 2
