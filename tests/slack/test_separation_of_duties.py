"""Separation of duties through chains, and who may see ``/signoff show``, end to end:
agents submit over the signed agent API, people click and type ``/signoff`` through
signed requests into ``POST /slack/events``, against a fake Slack Web API on loopback.
Bolt acknowledges clicks first and works afterwards: tests poll for the effect."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from signoff.server import build_service
from signoff.store.repo import Repo
from signoff.usecases.sweep import sweep
from support import (
    ROUTING,
    FakeClock,
    block_actions,
    dumps,
    runtime,
    signed_headers,
    slack_form,
    slack_signed,
    slash_command,
    submission,
    wait_until,
)

SIGNING = "separation-of-duties-signing-secret"
AGENT_SECRETS = {"BOT_A_SECRET": "a-secret", "BOT_B_SECRET": "b-secret", "BOT_C_SECRET": "c-secret"}
SECRET_OF = {"bot-a": "a-secret", "bot-b": "b-secret", "bot-c": "c-secret"}

YAML = f"""
agents:
  - id: bot-a
    sponsor: U0SPONSOR
    secret_env: BOT_A_SECRET
  - id: bot-b
    sponsor: U0SPB
    secret_env: BOT_B_SECRET
  - id: bot-c
    sponsor: U0SPC
    secret_env: BOT_C_SECRET
workflows:
  - id: prod-restart
{ROUTING}\
    approvers: [U0OWNER, U0SPB, S0REVIEW]
    agents: [bot-a, bot-b, bot-c]
    timeout: 30m
    escalation:
      - after: 10m
        to: [U0ESC, S0ESC]
  - id: solo
{ROUTING}\
    approvers: [U0SPB]
    agents: [bot-a, bot-b]
    timeout: 30m
"""

UNKNOWN = "00000000-0000-0000-0000-000000000000"


class World:
    def __init__(self, db_url, monkeypatch, fake):
        for k, v in AGENT_SECRETS.items():
            monkeypatch.setenv(k, v)
        fake.groups["S0REVIEW"] = ["U0REVIEWER", "U0SPB"]
        fake.groups["S0ESC"] = ["U0ESCGROUP", "U0SPONSOR"]
        self.fake = fake
        self.clock = FakeClock()
        self.rt = runtime(
            db_url,
            YAML,
            clock=self.clock,
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET=SIGNING,
            SIGNOFF_SLACK_API_URL=fake.url,
        )
        self.ctx = self.rt.context
        self.service = build_service(self.rt)
        self.client = TestClient(self.service.app, raise_server_exceptions=False)

    # -- the agent API ----------------------------------------------------------------
    def agent_post(self, agent: str, path: str, body: dict | None):
        data = dumps(body) if body is not None else b""
        return self.client.post(
            path, content=data, headers=signed_headers(agent, SECRET_OF[agent], data, ts=int(self.clock().timestamp()))
        )

    def submit(self, agent: str, **over):
        return self.agent_post(agent, "/v1/actions", submission(**over))

    def submitted(self, agent: str, **over) -> dict:
        r = self.submit(agent, **over)
        assert r.status_code == 201, r.text
        return r.json()

    def cancel(self, agent: str, rid: str):
        r = self.agent_post(agent, f"/v1/actions/{rid}/cancel", None)
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text

    # -- Slack ------------------------------------------------------------------------
    def slack(self, fields: dict):
        body, headers = slack_form(fields, SIGNING)
        return self.client.post("/slack/events", content=body, headers=headers)

    def click(self, rid: str, user: str, action: str = "signoff.approve"):
        r = self.slack({"payload": json.dumps(block_actions(rid, user, action))})
        assert r.status_code == 200, r.text

    def command(self, user: str, text: str):
        r = self.slack(slash_command(user, text, self.fake.url + "response_url"))
        assert r.status_code == 200, r.text
        return r

    # -- reading ----------------------------------------------------------------------
    def status(self, rid: str) -> str:
        return self.rt.store.read(lambda s: Repo(s).get(rid).status)

    def events(self, rid: str, type_: str) -> list[tuple[str, dict]]:
        return self.rt.store.read(lambda s: [(e.actor, e.data) for e in Repo(s).events(rid) if e.type == type_])

    def decisions(self, rid: str) -> list[tuple[str, str]]:
        return self.rt.store.read(lambda s: [(d.by, d.decision) for d in Repo(s).decisions(rid)])

    def refused(self, rid: str, user: str) -> dict:
        """The evidence of ``user``'s refused click (waits for it)."""
        found = wait_until(
            lambda: [d for a, d in self.events(rid, "click.refused") if a == user], what=f"{user}'s refused click"
        )
        return found[-1]

    def close(self):
        self.client.close()
        self.service.dispatcher.stop()
        self.rt.store.dispose()


