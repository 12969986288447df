"""Step-up approvals in process: the service as ``signoff serve`` builds it (FastAPI
TestClient as the approver's browser, a fake Slack, the OpenID Connect provider of
fakes.oidc on loopback), on SQLite and PostgreSQL. The browser's two hops are followed by
hand: signoff → the provider (a real HTTP server) → signoff's callback.

Each refusal: an HTML page saying why, a ``step_up.refused`` event, a security exception,
nothing decided."""

from __future__ import annotations

import re
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from fakes.oidc import CLIENT_ID, CLIENT_SECRET, FakeIdP
from fakes.slack_api import FakeSlack
from signoff.api.stepup import cookie_name
from signoff.server import build_service
from signoff.stepup import oidc
from signoff.store.repo import Repo
from signoff.store.tables import RequestRow
from signoff.usecases.submit import submit
from support import DEPLOY_BOT, ROUTING, FakeClock, runtime, submission

SECRET = "step-up-slack-signing-secret"
PUBLIC = "http://127.0.0.1:8080"


def config(issuer: str, *, require_amr: str = "[mfa]", max_age: str = "5m") -> str:
    return f"""
agents:
{DEPLOY_BOT}\
workflows:
  - id: prod-restart
{ROUTING}\
    approvers: [U0OWNER, U0SPONSOR, U0SECOND]
    agents: [deploy-bot]
    timeout: 30m
    step_up:
      issuer: {issuer}
      client_id: {CLIENT_ID}
      client_secret_env: STEP_UP_CLIENT_SECRET
      require_amr: {require_amr}
      max_age: {max_age}
  - id: critical-typed
{ROUTING}\
    approvers: [U0OWNER, U0SECOND]
    agents: [deploy-bot]
    timeout: 30m
    step_up: {{issuer: {issuer}, client_id: {CLIENT_ID}, client_secret_env: STEP_UP_CLIENT_SECRET}}
  - id: plain
{ROUTING}\
    agents: [deploy-bot]
    timeout: 30m
"""


class Stage:
    def __init__(self, db_url: str, monkeypatch, fake: FakeSlack, idp: FakeIdP, clock: FakeClock, **cfg):
        monkeypatch.setenv("STEP_UP_CLIENT_SECRET", CLIENT_SECRET)
        oidc.PROVIDER._cache.clear()  # each test's provider is a new server
        self.fake, self.idp, self.clock = fake, idp, clock
        fake.emails.update(
            {
                "owner@example.com": "U0OWNER",
                "second@example.com": "U0SECOND",
                "sponsor@example.com": "U0SPONSOR",
                "outsider@example.com": "U0OUTSIDER",
            }
        )
        self.rt = runtime(
            db_url,
            config(idp.issuer, **cfg),
            clock=clock,
            monkeypatch=monkeypatch,
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET=SECRET,
            SIGNOFF_SLACK_API_URL=fake.url,
            SIGNOFF_PUBLIC_URL=PUBLIC,
        )
        self.ctx = self.rt.context
        self.service = build_service(self.rt)
        self.browser = TestClient(self.service.app, raise_server_exceptions=False)

    def submit(self, workflow: str = "prod-restart", **over) -> str:
        body = submission(workflow=workflow, **over)
        return submit(self.ctx, agent_id="deploy-bot", body=body).request["id"]

    def deliver(self) -> None:
        for _ in range(100):
            if not self.service.dispatcher.run_once():
                return
        raise AssertionError("outbox not drained")

    # -- the browser ------------------------------------------------------------------------
    def open_link(self, rid: str) -> httpx.Response:
        return self.browser.get(f"/step-up/{rid}", follow_redirects=False)

    def at_provider(self, location: str) -> str:
        """The provider signs the user in and sends the browser back: the callback's path."""
        assert location.startswith(self.idp.url + "/authorize?"), location
        back = httpx.get(location, follow_redirects=False, timeout=5)
        assert back.status_code == 302, back.text
        url = back.headers["location"]
        assert url.startswith(PUBLIC + "/step-up/callback?"), url
        return url[len(PUBLIC) :]

    def sign_in(self, rid: str) -> httpx.Response:
        """The whole flow: the Approve link, the provider, the callback."""
        first = self.open_link(rid)
        assert first.status_code == 302, first.text
        return self.browser.get(self.at_provider(first.headers["location"]), follow_redirects=False)

    # -- reading ------------------------------------------------------------------------------
    def request(self, rid: str) -> SimpleNamespace:
        def read(session):
            row = Repo(session).get(rid)
            return SimpleNamespace(**{c.key: getattr(row, c.key) for c in RequestRow.__table__.columns})

        return self.rt.store.read(read)

    def events(self, rid: str, type_: str | None = None) -> list:
        evs = self.rt.store.read(lambda s: [(e.type, e.actor, e.data) for e in Repo(s).events(rid)])
        return [e for e in evs if type_ is None or e[0] == type_]

    def decisions(self, rid: str) -> list[tuple[str, str]]:
        return self.rt.store.read(lambda s: [(d.by, d.decision) for d in Repo(s).decisions(rid)])

    def close(self) -> None:
        self.browser.close()
        self.service.dispatcher.stop()
        self.rt.store.dispose()


