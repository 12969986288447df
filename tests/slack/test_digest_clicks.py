"""A click on a digest's button decides that request only, through signed requests into
``POST /slack/events``; the digest is then updated in place (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from signoff.server import build_service
from signoff.store.repo import Repo
from signoff.usecases.submit import submit
from support import BASIC_YAML, FakeClock, block_actions, runtime, slack_form, submission, wait_until

SECRET = "digest-signing-secret"


def _actions(message: dict) -> list[dict]:
    return [e for b in message.get("blocks") or [] if b["type"] == "actions" for e in b["elements"]]


@pytest.mark.timeout(120)
def test_a_click_in_a_digest_decides_that_request_only(db_url, monkeypatch, fake_slack):
    clock = FakeClock()
    rt = runtime(
        db_url,
        BASIC_YAML,
        clock=clock,
        monkeypatch=monkeypatch,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SECRET,
        SIGNOFF_SLACK_API_URL=fake_slack.url,
    )
    service = build_service(rt)
    client = TestClient(service.app, raise_server_exceptions=False)
    status = lambda rid: rt.store.read(lambda s: Repo(s).get(rid).status)  # noqa: E731

    def deliver_until(done) -> None:
        for _ in range(400):
            if done():
                return
            if not service.dispatcher.run_once():
                clock.advance(seconds=0.25)
        raise AssertionError("not delivered")

    def digests() -> list[dict]:
        return [
            m
            for m in fake_slack.messages("C0APPROVALS")
            if ((m.get("metadata") or {}).get("event_payload") or {}).get("digest_id")
        ]

    try:
        rids = [
            submit(rt.context, agent_id="deploy-bot", body=submission(title=f"Restart #{i}")).request["id"]
            for i in range(15)
        ]
        deliver_until(
            lambda: (
                digests()
                and all(any(rid in str(m.get("blocks")) for m in fake_slack.messages("C0APPROVALS")) for rid in rids)
            )
        )
        digest = digests()[0]
        members = [e["value"] for e in _actions(digest) if e["action_id"] == "signoff.approve"]
        assert len(members) >= 2
        chosen = members[1]
        block_id = next(
            b["block_id"]
            for b in digest["blocks"]
            if b["type"] == "actions" and any(e["value"] == chosen for e in b["elements"])
        )
        body, headers = slack_form(
            {
                "payload": json.dumps(
                    block_actions(
                        chosen, "U0OWNER", "signoff.approve", channel="C0APPROVALS", ts=digest["ts"], block_id=block_id
                    )
                )
            },
            SECRET,
        )
        assert client.post("/slack/events", content=body, headers=headers).status_code == 200
        wait_until(lambda: status(chosen) == "approved", 10, "the clicked request approved")
        assert [status(r) for r in members if r != chosen] == ["pending"] * (len(members) - 1)
        assert all(status(r) == "pending" for r in rids if r != chosen)
        (by,) = rt.store.read(lambda s: [e.actor for e in Repo(s).events(chosen) if e.type == "request.approved"])
        assert by == "U0OWNER"

        deliver_until(lambda: fake_slack.message("C0APPROVALS", digest["ts"]).get("edited"))
        live = {e["value"] for e in _actions(fake_slack.message("C0APPROVALS", digest["ts"]))}
        assert live == set(members) - {chosen}
        # an unsigned click on the same button changes nothing
        body, _headers = slack_form({"payload": json.dumps(block_actions(members[0], "U0OWNER"))}, SECRET)
        assert (
            client.post(
                "/slack/events", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
            ).status_code
            == 401
        )
        assert status(members[0]) == "pending"
    finally:
        service.dispatcher.pool.shutdown()
        rt.store.dispose()
