"""The Python client without a server: grant verification with a locally made key, error
bodies of every shape, signing, waiting decisions, and what importing it pulls in."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from itertools import pairwise

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signoff.client import Client, InvalidGrant, SignoffError, WaitTimeout, action_sha256, verify_grant
from signoff.client import _core as core
from signoff.client.grants import JwksCache
from support import v1_signature

ACTION = {"type": "service.restart", "target": "checkout-api", "parameters": {"graceful": True}}


def keypair(kid: str = "k1"):
    key = Ed25519PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, alg="EdDSA", use="sig")
    return key, {"keys": [jwk]}


def grant(key, kid: str = "k1", **over) -> str:
    now = int(time.time())
    claims = {
        "iss": "signoff",
        "sub": "deploy-bot",
        "jti": "req-1",
        "iat": now,
        "exp": now + 600,
        "action_sha256": action_sha256(ACTION),
    }
    claims.update(over)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


def test_a_good_grant_gives_its_claims():
    key, jwks = keypair()
    claims = verify_grant(grant(key), dict(ACTION), jwks=jwks, executor="deploy-bot", request_id="req-1")
    assert claims["sub"] == "deploy-bot" and claims["jti"] == "req-1"


def test_the_action_hash_is_rfc8785():
    # key order and spacing do not matter; values do
    same = {"parameters": {"graceful": True}, "target": "checkout-api", "type": "service.restart"}
    assert action_sha256(same) == action_sha256(ACTION)
    assert action_sha256({**ACTION, "target": "other"}) != action_sha256(ACTION)


@pytest.mark.parametrize(
    "case, make, check, reason",
    [
        ("signature", lambda k, other: grant(other), {}, "signature"),
        ("expired", lambda k, o: grant(k, iat=int(time.time()) - 900, exp=int(time.time()) - 60), {}, "expired"),
        ("issuer", lambda k, o: grant(k, iss="someone-else"), {}, "issuer"),
        ("no issuer", lambda k, o: grant(k, iss=None), {}, "iss"),
        (
            "action",
            lambda k, o: grant(k, action_sha256=action_sha256({**ACTION, "target": "payments"})),
            {},
            "another action",
        ),
        ("no action hash", lambda k, o: grant(k, action_sha256=None), {}, "action_sha256"),
        ("executor", lambda k, o: grant(k, sub="other-bot"), {"executor": "deploy-bot"}, "executor"),
        ("request", lambda k, o: grant(k, jti="req-2"), {"request_id": "req-1"}, "request"),
        ("unknown kid", lambda k, o: grant(k, kid="k9"), {}, "k9"),
        ("not a jwt", lambda k, o: "not-a-token", {}, "not a JWT"),
        (
            "hs256",
            lambda k, o: jwt.encode(
                {"iss": "signoff"}, "secret-key-of-at-least-32-bytes!!", algorithm="HS256", headers={"kid": "k1"}
            ),
            {},
            "not EdDSA",
        ),
    ],
)
def test_a_grant_that_does_not_hold_is_invalid(case, make, check, reason):
    key, jwks = keypair()
    other, _ = keypair()
    with pytest.raises(InvalidGrant, match=reason):
        verify_grant(make(key, other), ACTION, jwks=jwks, **check)


def test_leeway_allows_a_little_clock_skew():
    key, jwks = keypair()
    token = grant(key, iat=int(time.time()) - 700, exp=int(time.time()) - 10)
    assert verify_grant(token, ACTION, jwks=jwks, leeway=30)["jti"] == "req-1"
    with pytest.raises(InvalidGrant, match="expired"):
        verify_grant(token, ACTION, jwks=jwks, leeway=0)


def test_jwks_from_a_url_is_cached_and_refetched_for_an_unknown_kid(monkeypatch):
    key1, jwks1 = keypair("k1")
    key2, jwks2 = keypair("k2")
    served = [jwks1]
    fetches = []

    def fake_get(url, timeout):
        fetches.append(url)
        return httpx.Response(200, json=served[-1], request=httpx.Request("GET", url))

    clock = [1000.0]
    cache = JwksCache(clock=lambda: clock[0])
    monkeypatch.setattr("signoff.client.grants.JWKS", cache)
    monkeypatch.setattr("signoff.client.grants.httpx.get", fake_get)
    url = "http://signoff.test/.well-known/jwks.json"
    verify_grant(grant(key1, "k1"), ACTION, jwks_url=url)
    verify_grant(grant(key1, "k1"), ACTION, jwks_url=url)
    assert len(fetches) == 1  # cached
    served.append({"keys": jwks1["keys"] + jwks2["keys"]})  # the server rotated keys
    clock[0] += 11
    verify_grant(grant(key2, "k2"), ACTION, jwks_url=url)
    assert len(fetches) == 2  # an unknown kid fetched again at once
    clock[0] += 400
    verify_grant(grant(key1, "k1"), ACTION, jwks_url=url)
    assert len(fetches) == 3  # past the TTL


def test_verify_grant_needs_keys():
    key, _ = keypair()
    with pytest.raises(ValueError, match="jwks"):
        verify_grant(grant(key), ACTION)


# -- answers and errors ---------------------------------------------------------------------


def mock_client(handler) -> Client:
    return Client("http://signoff.test", "deploy-bot", "s3cret", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    "status, body, headers, code, message",
    [
        (
            422,
            {"error": {"code": "invalid", "message": "rollback is required", "fields": ["rollback"]}},
            {},
            "invalid",
            "rollback is required",
        ),
        (502, "<html><body>Bad Gateway</body></html>", {"content-type": "text/html"}, "bad_gateway", "Bad Gateway"),
        (500, "", {}, "internal_server_error", "Internal Server Error"),
        (404, {"detail": "Not Found"}, {}, "not_found", "Not Found"),
    ],
)
def test_every_error_is_a_signoff_error(status, body, headers, code, message):
    def handler(request):
        if isinstance(body, dict):
            return httpx.Response(status, json=body, headers=headers)
        return httpx.Response(status, text=body, headers=headers)

    with mock_client(handler) as c, pytest.raises(SignoffError) as info:
        c.get("abc")
    err = info.value
    assert (err.status, err.code) == (status, code) and message in err.message
    assert err.fields == (["rollback"] if status == 422 else [])
    assert str(status) in str(err)


def test_a_success_without_a_json_object_is_an_error():
    with mock_client(lambda r: httpx.Response(200, text="ok")) as c, pytest.raises(SignoffError, match="JSON"):
        c.get("abc")


def test_submit_gives_up_after_bounded_attempts_with_the_last_answer(monkeypatch):
    monkeypatch.setattr(core, "retry_delay", lambda attempt, response: 0.0)
    seen = []

    def handler(request):
        seen.append(request.headers["idempotency-key"])
        return httpx.Response(503, json={"error": {"code": "unavailable", "message": "overloaded"}})

    with mock_client(handler) as c, pytest.raises(SignoffError) as info:
        c.submit("w", "t", ACTION, "j")
    assert info.value.status == 503 and len(seen) == core.SUBMIT_ATTEMPTS and len(set(seen)) == 1


def test_retry_after_is_honoured_and_capped():
    assert core.retry_delay(0, httpx.Response(503, headers={"Retry-After": "2"})) == 2.0
    assert core.retry_delay(0, httpx.Response(503, headers={"Retry-After": "3600"})) == core.BACKOFF_CAP
    assert core.retry_delay(3, None) == 2.0
    assert core.retry_delay(0, httpx.Response(503, headers={"Retry-After": "soon"})) == 0.25


def test_requests_are_signed_v2_over_method_target_and_body():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, json={"id": "abc", "status": "pending", "version": 3})

    with mock_client(handler) as c:
        c.get("abc")
        c.outcome("abc", "succeeded", "ok")
    _get, post = seen
    for r in seen:
        ts = r.headers["x-signoff-timestamp"]
        want = core.sign_v2(b"s3cret", ts, r.method, r.url.raw_path.decode(), r.content)
        assert r.headers["x-signoff-signature"] == want and want.startswith("v2=")
        assert r.headers["x-signoff-agent"] == "deploy-bot"
    assert json.loads(post.content) == {"status": "succeeded", "detail": "ok"}
    # the recipe itself, written out
    import hashlib
    import hmac

    assert (
        core.sign_v2(b"k", "1700000000", "get", "/v1/actions/x?wait=5", b"")
        == "v2=" + hmac.new(b"k", b"v2:1700000000:GET:/v1/actions/x?wait=5:", hashlib.sha256).hexdigest()
    )


def test_v1_signing_is_the_servers_recipe():
    request = core.build(
        core.identity("http://s", "a", "k"), "POST", "/v1/actions", {"a": 1}, version="v1", now=1700000000
    )
    assert request.headers["x-signoff-signature"] == v1_signature("k", 1700000000, request.content)


def test_missing_identity_names_every_variable(monkeypatch):
    for name in ("SIGNOFF_URL", "SIGNOFF_AGENT", "SIGNOFF_AGENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError) as info:
        Client()
    assert all(n in str(info.value) for n in ("SIGNOFF_URL", "SIGNOFF_AGENT", "SIGNOFF_AGENT_SECRET"))
    monkeypatch.setenv("SIGNOFF_URL", "http://env.test/")
    monkeypatch.setenv("SIGNOFF_AGENT", "env-bot")
    monkeypatch.setenv("SIGNOFF_AGENT_SECRET", "x")
    with Client() as c:
        assert (c.url, c.agent) == ("http://env.test", "env-bot")


# -- waiting --------------------------------------------------------------------------------


def test_wait_long_polls_with_the_version_and_stops_when_decided():
    targets = []
    states = iter(
        [
            {"id": "r", "status": "pending", "version": 1},
            {"id": "r", "status": "pending", "version": 2},
            {"id": "r", "status": "approved", "version": 3},
        ]
    )

    def handler(request):
        targets.append(request.url.raw_path.decode())
        return httpx.Response(200, json=next(states))

    with mock_client(handler) as c:
        assert c.wait("r", timeout=200)["status"] == "approved"
    assert targets == ["/v1/actions/r", "/v1/actions/r?wait=60&version=1", "/v1/actions/r?wait=60&version=2"]


def test_wait_against_a_server_that_ignores_wait_polls_about_once_a_second():
    reads = []

    def handler(request):
        reads.append(time.monotonic())
        return httpx.Response(200, json={"id": "r", "status": "pending"})

    with mock_client(handler) as c, pytest.raises(WaitTimeout):
        c.wait("r", timeout=2.2)
    gaps = [b - a for a, b in pairwise(reads[1:])]
    assert 2 <= len(reads) <= 5 and all(g >= 0.9 for g in gaps), gaps


def test_the_last_second_of_a_wait_is_not_a_long_poll():
    assert core.long_poll_seconds(0.5) == 0
    assert core.long_poll_seconds(30.7) == 30
    assert core.long_poll_seconds(600) == 60


def test_until_must_be_known():
    with mock_client(lambda r: httpx.Response(200, json={})) as c, pytest.raises(ValueError, match="until"):
        c.wait("r", until="approved")  # type: ignore[arg-type]


def test_require_approval_refuses_a_coroutine_function_on_the_sync_client():
    with mock_client(lambda r: httpx.Response(200, json={})) as c:

        async def f():
            return None

        with pytest.raises(TypeError, match="AsyncClient"):
            c.require_approval("w", "t", justification="j", action=ACTION)(f)


# -- import hygiene -------------------------------------------------------------------------

HEAVY = ["fastapi", "starlette", "sqlalchemy", "slack_bolt", "slack_sdk", "apscheduler", "alembic", "uvicorn"]


def test_importing_the_client_imports_nothing_of_the_server():
    code = (
        "import sys, json; import signoff.client; "
        "from signoff.client import Client, AsyncClient, verify_grant, SignoffError, Rejected, Expired, "
        "Cancelled, InvalidGrant; "
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules = json.loads(out)
    loaded = [m for m in modules if m.split(".")[0] in HEAVY]
    assert loaded == []
    server_side = [
        m
        for m in modules
        if m.startswith("signoff.")
        and not m.startswith(("signoff.client", "signoff.domain.agent_signature", "signoff.domain.canonical"))
        and m != "signoff.domain"
    ]
    assert server_side == []