@pytest.fixture
def idp(clock):
    server = FakeIdP(clock)
    yield server
    server.close()


@pytest.fixture
def stage(db_url, monkeypatch, fake_slack, idp, clock):
    s = Stage(db_url, monkeypatch, fake_slack, idp, clock)
    yield s
    s.close()


def approve_button(message: dict) -> dict:
    for block in message.get("blocks") or []:
        if block.get("type") == "actions":
            for element in block.get("elements") or []:
                if element.get("action_id") in ("signoff.step_up", "signoff.approve"):
                    return element
    raise AssertionError("no approve button")


def assert_refused(stage: Stage, rid: str, resp: httpx.Response, code: str, status: int, words: str) -> tuple:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    assert "Nothing was recorded" in resp.text and words in resp.text, resp.text
    [(_, actor, data)] = stage.events(rid, "step_up.refused")
    assert data["code"] == code
    assert stage.decisions(rid) == []
    req = stage.request(rid)
    assert req.status == "pending"
    assert [e["kind"] for e in req.exceptions] == ["step_up_refused"]
    return actor, data


# -- the happy path ----------------------------------------------------------------------------


def test_approve_after_a_fresh_mfa_sign_in(stage):
    rid = stage.submit()
    stage.deliver()
    [post] = [c for c in stage.fake.calls_to("chat.postMessage") if c.ok]
    button = approve_button(post.params)
    assert button["action_id"] == "signoff.step_up"
    assert button["url"] == f"{PUBLIC}/step-up/{rid}" and button["value"] == rid
    reject = [
        e
        for b in post.params["blocks"]
        if b.get("type") == "actions"
        for e in b["elements"]
        if e["action_id"] == "signoff.reject"
    ]
    assert reject and "url" not in reject[0]  # rejecting stays one click

    first = stage.open_link(rid)
    assert first.status_code == 302
    q = {k: v[0] for k, v in parse_qs(urlsplit(first.headers["location"]).query).items()}
    assert q["response_type"] == "code" and q["client_id"] == CLIENT_ID
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["redirect_uri"] == f"{PUBLIC}/step-up/callback" and q["scope"] == "openid email"
    assert q["state"] and q["nonce"] and q["max_age"] == "300"
    done = stage.browser.get(stage.at_provider(first.headers["location"]), follow_redirects=False)

    assert done.status_code == 200, done.text
    assert "Approved" in done.text
    assert stage.decisions(rid) == [("U0OWNER", "approve")]
    assert stage.request(rid).status == "approved"
    [(_, actor, data)] = stage.events(rid, "decision.recorded")
    assert actor == "U0OWNER"
    assert data["step_up"] == {
        "issuer": stage.idp.issuer,
        "sub": "00u-owner",
        "amr": ["pwd", "mfa"],
        "auth_time": int(stage.clock().timestamp()) - 10,
    }
    token_request = stage.idp.token_requests[-1]
    assert token_request["code_verifier"] and "client_secret" not in token_request  # basic auth
    stage.deliver()
    [update] = [c for c in stage.fake.calls_to("chat.update") if c.ok]
    assert not any(b.get("type") == "actions" for b in update.params["blocks"])


