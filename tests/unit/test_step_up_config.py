"""Step-up: the workflow key, what a verified ID token must prove (pure), check-config
(offline warnings; --online against the provider of fakes.oidc), and the stand-in's
users.lookupByEmail."""

from __future__ import annotations

from datetime import timedelta

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from fakes.oidc import FakeIdP
from signoff.cli import main
from signoff.config import ConfigError, parse_config, step_up_warnings
from signoff.domain.step_up import Refusal, check_claims
from signoff.slack.directory import SlackDirectory

NOW = 1_800_000_000


def workflow(step_up: str, rules: str = "", confirm: str = "none") -> str:
    return f"""
agents:
  - id: deploy-bot
    sponsor: U0SPONSOR
    secret_env: DEPLOY_BOT_SECRET
workflows:
  - id: w
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    agents: [deploy-bot]
    confirm: {confirm}
    step_up: {step_up}
{rules}"""


def test_defaults_and_rule_override():
    config = parse_config(
        workflow(
            "{issuer: 'https://id.example.com', client_id: signoff}",
            """\
    rules:
      - name: prod
        match: {environment: production}
        step_up: {issuer: 'https://id.example.com/oauth2/default', client_id: other, max_age: 2m}
""",
        )
    )
    wf = config.workflows[0]
    su = wf.merged(None).step_up
    assert su.require_amr == ["mfa"] and su.max_age == timedelta(minutes=5) and su.client_secret_env is None
    assert su.discovery_url == "https://id.example.com/.well-known/openid-configuration"
    prod = wf.merged(wf.rules[0]).step_up
    assert prod.client_id == "other" and prod.max_age == timedelta(minutes=2)
    assert wf.merged(wf.rules[0]).snapshot()["step_up"]["max_age"] == "2m"


@pytest.mark.parametrize(
    "step_up, words",
    [
        ("{issuer: 'http://id.example.com', client_id: c}", "loopback"),
        ("{issuer: 'ftp://id.example.com', client_id: c}", "https://"),
        ("{issuer: 'https://id.example.com?x=1', client_id: c}", "without query"),
        ("{issuer: 'https://id.example.com', client_id: ''}", "client_id"),
        ("{issuer: 'https://id.example.com'}", "client_id"),
        ("{issuer: 'https://id.example.com', client_id: c, max_age: 0}", "max_age"),
        ("{issuer: 'https://id.example.com', client_id: c, max_age: 2d}", "at most 24h"),
        ("{issuer: 'https://id.example.com', client_id: c, require_amr: ['']}", "require_amr"),
        ("{issuer: 'https://id.example.com', client_id: c, scopes: [x]}", "scopes"),
    ],
)
def test_bad_step_up_is_reported_with_its_path(step_up, words):
    with pytest.raises(ConfigError) as err:
        parse_config(workflow(step_up))
    assert any("workflows[0].step_up" in e and words in e for e in err.value.errors), err.value.errors


@pytest.mark.parametrize("issuer", ["http://127.0.0.1:8081", "http://localhost:9000/realms/x", "http://[::1]:80"])
def test_http_only_on_loopback(issuer):
    parse_config(workflow(f"{{issuer: '{issuer}', client_id: c}}"))


def test_warnings():
    config = parse_config(
        workflow("{issuer: 'https://id.example.com', client_id: c, client_secret_env: SU_SECRET, require_amr: []}")
    )
    warnings = step_up_warnings(config, environ={})
    assert any("SU_SECRET is not set" in w for w in warnings)
    assert any("require_amr is empty" in w for w in warnings)
    assert (
        step_up_warnings(
            parse_config(workflow("{issuer: 'https://id.example.com', client_id: c, client_secret_env: SU_SECRET}")),
            {"SU_SECRET": "x"},
        )
        == []
    )


def test_a_typed_confirmation_next_to_step_up_is_no_warning():
    """The step-up form asks for the typed confirmation after the sign-in: nothing to warn about."""
    su = "{issuer: 'https://id.example.com', client_id: c}"
    assert step_up_warnings(parse_config(workflow(su, confirm="null"))) == []
    assert step_up_warnings(parse_config(workflow(su, confirm="typed"))) == []
    rules = """\
    rules:
      - name: careful
        confirm: typed
      - name: own
        confirm: typed
        step_up: {issuer: 'https://id.example.com', client_id: c, require_amr: []}
"""
    assert step_up_warnings(parse_config(workflow(su, rules))) == [
        (
            "workflows[0].rules[1].step_up.require_amr is empty: a step-up then proves a recent sign-in, not that it "
            "used MFA"
        )
    ]


