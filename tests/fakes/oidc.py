"""A small OpenID Connect provider on loopback for the step-up tests: discovery, JWKS,
an authorization endpoint that signs the user in at once (no form: the browser is sent
straight back with a code), and a token endpoint that checks the code, the client's
secret, the redirect URI and the PKCE verifier (S256) before it issues an ID token.

What the ID token says is configurable per test: ``claims`` (the user's claims),
``auth_age`` (seconds between the sign-in and the token), ``token_claims`` (claims to
override or add, e.g. a wrong ``aud``), ``drop`` (claims to leave out), ``sign_key`` (a
key the JWKS does not publish), ``error`` (the authorization endpoint answers with this
OAuth error instead of a code).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from signoff.demo.loopback import LoopbackHTTP

CLIENT_ID = "signoff-test-client"
CLIENT_SECRET = "idp-client-secret"


class SigningKey:
    def __init__(self, kid: str):
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def public_jwk(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}


class FakeIdP(LoopbackHTTP):
    def __init__(self, clock=None, *, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET):
        self.clock = clock  # () -> aware datetime; None: the real time
        self.client_id = client_id
        self.client_secret = client_secret
        self.key = SigningKey("k1")
        self.published = [self.key]
        self.sign_key: SigningKey | None = None
        self.claims: dict = {
            "sub": "00u-owner",
            "email": "owner@example.com",
            "email_verified": True,
            "amr": ["pwd", "mfa"],
        }
        self.auth_age = 10
        self.token_claims: dict = {}
        self.drop: set[str] = set()
        self.error: str | None = None
        self.discovery: dict = {}
        self.authorize_requests: list[dict] = []
        self.token_requests: list[dict] = []
        self.jwks_fetches = 0
        self._codes: dict[str, dict] = {}
        self._lock = threading.Lock()
        super().__init__()
        self.issuer = self.url

    def now(self) -> int:
        return int(self.clock().timestamp()) if self.clock else int(time.time())

    def rotate(self) -> SigningKey:
        """Sign with a new key, published alongside the old one."""
        self.key = SigningKey(f"k{len(self.published) + 1}")
        self.published.append(self.key)
        return self.key

    def metadata(self) -> dict:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.url + "/authorize",
            "token_endpoint": self.url + "/token",
            "jwks_uri": self.url + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "email"],
            "claims_supported": ["sub", "email", "email_verified", "amr", "auth_time"],
            **self.discovery,
        }

    # -- HTTP -------------------------------------------------------------------------------
    def handle(self, method, path, headers, body):
        parts = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/.well-known/openid-configuration":
            return 200, json.dumps(self.metadata()).encode(), {}
        if parts.path == "/jwks":
            with self._lock:
                self.jwks_fetches += 1
            return 200, json.dumps({"keys": [k.public_jwk() for k in self.published]}).encode(), {}
        if parts.path == "/authorize" and method == "GET":
            return self._authorize(query)
        if parts.path == "/token" and method == "POST":
            form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
            return self._token(form, headers)
        return 404, b"", {}

    def _authorize(self, q: dict):
        with self._lock:
            self.authorize_requests.append(q)
        redirect = q.get("redirect_uri", "")
        if q.get("client_id") != self.client_id or not redirect:
            return 400, json.dumps({"error": "invalid_client"}).encode(), {}
        if (
            q.get("response_type") != "code"
            or q.get("code_challenge_method") != "S256"
            or not q.get("code_challenge")
            or "openid" not in q.get("scope", "").split()
        ):
            return 400, json.dumps({"error": "invalid_request"}).encode(), {}
        if self.error:
            back = {"error": self.error, "error_description": "the user said no", "state": q.get("state", "")}
        else:
            code = secrets.token_urlsafe(16)
            with self._lock:
                self._codes[code] = {
                    "nonce": q.get("nonce"),
                    "challenge": q["code_challenge"],
                    "redirect_uri": redirect,
                    "used": False,
                }
            back = {"code": code, "state": q.get("state", "")}
        return 302, b"", {"Location": redirect + ("&" if "?" in redirect else "?") + urlencode(back)}

    def _client_ok(self, form: dict, headers: dict) -> bool:
        auth = headers.get("Authorization") or headers.get("authorization") or ""
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            return user == self.client_id and password == self.client_secret
        return form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret

    def _token(self, form: dict, headers: dict):
        with self._lock:
            self.token_requests.append(form)
            grant = self._codes.get(form.get("code", ""))
            if grant is not None and grant["used"]:
                grant = None
            if grant is not None:
                grant["used"] = True
        if not self._client_ok(form, headers):
            return 401, json.dumps({"error": "invalid_client"}).encode(), {}
        if (
            form.get("grant_type") != "authorization_code"
            or grant is None
            or form.get("redirect_uri") != grant["redirect_uri"]
        ):
            return 400, json.dumps({"error": "invalid_grant"}).encode(), {}
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["challenge"]:
            return 400, json.dumps({"error": "invalid_grant", "error_description": "PKCE"}).encode(), {}
        now = self.now()
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "auth_time": now - self.auth_age,
            "nonce": grant["nonce"],
            **self.claims,
            **self.token_claims,
        }
        for name in self.drop:
            claims.pop(name, None)
        key = self.sign_key or self.key
        id_token = jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})
        answer = {
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }
        return 200, json.dumps(answer).encode(), {"Cache-Control": "no-store"}