def test_a_plain_approve_click_cannot_bypass_the_step_up(stage):
    from signoff.usecases.decide import decide

    rid = stage.submit()
    result = decide(stage.ctx, request_id=rid, user="U0OWNER", decision="approve", channel="C0APPROVALS")
    assert result.outcome == "refused" and "identity provider" in result.message
    assert stage.decisions(rid) == []
    [(_, actor, data)] = stage.events(rid, "click.refused")
    assert actor == "U0OWNER" and "identity provider" in data["reason"]


def test_reject_stays_one_click(stage):
    from signoff.usecases.decide import decide

    rid = stage.submit()
    result = decide(stage.ctx, request_id=rid, user="U0SECOND", decision="reject", channel="C0APPROVALS")
    assert result.outcome == "rejected"
    assert stage.request(rid).status == "rejected"


# -- typed confirmation after the step-up --------------------------------------------------------

CRITICAL = {"risk": "critical", "rollback": {"description": "restart again"}}
TARGET = "checkout-api"  # the target of support.submission


def form_token(resp: httpx.Response) -> str:
    """The confirmation form's token (its hidden field), checking the form is the one shown."""
    assert resp.headers["content-type"].startswith("text/html")
    assert "Confirm approval" in resp.text and 'action="confirm"' in resp.text, resp.text
    [token] = re.findall(r'name="token" value="([^"]+)"', resp.text)
    return token


def post_confirm(browser: TestClient, token: str, typed: str) -> httpx.Response:
    return browser.post("/step-up/confirm", data={"token": token, "typed": typed}, follow_redirects=False)


def test_a_critical_request_asks_for_its_target_after_the_sign_in(stage):
    rid = stage.submit("critical-typed", **CRITICAL)
    shown = stage.sign_in(rid)
    assert shown.status_code == 200, shown.text
    token = form_token(shown)
    assert f"<code>{TARGET}</code>" in shown.text and "critical risk" in shown.text
    assert "owner@example.com" in shown.text and "Reject in Slack" in shown.text
    assert "frame-ancestors 'none'" in shown.headers["content-security-policy"]
    assert token not in shown.headers.get("location", "") and stage.decisions(rid) == []
    assert stage.events(rid, "step_up.refused") == [] and stage.events(rid, "confirmation.refused") == []
    assert stage.browser.cookies.get(cookie_name(token, "confirm"))  # the browser that signed in, for the post

    done = post_confirm(stage.browser, token, TARGET)
    assert done.status_code == 200 and "Approved" in done.text, done.text
    assert stage.decisions(rid) == [("U0OWNER", "approve")]
    assert stage.request(rid).status == "approved"
    [(_, actor, data)] = stage.events(rid, "decision.recorded")
    assert actor == "U0OWNER" and data["confirmed"] == "typed target"
    assert data["step_up"] == {
        "issuer": stage.idp.issuer,
        "sub": "00u-owner",
        "amr": ["pwd", "mfa"],
        "auth_time": int(stage.clock().timestamp()) - 10,
    }
    assert stage.events(rid, "step_up.refused") == []

    # the same post again (a replay, the back button): refused, recorded, nothing more decided
    replay = post_confirm(stage.browser, token, TARGET)
    assert replay.status_code == 400 and "already used" in replay.text
    [(_, _, data)] = stage.events(rid, "step_up.refused")
    assert data["code"] == "replayed" and data["at"] == "confirmation"
    assert stage.decisions(rid) == [("U0OWNER", "approve")]


def test_a_wrong_text_keeps_the_form_and_is_recorded(stage):
    rid = stage.submit("critical-typed", **CRITICAL)
    token = form_token(stage.sign_in(rid))
    wrong = post_confirm(stage.browser, token, "checkout-api ")
    assert wrong.status_code == 422 and "That is not the target" in wrong.text
    assert form_token(wrong) == token and 'aria-invalid="true"' in wrong.text
    [(_, actor, data)] = stage.events(rid, "confirmation.refused")
    assert actor == "U0OWNER" and data["typed"] == "checkout-api " and data["step_up"]["sub"] == "00u-owner"
    assert stage.decisions(rid) == [] and stage.request(rid).status == "pending"
    assert stage.events(rid, "step_up.refused") == []

    assert post_confirm(stage.browser, token, "").status_code == 422  # empty: another refusal
    assert len(stage.events(rid, "confirmation.refused")) == 2
    done = post_confirm(stage.browser, token, TARGET)  # the form is still usable
    assert done.status_code == 200 and "Approved" in done.text
    assert stage.decisions(rid) == [("U0OWNER", "approve")]