# -- what the token must prove ------------------------------------------------------------------

GOOD = {"sub": "00u1", "email": "a@example.com", "email_verified": True, "amr": ["pwd", "mfa"], "auth_time": NOW - 60}


def check(**over):
    claims = {**GOOD, **over}
    return check_claims(
        {k: v for k, v in claims.items() if v is not None},
        issuer="https://id",
        require_amr=["mfa"],
        max_age=timedelta(minutes=5),
        now=NOW,
    )


def test_a_fresh_mfa_sign_in():
    proof = check()
    assert proof.evidence() == {"issuer": "https://id", "sub": "00u1", "amr": ["pwd", "mfa"], "auth_time": NOW - 60}
    assert proof.email == "a@example.com"


@pytest.mark.parametrize(
    "over, code",
    [
        ({"amr": ["pwd"]}, "no_mfa"),
        ({"amr": None}, "no_mfa"),
        ({"amr": "mfa"}, "no_mfa"),  # a string is not a list of methods
        ({"auth_time": None}, "too_old"),
        ({"auth_time": "recent"}, "too_old"),
        ({"auth_time": NOW - 300 - 31}, "too_old"),
        ({"auth_time": NOW + 120}, "token_invalid"),
        ({"email_verified": None}, "email_unverified"),
        ({"email_verified": "true"}, "email_unverified"),  # only the JSON true counts
        ({"email": None}, "unknown_email"),
    ],
)
def test_what_falls_short(over, code):
    with pytest.raises(Refusal) as err:
        check(**over)
    assert err.value.code == code and err.value.reason


def test_within_max_age_and_skew():
    assert check(auth_time=NOW - 300 - 29).auth_time == NOW - 329


# -- check-config -------------------------------------------------------------------------------


def test_check_config_online(tmp_path, capsys):
    idp = FakeIdP()
    try:
        path = tmp_path / "wf.yaml"
        path.write_text(workflow(f"{{issuer: '{idp.issuer}', client_id: c}}"))
        assert main(["check-config", "--online", str(path)]) == 0
        assert "discovery and keys OK" in capsys.readouterr().out
        idp.discovery = {"issuer": "https://someone-else", "code_challenge_methods_supported": ["plain"]}
        assert main(["check-config", "--online", str(path)]) == 1
        err = capsys.readouterr().err
        assert "not '" + idp.issuer + "' as configured" in err and "S256" in err
        idp.discovery = {"claims_supported": ["sub", "email"]}
        assert main(["check-config", "--online", str(path)]) == 0
        err = capsys.readouterr().err
        assert "warning:" in err and "'amr'" in err
        assert main(["check-config", str(path)]) == 0  # offline: nothing fetched
    finally:
        idp.close()
    assert main(["check-config", "--online", str(path)]) == 1
    assert "cannot fetch" in capsys.readouterr().err


# -- the stand-in and the directory ---------------------------------------------------------------


def test_lookup_by_email(fake_slack):
    fake_slack.emails["Owner@Example.com"] = "U0OWNER"
    fake_slack.users["U0GONE"] = {"deleted": True, "profile": {"email": "gone@example.com"}}
    client = WebClient(token="xoxb-test", base_url=fake_slack.url)
    assert client.users_lookupByEmail(email="owner@example.com")["user"]["id"] == "U0OWNER"
    with pytest.raises(SlackApiError) as err:
        client.users_lookupByEmail(email="nobody@example.com")
    assert err.value.response["error"] == "users_not_found"
    directory = SlackDirectory(client)
    assert directory.user_by_email("OWNER@example.com") == "U0OWNER"
    assert directory.user_by_email("owner@example.com") == "U0OWNER"
    assert len(fake_slack.calls_to("users.lookupByEmail")) == 3  # the second look-up was cached
    assert directory.user_by_email("gone@example.com") is None  # a deactivated user approves nothing
    assert directory.user_by_email("nobody@example.com") is None
    fake_slack.set_down()
    assert directory.user_by_email("new@example.com") is None  # fail closed
