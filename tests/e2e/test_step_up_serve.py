"""Step-up against ``signoff serve`` as a process: the approver's browser (httpx, following
redirects, keeping cookies) goes from the Approve link in the Slack message to the
OpenID Connect provider of fakes.oidc and back; the approval is recorded as the Slack user
the provider's email names, and every copy of the message is updated. Then the same
browser replays the callback, and a second browser tries it: both refused, recorded. On a
workflow that also asks for a typed confirmation, the callback answers the form asking for
the target, and the form's post approves."""

from __future__ import annotations

import contextlib
import re
from urllib.parse import urljoin

import httpx

from e2e.harness import Serve, exported_events, serve_env, submit, top_level_posts
from fakes.oidc import CLIENT_ID, CLIENT_SECRET, FakeIdP
from fakes.slack_api import FakeSlack
from support import DEPLOY_BOT, ROUTING, wait_until


def yaml(issuer: str) -> str:
    return f"""
agents:
{DEPLOY_BOT}\
workflows:
  - id: guarded
{ROUTING}\
    approvers: [U0OWNER, U0SECOND]
    agents: [deploy-bot]
    timeout: 10m
    step_up:
      issuer: {issuer}
      client_id: {CLIENT_ID}
      client_secret_env: STEP_UP_CLIENT_SECRET
      require_amr: [mfa]
      max_age: 5m
  - id: typed
{ROUTING}\
    approvers: [U0OWNER]
    agents: [deploy-bot]
    timeout: 10m
    confirm: typed
    step_up: {{issuer: {issuer}, client_id: {CLIENT_ID}, client_secret_env: STEP_UP_CLIENT_SECRET}}
"""


def approve_url(post) -> str:
    for block in post.params["blocks"]:
        for element in block.get("elements") or []:
            if element.get("action_id") == "signoff.step_up":
                return element["url"]
    raise AssertionError("no step-up link")


@contextlib.contextmanager
def _served(tmp_path, db_url, name: str):
    """``signoff serve`` on the step-up workflow file, with a Slack stand-in and an identity
    provider: (server, slack, idp, env); stopped afterwards."""
    idp = FakeIdP()
    config = tmp_path / "signoff.yaml"
    config.write_text(yaml(idp.issuer))
    with FakeSlack() as slack:
        slack.emails["owner@example.com"] = "U0OWNER"
        env = serve_env(db_url=db_url, slack_url=slack.url, config=config, STEP_UP_CLIENT_SECRET=CLIENT_SECRET)
        server = Serve(tmp_path, env, name)
        env["SIGNOFF_PUBLIC_URL"] = server.url
        try:
            server.start()
            yield server, slack, idp, env
        finally:
            server.stop()
            idp.close()


def _posted(slack):
    """The request's post in the approvals channel, once the outbox has made it."""
    return wait_until(
        lambda: next((c for c in top_level_posts(slack) if c.params["channel"] == "C0APPROVALS"), None),
        15,
        "the request to be posted",
        0.05,
    )


def test_step_up_through_a_browser(tmp_path, db_url):
    with _served(tmp_path, db_url, "step-up") as (server, slack, idp, env):
        rid = submit(server, "guarded", 1)
        post = _posted(slack)
        link = approve_url(post)
        assert link == f"{server.url}/step-up/{rid}"

        with httpx.Client(follow_redirects=True, timeout=10) as browser:
            page = browser.get(link)
            assert page.status_code == 200, page.text
            assert "Approved" in page.text
            assert [str(r.url).split("?")[0] for r in page.history] == [link, idp.url + "/authorize"]
            callback = str(page.url)

            view = server.agent("GET", f"/v1/actions/{rid}", "deploy-bot").json()
            assert view["status"] in ("approved", "executing")
            assert [(d["by"], d["decision"]) for d in view["decisions"]] == [("U0OWNER", "approve")]
            wait_until(
                lambda: any(
                    c.ok
                    and c.params.get("ts") == post.response["ts"]
                    and not any(b.get("type") == "actions" for b in c.params["blocks"])
                    for c in slack.calls_to("chat.update")
                ),
                15,
                "the message to be updated",
                0.05,
            )

            replay = browser.get(callback)
            assert replay.status_code == 400 and "already used" in replay.text
        assert httpx.get(callback, timeout=10).status_code == 400

        events = exported_events(tmp_path, env, rid)
        [decision] = [e for e in events if e["type"] == "decision.recorded"]
        assert decision["actor"] == "U0OWNER"
        assert decision["data"]["step_up"]["issuer"] == idp.issuer
        assert decision["data"]["step_up"]["amr"] == ["pwd", "mfa"]
        assert [e["data"]["code"] for e in events if e["type"] == "step_up.refused"] == ["replayed", "replayed"]


def test_step_up_then_the_typed_confirmation_through_a_browser(tmp_path, db_url):
    with _served(tmp_path, db_url, "step-up-typed") as (server, slack, idp, env):
        rid = submit(server, "typed", 1)
        post = _posted(slack)
        with httpx.Client(follow_redirects=True, timeout=10) as browser:
            form = browser.get(approve_url(post))
            assert form.status_code == 200 and "Confirm approval" in form.text, form.text
            [action] = re.findall(r'<form method="post" action="([^"]+)"', form.text)
            [token] = re.findall(r'name="token" value="([^"]+)"', form.text)
            target = urljoin(str(form.url), action)  # as a browser resolves it
            assert target == f"{server.url}/step-up/confirm"
            assert server.agent("GET", f"/v1/actions/{rid}", "deploy-bot").json()["status"] == "pending"

            wrong = browser.post(target, data={"token": token, "typed": "checkout"})
            assert wrong.status_code == 422 and "That is not the target" in wrong.text
            done = browser.post(target, data={"token": token, "typed": "checkout-api"})
            assert done.status_code == 200 and "Approved" in done.text, done.text

        view = server.agent("GET", f"/v1/actions/{rid}", "deploy-bot").json()
        assert view["status"] in ("approved", "executing")
        assert [(d["by"], d["decision"]) for d in view["decisions"]] == [("U0OWNER", "approve")]
        events = exported_events(tmp_path, env, rid)
        [refused] = [e for e in events if e["type"] == "confirmation.refused"]
        assert refused["actor"] == "U0OWNER" and refused["data"]["typed"] == "checkout"
        [decision] = [e for e in events if e["type"] == "decision.recorded"]
        assert decision["data"]["confirmed"] == "typed target"
        assert decision["data"]["step_up"]["issuer"] == idp.issuer