def test_a_confirmation_without_a_verified_sign_in_is_refused(stage):
    rid = stage.submit("critical-typed", **CRITICAL)
    # no flow at all: a made-up token, no token, not a form
    for resp in (
        post_confirm(stage.browser, "made-up", TARGET),
        stage.browser.post("/step-up/confirm", data={"typed": TARGET}),
        stage.browser.post("/step-up/confirm", json={"token": "x", "typed": TARGET}),
        stage.browser.post(
            "/step-up/confirm",
            content=b"token=" + b"x" * 9000,
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
    ):
        assert resp.status_code == 400 and "Nothing was recorded" in resp.text, resp.text
    # a flow opened but not signed in: its state is no confirmation token
    first = stage.open_link(rid)
    state = parse_qs(urlsplit(first.headers["location"]).query)["state"][0]
    assert post_confirm(stage.browser, state, TARGET).status_code == 400
    assert stage.decisions(rid) == [] and stage.events(rid, "step_up.refused") == []

    # the token of a verified sign-in, posted from another browser: refused and recorded,
    # and the approver's own browser can still confirm
    token = form_token(stage.browser.get(stage.at_provider(first.headers["location"]), follow_redirects=False))
    stranger = TestClient(stage.service.app, raise_server_exceptions=False)
    actor, data = assert_refused(stage, rid, post_confirm(stranger, token, TARGET), "bad_state", 400, "another browser")
    assert actor == "anonymous" and data["at"] == "confirmation"
    done = post_confirm(stage.browser, token, TARGET)
    assert done.status_code == 200 and "Approved" in done.text


def test_a_confirmation_after_the_flow_expired(stage):
    rid = stage.submit("critical-typed", **CRITICAL)
    token = form_token(stage.sign_in(rid))
    stage.clock.advance(minutes=10, seconds=1)
    actor, _data = assert_refused(
        stage, rid, post_confirm(stage.browser, token, TARGET), "expired_flow", 400, "took too long"
    )
    assert actor == "U0OWNER"


def test_a_request_rejected_while_the_form_is_open(stage):
    from signoff.usecases.decide import decide

    rid = stage.submit("critical-typed", **CRITICAL)
    token = form_token(stage.sign_in(rid))
    assert decide(stage.ctx, request_id=rid, user="U0SECOND", decision="reject").outcome == "rejected"
    resp = post_confirm(stage.browser, token, TARGET)
    assert resp.status_code == 409 and "no longer pending" in resp.text
    [(_, actor, data)] = stage.events(rid, "step_up.refused")
    assert actor == "U0OWNER" and data["code"] == "not_pending" and data["step_up"]["sub"] == "00u-owner"
    assert stage.decisions(rid) == [("U0SECOND", "reject")]


def test_a_confirmation_is_taken_once_however_posts_race(stage):
    from signoff.store import step_up as flows
    from signoff.usecases.step_up import _hash

    rid = stage.submit("critical-typed", **CRITICAL)
    token = form_token(stage.sign_in(rid))
    now = stage.clock()
    taken = [stage.rt.store.transaction(lambda s: flows.take_held(s, _hash(token), now)) for _ in range(2)]
    assert taken == [True, False]
    assert post_confirm(stage.browser, token, TARGET).status_code == 400
    assert stage.decisions(rid) == []


def test_a_double_click_on_the_form_says_the_first_post_approved(stage):
    rid = stage.submit("critical-typed", **CRITICAL)
    token = form_token(stage.sign_in(rid))
    # The browser sends the second post before the first one's answer (which forgets the
    # cookie) arrives, and shows the second answer: it must not read "nothing recorded".
    second = TestClient(stage.service.app, raise_server_exceptions=False)
    second.cookies.update(dict(stage.browser.cookies))
    assert post_confirm(stage.browser, token, TARGET).status_code == 200
    again = post_confirm(second, token, TARGET)
    assert again.status_code == 400 and "Already approved" in again.text, again.text
    assert "Nothing was recorded" not in again.text
    [(_, actor, data)] = stage.events(rid, "step_up.refused")  # still on record, as a replay
    assert actor == "U0OWNER" and data["code"] == "replayed"
    assert stage.decisions(rid) == [("U0OWNER", "approve")]
    # without the cookie (the back button after the answer) it is the plain refusal
    later = post_confirm(stage.browser, token, TARGET)
    assert later.status_code == 400 and "already used" in later.text and "Already approved" not in later.text


def test_a_request_that_asks_for_no_confirmation_is_approved_by_the_callback(stage):
    # confirm unset: typed for critical requests only
    rid = stage.submit("critical-typed", risk="high", rollback={"description": "restart again"})
    done = stage.sign_in(rid)
    assert done.status_code == 200 and "Approved" in done.text and "Confirm approval" not in done.text
    [(_, _, data)] = stage.events(rid, "decision.recorded")
    assert "confirmed" not in data and data["step_up"]["sub"] == "00u-owner"


def test_a_workflow_without_step_up_keeps_its_approve_button(stage):
    rid = stage.submit("plain")
    stage.deliver()
    [post] = [c for c in stage.fake.calls_to("chat.postMessage") if c.ok]
    assert approve_button(post.params)["action_id"] == "signoff.approve"
    resp = stage.open_link(rid)
    assert resp.status_code == 404 and "does not use sign-in" in resp.text


# -- refusals ----------------------------------------------------------------------------------


def test_no_mfa(stage):
    stage.idp.claims["amr"] = ["pwd"]
    rid = stage.submit()
    actor, data = assert_refused(stage, rid, stage.sign_in(rid), "no_mfa", 403, "authentication method")
    assert actor == "oidc:00u-owner" and data["step_up"]["amr"] == ["pwd"]


def test_no_amr_at_all(stage):
    stage.idp.drop.add("amr")
    rid = stage.submit()
    assert_refused(stage, rid, stage.sign_in(rid), "no_mfa", 403, "authentication method")


def test_sign_in_too_old(stage):
    stage.idp.auth_age = 301 + 60
    rid = stage.submit()
    assert_refused(stage, rid, stage.sign_in(rid), "too_old", 403, "not recent enough")


def test_unverified_email(stage):
    stage.idp.claims["email_verified"] = False
    rid = stage.submit()
    assert_refused(stage, rid, stage.sign_in(rid), "email_unverified", 403, "verified")


def test_unknown_email(stage):
    stage.idp.claims["email"] = "stranger@example.com"
    rid = stage.submit()
    _, data = assert_refused(stage, rid, stage.sign_in(rid), "unknown_email", 403, "no Slack user")
    assert data["email"] == "stranger@example.com"
    assert stage.fake.calls_to("users.lookupByEmail")[-1].params["email"] == "stranger@example.com"


def test_not_an_approver(stage):
    stage.idp.claims.update(email="outsider@example.com", sub="00u-outsider")
    rid = stage.submit()
    actor, _ = assert_refused(stage, rid, stage.sign_in(rid), "not_approver", 403, "not an approver")
    assert actor == "U0OUTSIDER"


def test_the_agents_sponsor(stage):
    stage.idp.claims.update(email="sponsor@example.com", sub="00u-sponsor")
    rid = stage.submit()
    actor, data = assert_refused(stage, rid, stage.sign_in(rid), "sponsor", 403, "sponsor")
    assert actor == "U0SPONSOR" and data["sponsors"] == ["U0SPONSOR"]


def test_wrong_audience(stage):
    stage.idp.token_claims["aud"] = "someone-else"
    rid = stage.submit()
    assert_refused(stage, rid, stage.sign_in(rid), "token_invalid", 401, "did not verify")


def test_wrong_issuer(stage):
    stage.idp.token_claims["iss"] = "https://evil.example.com"
    rid = stage.submit()
    assert_refused(stage, rid, stage.sign_in(rid), "token_invalid", 401, "did not verify")


def test_expired_token(stage):
    stage.idp.token_claims["exp"] = int(stage.clock().timestamp()) - 120
    rid = stage.submit()
    assert_refused(stage, rid, stage.sign_in(rid), "token_invalid", 401, "did not verify")


def test_wrong_nonce(stage):
    stage.idp.token_claims["nonce"] = "not-the-one"
    rid = stage.submit()
    assert_refused(stage, rid, stage.sign_in(rid), "token_invalid", 401, "did not verify")


def test_signed_by_a_key_the_issuer_does_not_publish(stage):
    from fakes.oidc import SigningKey

    stage.idp.sign_key = SigningKey("k1")  # the same kid, another key: the signature fails
    rid = stage.submit()
    assert_refused(stage, rid, stage.sign_in(rid), "token_invalid", 401, "did not verify")


def test_a_rotated_key_is_fetched_on_its_unknown_kid(stage):
    rid = stage.submit()
    stage.sign_in(rid)  # the JWKS is cached now
    fetches = stage.idp.jwks_fetches
    stage.idp.rotate()
    stage.clock.advance(seconds=1)
    other = stage.submit()
    stage.idp.claims.update(email="second@example.com", sub="00u-second")
    done = stage.sign_in(other)
    assert done.status_code == 200, done.text
    assert stage.idp.jwks_fetches == fetches + 1


def test_the_provider_refuses_the_sign_in(stage):
    stage.idp.error = "access_denied"
    rid = stage.submit()
    assert_refused(stage, rid, stage.sign_in(rid), "provider_error", 502, "did not complete")


def test_request_no_longer_pending(stage):
    from signoff.usecases.decide import decide

    rid = stage.submit()
    first = stage.open_link(rid)
    decide(stage.ctx, request_id=rid, user="U0SECOND", decision="reject")
    resp = stage.browser.get(stage.at_provider(first.headers["location"]), follow_redirects=False)
    assert resp.status_code == 409 and "no longer pending" in resp.text
    [(_, actor, data)] = stage.events(rid, "step_up.refused")
    assert data["code"] == "not_pending" and actor == "U0OWNER"
    assert stage.decisions(rid) == [("U0SECOND", "reject")]
    # opening the link of a decided request says so, and starts nothing
    again = stage.open_link(rid)
    assert again.status_code == 409 and "no longer pending" in again.text


def test_replaying_a_used_state(stage):
    rid = stage.submit()
    first = stage.open_link(rid)
    callback = stage.at_provider(first.headers["location"])
    assert stage.browser.get(callback, follow_redirects=False).status_code == 200
    replay = stage.browser.get(callback, follow_redirects=False)
    assert replay.status_code == 400 and "already used" in replay.text
    [(_, _, data)] = stage.events(rid, "step_up.refused")
    assert data["code"] == "replayed"
    assert stage.decisions(rid) == [("U0OWNER", "approve")]


def test_a_callback_in_another_browser(stage):
    rid = stage.submit()
    first = stage.open_link(rid)
    callback = stage.at_provider(first.headers["location"])
    stranger = TestClient(stage.service.app, raise_server_exceptions=False)
    assert_refused(stage, rid, stranger.get(callback, follow_redirects=False), "bad_state", 400, "another browser")


def test_an_unknown_state(stage):
    resp = stage.browser.get("/step-up/callback?state=made-up&code=x", follow_redirects=False)
    assert resp.status_code == 400 and "not valid" in resp.text
    resp = stage.browser.get("/step-up/callback", follow_redirects=False)
    assert resp.status_code == 400


def test_an_expired_flow(stage):
    rid = stage.submit()
    first = stage.open_link(rid)
    stage.clock.advance(minutes=10, seconds=1)
    callback = stage.at_provider(first.headers["location"])
    assert_refused(
        stage, rid, stage.browser.get(callback, follow_redirects=False), "expired_flow", 400, "took too long"
    )


def test_unknown_request(stage):
    assert stage.open_link("00000000-0000-0000-0000-000000000000").status_code == 404
    assert stage.open_link("not a valid id").status_code == 404


def test_a_provider_that_cannot_be_reached(db_url, monkeypatch, fake_slack, clock):
    dead = FakeIdP(clock)
    dead.close()
    s = Stage(db_url, monkeypatch, fake_slack, dead, clock)
    try:
        rid = s.submit()
        resp = s.open_link(rid)
        assert resp.status_code == 502 and "identity provider" in resp.text
        assert s.decisions(rid) == []
    finally:
        s.close()
