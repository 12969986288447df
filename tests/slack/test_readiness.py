"""`/readyz` knows Slack: not ready while Slack refuses the bot token; ready (and saying so)
while Slack is merely unreachable, because the outbox keeps what it owes."""

from __future__ import annotations

from fastapi.testclient import TestClient

from signoff.server import build_service
from signoff.slack.app import web_client
from signoff.slack.readiness import SlackReadiness
from signoff.usecases.ports import system_clock
from support import runtime


class Ticks:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_refused_token_is_not_ready_and_the_answer_is_cached(fake_slack):
    clock = Ticks()
    probe = SlackReadiness(web_client("xoxb-good", fake_slack.url), clock=clock)
    assert probe.check()["status"] == "ok" and probe.ready
    probe.check()
    assert len(fake_slack.calls_to("auth.test")) == 1, "cached: one auth.test a minute at most"

    fake_slack.refuse_token("xoxb-good")
    clock.t = 59
    assert probe.ready, "still the cached answer"
    clock.t = 60
    answer = probe.check()
    assert answer == {"status": "refused", "reason": "invalid_auth"} and not probe.ready
    assert len(fake_slack.calls_to("auth.test")) == 2

    fake_slack.refuse_token("xoxb-good", refused=False)
    clock.t = 70  # a refusal is asked again sooner, so a fixed token is seen within seconds
    assert probe.check()["status"] == "ok"


def test_an_unreachable_slack_is_reported_but_stays_ready(fake_slack):
    probe = SlackReadiness(web_client("xoxb-good", fake_slack.url), clock=Ticks())
    fake_slack.set_down()
    answer = probe.check()
    assert answer["status"] == "unreachable" and probe.ready


def test_readyz_of_the_service_reports_slack(sqlite_url, monkeypatch, fake_slack):
    rt = runtime(
        sqlite_url,
        clock=system_clock,
        monkeypatch=monkeypatch,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET="s3cret",
        SIGNOFF_SLACK_API_URL=fake_slack.url,
    )
    service = build_service(rt)
    try:
        client = TestClient(service.app, raise_server_exceptions=False)
        r = client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["slack"]["status"] == "ok" and r.json()["database"]["status"] == "ok"

        fake_slack.refuse_token("xoxb-test")
        service_probe = SlackReadiness(web_client("xoxb-test", fake_slack.url))  # no cache to wait out
        client = TestClient(build_service(rt).app, raise_server_exceptions=False)
        r = client.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "unavailable" and body["slack"] == {"status": "refused", "reason": "invalid_auth"}
        assert "token is refused" in body["reason"] and "xoxb" not in r.text
        assert not service_probe.ready
    finally:
        rt.store.dispose()