@pytest.fixture
def w(db_url, monkeypatch, fake_slack):
    world = World(db_url, monkeypatch, fake_slack)
    yield world
    world.close()


@pytest.fixture
def ws(sqlite_url, monkeypatch, fake_slack):
    world = World(sqlite_url, monkeypatch, fake_slack)
    yield world
    world.close()


# --------------------------------------------------------------------------- chains


def test_a_chain_through_a_cancelled_request_cannot_hand_a_step_to_its_agents_sponsor(w):
    # bot-a submits with bot-b as executor, then cancels it.
    first = w.submitted("bot-a", executor="bot-b")
    assert first["sponsor"] == "U0SPONSOR"
    w.cancel("bot-a", first["id"])
    # bot-b may not continue the chain through the cancelled request.
    r = w.submit("bot-b", parent_id=first["id"])
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["fields"] == ["parent_id"] and "parent_id" in err["message"] and "cancelled" in err["message"]


def test_the_sponsor_of_a_steps_agent_may_not_approve_it_whatever_the_chain_sponsor(w):
    # The same chain through a live request: bot-b executes it, so it may continue it...
    first = w.submitted("bot-a", executor="bot-b")
    step = w.submitted("bot-b", parent_id=first["id"])
    assert step["sponsor"] == "U0SPONSOR"  # the chain keeps its human sponsor
    # ...but bot-b's own sponsor, an approver of the workflow, may not approve bot-b's request,
    w.click(step["id"], "U0SPB")
    refused = w.refused(step["id"], "U0SPB")
    assert "sponsor" in refused["reason"] and refused["sponsors"] == ["U0SPB", "U0SPONSOR"]
    # nor may the chain's sponsor (a member of a group that is an escalation target);
    w.clock.advance(minutes=11)
    sweep(w.ctx)
    w.click(step["id"], "U0SPONSOR")
    assert "sponsor" in w.refused(step["id"], "U0SPONSOR")["reason"]
    assert w.status(step["id"]) == "pending" and w.decisions(step["id"]) == []
    # the submitted event records who is set aside,
    [(_, data)] = w.events(step["id"], "request.submitted")
    assert data["sponsors"] == ["U0SPB", "U0SPONSOR"]
    # and bot-b executes the first request too: U0SPB may not approve that one either.
    w.click(first["id"], "U0SPB")
    assert "sponsor" in w.refused(first["id"], "U0SPB")["reason"]
    # Anyone else eligible may: a reviewer (group member), then the owner.
    w.click(step["id"], "U0REVIEWER")
    wait_until(lambda: w.status(step["id"]) == "approved", what="the reviewer's approval")
    assert w.decisions(step["id"]) == [("U0REVIEWER", "approve")]


def test_a_chain_through_a_live_request_of_ones_own_still_works(w):
    root = w.submitted("bot-a")
    # bot-a continues its own chain, executed by bot-b.
    step = w.submitted("bot-a", parent_id=root["id"], executor="bot-b")
    # bot-b continues through the step it executes.
    nxt = w.submitted("bot-b", parent_id=step["id"], executor="bot-b")
    assert (nxt["parent_id"], nxt["sponsor"], nxt["submitted_by"]) == (step["id"], "U0SPONSOR", "bot-b")
    w.click(nxt["id"], "U0OWNER")
    wait_until(lambda: w.status(nxt["id"]) == "approved", what="the owner's approval")
    # On the root, which only bot-a touched, bot-b's sponsor is an ordinary approver.
    w.click(root["id"], "U0SPB")
    wait_until(lambda: w.status(root["id"]) == "approved", what="U0SPB approving bot-a's root")


@pytest.mark.parametrize("how", ["cancelled", "rejected", "expired"])
def test_attaching_through_a_dead_request_is_refused(ws, how):
    parent = ws.submitted("bot-a")["id"]
    if how == "cancelled":
        ws.cancel("bot-a", parent)
    elif how == "rejected":
        ws.click(parent, "U0OWNER", "signoff.reject")
        wait_until(lambda: ws.status(parent) == "rejected", what="the rejection")
    else:
        ws.clock.advance(minutes=31)
        sweep(ws.ctx)
        assert ws.status(parent) == "expired"
    r = ws.submit("bot-a", parent_id=parent)
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "forbidden" and err["fields"] == ["parent_id"]
    assert parent in err["message"] and how in err["message"]


