"""The runtime-policy buttons through ``POST /slack/events``: "Revoke" on an automatic
approval and "Roll back" after an outcome. Signed like Slack signs; a fake Slack Web API
on loopback; Bolt acknowledges first, so tests poll for the effect."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from signoff.server import build_service
from signoff.store.repo import Repo
from signoff.usecases import agent_ops
from signoff.usecases.decide import decide
from signoff.usecases.outcome import record_outcome
from signoff.usecases.submit import submit
from support import DEPLOY_BOT, ROUTING, FakeClock, block_actions, runtime, slack_form, submission, wait_until

SECRET = "policy-buttons-signing-secret"

YAML = f"""
agents:
{DEPLOY_BOT}\
workflows:
  - id: prod-restart
{ROUTING}\
    agents: [deploy-bot]
    timeout: 30m
    rules:
      - name: routine-restarts
        match:
          action_type: service.restart
          risk: [low]
        auto_approve:
          limit: 3 per 1h
"""


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

    def click(self, rid: str, user: str, action: str):
        payload = block_actions(
            rid, user, action, block_id="signoff.policy", response_url=self.fake.url + "response_url"
        )
        body, headers = slack_form({"payload": json.dumps(payload)}, SECRET)
        r = self.client.post("/slack/events", content=body, headers=headers)
        assert r.status_code == 200, r.text

    def row(self, rid: str):
        return self.rt.store.read(lambda s: _plain(Repo(s).get(rid)))

    def rollbacks(self, rid: str) -> list[str]:
        return self.rt.store.read(lambda s: [r.id for r in Repo(s).rollbacks_of(rid)])

    def events(self, rid: str, type_: str) -> list:
        return self.rt.store.read(lambda s: [(e.actor, e.data) for e in Repo(s).events(rid) if e.type == type_])

    def close(self):
        self.client.close()
        self.service.dispatcher.stop()
        self.rt.store.dispose()


def _plain(row):
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


@pytest.fixture
def slack(db_url, monkeypatch, fake_slack):
    s = Slack(db_url, monkeypatch, fake_slack)
    yield s
    s.close()


def test_revoke_button_withdraws_an_automatic_approval(slack):
    rid = submit(slack.ctx, agent_id="deploy-bot", body=submission(risk="low")).request["id"]
    assert slack.row(rid)["status"] == "approved" and slack.row(rid)["grant_token"]
    slack.click(rid, "U0STRANGER", "signoff.revoke")
    wait_until(lambda: slack.events(rid, "revoke.refused"), what="the refused click")
    assert slack.row(rid)["status"] == "approved"
    slack.click(rid, "U0OWNER", "signoff.revoke")
    wait_until(lambda: slack.row(rid)["status"] == "rejected", what="the revoke")
    assert slack.row(rid)["grant_token"] is None
    assert slack.events(rid, "grant.revoked")[0][0] == "U0OWNER"


def test_roll_back_button_creates_a_linked_request(slack):
    plan = {"description": "start v41 again", "action": {"type": "service.start", "target": "checkout-api"}}
    rid = submit(slack.ctx, agent_id="deploy-bot", body=submission(risk="high", rollback=plan)).request["id"]
    decide(slack.ctx, request_id=rid, user="U0OWNER", decision="approve")
    agent_ops.get_request(slack.ctx, agent_id="deploy-bot", request_id=rid)
    record_outcome(slack.ctx, agent_id="deploy-bot", request_id=rid, body={"status": "failed"})
    slack.click(rid, "U0OWNER", "signoff.rollback")
    [new] = wait_until(lambda: slack.rollbacks(rid), what="the rollback request")
    row = slack.row(new)
    assert row["rollback_of"] == rid and row["action"] == plan["action"] and row["status"] == "pending"
    assert row["submitted_by"] == row["executor"] == "deploy-bot"
    slack.click(rid, "U0OWNER", "signoff.rollback")  # a double click makes no second request
    wait_until(lambda: len(slack.events(rid, "rollback.refused")) == 1, what="the repeated click")
    assert slack.rollbacks(rid) == [new]
