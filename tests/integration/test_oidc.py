"""Workload identity over HTTP: OIDC/JWT bearer tokens checked against a JWKS server on
loopback (valid, expired, wrong audience or issuer, unknown key, rotation), on SQLite and
PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi.testclient import TestClient

from signoff.api import oidc
from signoff.api.app import create_app
from signoff.demo.loopback import LoopbackHTTP
from signoff.usecases.ports import system_clock
from support import SECRETS, dumps, runtime, signed_headers, submission

ISSUER = "https://kubernetes.default.svc"
AUDIENCE = "signoff"
SUBJECT = "system:serviceaccount:ops:deployer"


class JwksServer(LoopbackHTTP):
    """Serves a JWKS we can change, and counts fetches."""

    def __init__(self):
        self.jwks = {"keys": []}
        self.fetches = 0
        self.down = False
        super().__init__()
        self.url += "/keys"

    def respond(self, method, headers, body):
        self.fetches += 1
        if self.down:
            return 503, b""
        return 200, json.dumps(self.jwks).encode()

    def publish(self, *keys: Key) -> None:
        self.jwks = {"keys": [k.public_jwk() for k in keys]}


class Key:
    def __init__(self, kind: str, kid: str):
        self.kid = kid
        if kind == "rsa":
            self.private, self.alg = rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"
        elif kind == "ec":
            self.private, self.alg = ec.generate_private_key(ec.SECP256R1()), "ES256"
        else:
            self.private, self.alg = ed25519.Ed25519PrivateKey.generate(), "EdDSA"

    def public_jwk(self) -> dict:
        algo = jwt.get_algorithm_by_name(self.alg)
        jwk = json.loads(algo.to_jwk(self.private.public_key()))
        jwk.update(kid=self.kid, use="sig", alg=self.alg)
        return jwk

    def token(self, *, kid: str | None = "self", **claims) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT, "iat": now, "exp": now + 600}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        headers = {"kid": self.kid if kid == "self" else kid} if kid is not None else {}
        return jwt.encode(body, self.private, algorithm=self.alg, headers=headers)


YAML = """
agents:
  - id: k8s-deployer
    sponsor: U0SPONSOR
    oidc:
      issuer: {issuer}
      audience: {audience}
      subject: {subject}
      jwks_url: {url}
  - id: ci-bot
    sponsor: U0CISP
    oidc:
      issuer: https://token.actions.example
      audience: signoff
      subject: repo:acme/app:ref:refs/heads/main
      jwks_file: {file}
  - id: deploy-bot
    sponsor: U0DEPSP
    secret_env: DEPLOY_BOT_SECRET
workflows:
  - id: prod-restart
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    agents: [k8s-deployer, ci-bot, deploy-bot]
    timeout: 30m