def test_attaching_through_someone_elses_request_is_refused(ws):
    root = ws.submitted("bot-a")
    step = ws.submitted("bot-a", parent_id=root["id"], executor="bot-b")
    # bot-c is not on the chain at all;
    r = ws.submit("bot-c", parent_id=root["id"])
    assert r.status_code == 403 and r.json()["error"]["fields"] == ["parent_id"], r.text
    assert root["id"] in r.json()["error"]["message"]
    # bot-b is on the chain, but may attach only through the step it executes, not the root.
    r = ws.submit("bot-b", parent_id=root["id"])
    assert r.status_code == 403 and r.json()["error"]["fields"] == ["parent_id"], r.text
    assert ws.submitted("bot-b", parent_id=step["id"])["parent_id"] == step["id"]
    # an unknown parent is still unknown
    assert ws.submit("bot-a", parent_id=UNKNOWN).status_code == 404


def test_a_step_nobody_could_approve_is_refused_at_submission(ws):
    # solo: U0SPB is the only approver and there is no escalation.
    r = ws.submit("bot-b", workflow="solo")
    assert r.status_code == 403, r.text
    assert "could never be approved" in r.json()["error"]["message"] and "U0SPB" in r.json()["error"]["message"]
    root = ws.submitted("bot-a", workflow="solo")  # U0SPB may approve bot-a's request
    # ...but not a step bot-b executes, nor one on a chain that bot-b already joined.
    r = ws.submit("bot-a", workflow="solo", parent_id=root["id"], executor="bot-b")
    assert r.status_code == 403 and "could never be approved" in r.json()["error"]["message"], r.text
    step = ws.submitted("bot-a", parent_id=root["id"], executor="bot-b")  # prod-restart: others may approve
    r = ws.submit("bot-a", workflow="solo", parent_id=step["id"])
    assert r.status_code == 403 and "could never be approved" in r.json()["error"]["message"], r.text


def test_pending_list_and_app_home_leave_out_what_a_sponsor_cannot_approve(ws):
    first = ws.submitted("bot-a", executor="bot-b", title="First step")
    step = ws.submitted("bot-b", parent_id=first["id"], title="Second step")
    plain = ws.submitted("bot-a", title="Plain request")
    text = ws.command("U0SPB", "pending").json()["text"]  # an approver, and a member of S0REVIEW
    assert plain["id"] in text and first["id"] not in text and step["id"] not in text
    text = ws.command("U0REVIEWER", "pending").json()["text"]
    assert all(r["id"] in text for r in (first, step, plain))
    # the App Home shows the same list
    body = json.dumps(
        {
            "type": "event_callback",
            "team_id": "T0FAKE",
            "event_id": "Ev0HOMESPB",
            "event_time": 1,
            "event": {"type": "app_home_opened", "user": "U0SPB", "channel": "D0SPB", "tab": "home"},
        }
    )
    r = ws.client.post(
        "/slack/events",
        content=body.encode(),
        headers={"Content-Type": "application/json", **slack_signed(body.encode(), SIGNING)},
    )
    assert r.status_code == 200
    [publish] = ws.fake.wait_for("views.publish", 1)
    view = json.dumps(publish.params["view"])
    assert "Plain request" in view and "First step" not in view and "Second step" not in view


# --------------------------------------------------------------------------- /signoff show


def test_show_answers_only_the_people_of_the_workflow(ws):
    step_parent = ws.submitted("bot-a", executor="bot-b")
    rid = ws.submitted("bot-b", parent_id=step_parent["id"], title="Restart the secret thing")["id"]

    def show(user: str, ident: str = rid):
        return ws.command(user, f"show {ident}")

    # Anyone else: byte for byte the answer for an unknown id.
    unknown = show("U0STRANGER", UNKNOWN).content
    for stranger in ("U0STRANGER", "U0SPC", "U0OUTSIDER"):
        got = show(stranger).content
        assert got == unknown.replace(UNKNOWN.encode(), rid.encode()), got
        assert b"secret thing" not in got
    people = {
        "U0OWNER": "owner",
        "U0PLAT": "platform owner",
        "U0SEC": "security owner",
        "U0SPB": "approver (user), and the executor's and submitter's sponsor",
        "U0REVIEWER": "member of the approver group S0REVIEW",
        "U0ESC": "escalation target (user)",
        "U0ESCGROUP": "member of the escalation group S0ESC",
        "U0SPONSOR": "the chain's sponsor",
    }
    for user, who in people.items():
        text = show(user).json()["text"]
        assert "Restart the secret thing" in text and rid in text, (user, who, text)
