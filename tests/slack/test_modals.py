"""Typed confirmation for critical requests and "Reject with reason", through signed requests
into ``POST /slack/events`` against a fake Slack Web API (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from signoff.server import build_service
from signoff.store.repo import Repo
from signoff.usecases import agent_ops
from signoff.usecases.decide import decide
from signoff.usecases.submit import submit
from support import DEPLOY_BOT, ROUTING, FakeClock, block_actions, runtime, slack_form, submission, wait_until

SECRET = "modal-signing-secret"

YAML = f"""
agents:
{DEPLOY_BOT}\
workflows:
  - id: prod-restart
{ROUTING}\
    agents: [deploy-bot]
    timeout: 30m
    rules:
      - name: db-always-typed
        match:
          action_type: "db.*"
        confirm: typed
      - name: drills-need-no-typing
        match:
          action_type: drill.run
        confirm: none
"""
CRITICAL = {"type": "service.restart", "target": "checkout-api", "environment": "production"}


class Slack:
    def __init__(self, db_url, monkeypatch, fake):
        self.clock = FakeClock()
        self.rt = runtime(
            db_url,
            YAML,
            clock=self.clock,
            monkeypatch=monkeypatch,
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET=SECRET,
            SIGNOFF_SLACK_API_URL=fake.url,
        )
        self.ctx = self.rt.context
        self.fake = fake
        self.service = build_service(self.rt)
        self.client = TestClient(self.service.app, raise_server_exceptions=False)

    def submit(self, **over) -> str:
        body = submission(
            **{
                "risk": "critical",
                "action": CRITICAL,
                "rollback": {"description": "restart the previous build"},
                **over,
            }
        )
        return submit(self.ctx, agent_id="deploy-bot", body=body).request["id"]

    def post(self, payload: dict):
        body, headers = slack_form({"payload": json.dumps(payload)}, SECRET)
        r = self.client.post("/slack/events", content=body, headers=headers)
        assert r.status_code == 200, r.text
        return r

    def click(self, rid: str, user: str, action: str = "signoff.approve"):
        return self.post(block_actions(rid, user, action))

    def submit_view(self, callback_id: str, rid: str, user: str, field: str, value: str):
        return self.post(
            {
                "type": "view_submission",
                "team": {"id": "T0FAKE"},
                "user": {"id": user, "team_id": "T0FAKE"},
                "api_app_id": "A0SIGNOFF",
                "trigger_id": "9.9.9",
                "view": {
                    "id": "V1",
                    "type": "modal",
                    "callback_id": callback_id,
                    "private_metadata": rid,
                    "team_id": "T0FAKE",
                    "state": {"values": {field: {field: {"type": "plain_text_input", "value": value}}}},
                },
            }
        )

    def status(self, rid: str) -> str:
        return self.rt.store.read(lambda s: Repo(s).get(rid).status)

    def events(self, rid: str, type_: str) -> list:
        return self.rt.store.read(lambda s: [(e.actor, e.data) for e in Repo(s).events(rid) if e.type == type_])

    def view(self, rid: str) -> dict:
        return agent_ops.get_request(self.ctx, agent_id="deploy-bot", request_id=rid)

    def deliver(self):
        for _ in range(50):
            if not self.service.dispatcher.run_once():
                return


@pytest.fixture
def slack(db_url, monkeypatch, fake_slack):
    s = Slack(db_url, monkeypatch, fake_slack)
    yield s
    s.client.close()
    s.rt.store.dispose()


def test_approve_on_a_critical_request_opens_the_typed_confirmation(slack):
    rid = slack.submit()
    slack.deliver()
    (post,) = [c for c in slack.fake.calls_to("chat.postMessage") if c.ok]
    elements = [e for b in post.params["blocks"] if b["type"] == "actions" for e in b["elements"]]
    approve = next(e for e in elements if e["action_id"] == "signoff.approve")
    assert "confirm" not in approve, "the modal replaces Slack's confirm dialog"
    assert {e["action_id"] for e in elements} == {"signoff.approve", "signoff.reject", "signoff.reject_reason"}

    slack.click(rid, "U0OWNER")
    (opened,) = slack.fake.wait_for("views.open", 1)
    view = opened.params["view"]
    assert view["callback_id"] == "signoff.confirm" and view["private_metadata"] == rid
    assert "checkout-api" in json.dumps(view["blocks"])
    assert slack.status(rid) == "pending" and slack.events(rid, "decision.recorded") == []

    wrong = slack.submit_view("signoff.confirm", rid, "U0OWNER", "confirm", "checkout-ap")
    answer = wrong.json()
    assert answer["response_action"] == "errors" and "confirm" in answer["errors"]
    wait_until(lambda: slack.events(rid, "confirmation.refused"), what="the refused confirmation")
    ((actor, data),) = slack.events(rid, "confirmation.refused")
    assert actor == "U0OWNER" and data["typed"] == "checkout-ap"
    assert slack.status(rid) == "pending" and slack.view(rid)["decisions"] == []

    right = slack.submit_view("signoff.confirm", rid, "U0OWNER", "confirm", "checkout-api")
    assert not right.content or "response_action" not in right.json()
    wait_until(lambda: slack.status(rid) == "approved", what="the approval")
    (by,) = [d["by"] for d in slack.view(rid)["decisions"]]
    assert by == "U0OWNER"


def test_a_plain_approve_never_approves_a_request_that_asks_for_typing(slack):
    rid = slack.submit()
    result = decide(slack.ctx, request_id=rid, user="U0OWNER", decision="approve")
    assert result.outcome == "refused" and slack.status(rid) == "pending"
    result = decide(slack.ctx, request_id=rid, user="U0OWNER", decision="approve", confirmed_target=" checkout-api")
    assert result.outcome == "refused", "exactly the target, nothing else"
    assert len(slack.events(rid, "confirmation.refused")) == 2


def test_the_typed_confirmation_follows_the_policy(slack):
    typed = slack.submit(risk="medium", action={"type": "db.migrate", "target": "orders"})
    plain = slack.submit(action={"type": "drill.run", "target": "game-day"})
    low = slack.submit(risk="low", action={"type": "service.restart", "target": "x"})
    assert decide(slack.ctx, request_id=plain, user="U0OWNER", decision="approve").outcome == "approved"
    assert decide(slack.ctx, request_id=low, user="U0OWNER", decision="approve").outcome == "approved"
    assert decide(slack.ctx, request_id=typed, user="U0OWNER", decision="approve").outcome == "refused"
    assert (
        decide(slack.ctx, request_id=typed, user="U0OWNER", decision="approve", confirmed_target="orders").outcome
        == "approved"
    )


def test_a_refused_approver_typing_correctly_is_still_refused(slack):
    rid = slack.submit()
    slack.submit_view("signoff.confirm", rid, "U0SPONSOR", "confirm", "checkout-api")
    wait_until(lambda: slack.events(rid, "click.refused"), what="the sponsor's refusal")
    assert slack.status(rid) == "pending"


def test_reject_with_a_reason_reaches_the_decision_the_message_the_agent_and_the_evidence(slack):
    from signoff.evidence.export import build_bundle

    rid = slack.submit(risk="medium")
    slack.deliver()
    slack.click(rid, "U0OWNER", "signoff.reject_reason")
    (opened,) = slack.fake.wait_for("views.open", 1)
    view = opened.params["view"]
    assert view["callback_id"] == "signoff.reject_reason" and view["private_metadata"] == rid
    assert slack.status(rid) == "pending"

    slack.submit_view("signoff.reject_reason", rid, "U0OWNER", "reason", "The canary is <@U0ALL> red; wait for 14:00.")
    wait_until(lambda: slack.status(rid) == "rejected", what="the rejection")
    (d,) = slack.view(rid)["decisions"]
    assert d["decision"] == "reject" and d["reason"] == "The canary is <@U0ALL> red; wait for 14:00."
    ((_actor, data),) = slack.events(rid, "decision.recorded")
    assert data["reason"] == d["reason"]
    slack.deliver()
    (update,) = [c for c in slack.fake.calls_to("chat.update") if c.ok][-1:]
    text = json.dumps(update.params["blocks"])
    assert "wait for 14:00" in text and "<@U0ALL>" not in text, "shown, and escaped"
    bundle = build_bundle(slack.rt.store, slack.ctx.keys, rid, slack.clock())
    assert [x.get("reason") for x in bundle["decisions"]] == [d["reason"]]


def test_the_plain_reject_still_rejects_at_once(slack):
    rid = slack.submit(risk="medium")
    slack.click(rid, "U0OWNER", "signoff.reject")
    wait_until(lambda: slack.status(rid) == "rejected", what="the rejection")
    assert "reason" not in slack.view(rid)["decisions"][0]