"""


@pytest.fixture
def jwks():
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture
def env(db_url, monkeypatch, jwks, tmp_path):
    oidc.CACHE.clear()
    monkeypatch.setattr(oidc.CACHE, "min_refresh", 0.0)
    ci_key = Key("ec", "ci-1")
    (tmp_path / "ci-jwks.json").write_text(json.dumps({"keys": [ci_key.public_jwk()]}))
    text = YAML.format(issuer=ISSUER, audience=AUDIENCE, subject=SUBJECT, url=jwks.url, file=tmp_path / "ci-jwks.json")
    rt = runtime(db_url, text, clock=system_clock, monkeypatch=monkeypatch)
    client = TestClient(create_app(rt.context), raise_server_exceptions=False)
    yield client, ci_key
    client.close()
    rt.store.dispose()
    oidc.CACHE.clear()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def post(client, token: str, body=None, **headers):
    data = dumps(body or submission())
    return client.post(
        "/v1/actions",
        content=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers},
    )


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_a_valid_token_authenticates_the_agent(env, jwks, kind):
    client, _ = env
    key = Key(kind, f"{kind}-1")
    jwks.publish(key)
    r = post(client, key.token())
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert r.json()["submitted_by"] == "k8s-deployer" and r.json()["sponsor"] == "U0SPONSOR"
    got = client.get(f"/v1/actions/{rid}", headers={"Authorization": f"Bearer {key.token()}"})
    assert got.status_code == 200 and got.json()["id"] == rid


def test_expired_token_is_refused(env, jwks):
    client, _ = env
    key = Key("rsa", "k1")
    jwks.publish(key)
    old = int(time.time()) - 3600
    r = post(client, key.token(iat=old, exp=old + 600))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert post(client, key.token(exp=None)).status_code == 401  # exp is required


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "someone-else"},
        {"iss": "https://evil.example"},
        {"sub": "system:serviceaccount:ops:other"},
        {"aud": None},
    ],
)
def test_wrong_audience_issuer_or_subject_is_refused(env, jwks, claims):
    client, _ = env
    key = Key("rsa", "k1")
    jwks.publish(key)
    assert post(client, key.token(**claims)).status_code == 401


def test_unknown_key_is_refused_and_the_cache_refreshes_for_a_rotated_key(env, jwks):
    client, _ = env
    k1, k2, stranger = Key("rsa", "k1"), Key("ec", "k2"), Key("rsa", "k3")
    jwks.publish(k1)
    assert post(client, k1.token()).status_code == 201
    fetched = jwks.fetches
    assert post(client, k1.token()).status_code == 201
    assert jwks.fetches == fetched  # cached
    # A key the issuer never published: refused (after one look for it).
    assert post(client, stranger.token()).status_code == 401
    assert jwks.fetches == fetched + 1
    # A forged token that claims a known kid but is signed by another key.
    assert post(client, stranger.token(kid="k1")).status_code == 401
    # The issuer rotates: the new kid is unknown to the cache, which refreshes and accepts it.
    jwks.publish(k1, k2)
    assert post(client, k2.token()).status_code == 201


def test_unknown_kids_cannot_make_us_hammer_the_issuer(env, jwks, monkeypatch):
    client, _ = env
    monkeypatch.setattr(oidc.CACHE, "min_refresh", 60.0)
    k1 = Key("rsa", "k1")
    jwks.publish(k1)
    assert post(client, k1.token()).status_code == 201
    fetched = jwks.fetches
    for i in range(5):
        assert post(client, k1.token(kid=f"random-{i}")).status_code == 401
    assert jwks.fetches <= fetched + 1


def test_keys_already_known_survive_an_issuer_outage(env, jwks, monkeypatch):
    client, _ = env
    k1 = Key("ed25519", "k1")
    jwks.publish(k1)
    assert post(client, k1.token()).status_code == 201
    jwks.down = True
    monkeypatch.setattr(oidc.CACHE, "ttl", 0.0)  # every call tries to refresh, and fails
    assert post(client, k1.token()).status_code == 201


def test_unsigned_and_shared_secret_tokens_are_refused(env, jwks):
    client, _ = env
    k1 = Key("rsa", "k1")
    jwks.publish(k1)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT, "exp": int(time.time()) + 600}
    none = jwt.encode(claims, key=None, algorithm="none", headers={"kid": "k1"})
    assert post(client, none).status_code == 401
    # HS256 keyed with the RSA public key's PEM: the classic confusion attack (built by hand,
    # PyJWT itself refuses to make it).
    pem = k1.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode()) + "." + _b64(json.dumps(claims).encode())
    )
    hs = signing_input + "." + _b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
    assert post(client, hs).status_code == 401
    assert post(client, "not-a-jwt").status_code == 401


def test_agent_hint_and_jwks_file(env, jwks):
    client, ci_key = env
    k1 = Key("rsa", "k1")
    jwks.publish(k1)
    assert post(client, k1.token(), **{"X-Signoff-Agent": "k8s-deployer"}).status_code == 201
    assert post(client, k1.token(), **{"X-Signoff-Agent": "ci-bot"}).status_code == 401
    ci = ci_key.token(iss="https://token.actions.example", sub="repo:acme/app:ref:refs/heads/main")
    r = post(client, ci)
    assert r.status_code == 201 and r.json()["submitted_by"] == "ci-bot"


def test_hmac_agents_are_unaffected_and_bearer_does_not_bypass_hmac(env, jwks):
    client, _ = env
    data = dumps(submission())
    r = client.post(
        "/v1/actions", content=data, headers=signed_headers("deploy-bot", SECRETS["DEPLOY_BOT_SECRET"], data)
    )
    assert r.status_code == 201
    # An HMAC-only agent has no workload identity: a bearer token never names it.
    k1 = Key("rsa", "k1")
    jwks.publish(k1)
    assert post(client, k1.token(), **{"X-Signoff-Agent": "deploy-bot"}).status_code == 401
