"""Checking a grant: the EdDSA JWT signoff issues for one approved action."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from signoff.client.errors import InvalidGrant
from signoff.domain.canonical import canonical_json

JWKS_TTL = 300.0  # the server says max-age=300 too
REFETCH_FLOOR = 10.0  # an unknown kid refetches, but not more often than this


def action_sha256(action: dict[str, Any]) -> str:
    """Hex SHA-256 of the RFC 8785 canonical JSON of ``action``: what a grant binds."""
    return hashlib.sha256(canonical_json(action)).hexdigest()


class JwksCache:
    """JWKS documents by URL, kept for ``JWKS_TTL`` seconds and fetched again at once when
    a token names a key id the cached document does not have (the server rotated keys)."""

    def __init__(self, ttl: float = JWKS_TTL, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.clock = ttl, clock
        self._docs: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def cached(self, url: str, kid: str) -> dict[str, Any] | None:
        """The cached document when it is fresh and has ``kid`` (or was fetched too
        recently to try again); None when it should be fetched."""
        with self._lock:
            hit = self._docs.get(url)
        if hit is None:
            return None
        at, doc = hit
        age = self.clock() - at
        if age > self.ttl:
            return None
        if find_key(doc, kid) is None and age > REFETCH_FLOOR:
            return None
        return doc

    def store(self, url: str, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise InvalidGrant(f"the JWKS at {url} is not a key set")
        with self._lock:
            self._docs[url] = (self.clock(), doc)
        return doc

    def get(self, url: str, kid: str, timeout: float = 10.0) -> dict[str, Any]:
        doc = self.cached(url, kid)
        if doc is not None:
            return doc
        try:
            response = httpx.get(url, timeout=timeout)
            response.raise_for_status()
            return self.store(url, response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidGrant(f"cannot fetch the JWKS at {url}: {exc}") from exc

    def clear(self) -> None:
        with self._lock:
            self._docs.clear()


JWKS = JwksCache()


def default_jwks_url() -> str | None:
    url = os.environ.get("SIGNOFF_URL")
    return url.rstrip("/") + "/.well-known/jwks.json" if url else None


def header_kid(token: str) -> str:
    """The token's key id; InvalidGrant when it is not a JWT signed with EdDSA."""
    if not isinstance(token, str) or not token:
        raise InvalidGrant("no grant: the token is empty")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidGrant(f"the grant is not a JWT: {exc}") from exc
    if header.get("alg") != "EdDSA":
        raise InvalidGrant(f"the grant is signed with {header.get('alg')!r}, not EdDSA")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidGrant("the grant's header has no kid")
    return kid


def find_key(jwks: dict[str, Any], kid: str) -> dict[str, Any] | None:
    for key in jwks.get("keys") or []:
        if isinstance(key, dict) and key.get("kid") == kid:
            return key
    return None


def verify_grant(
    token: str,
    action: dict[str, Any],
    *,
    jwks: dict[str, Any] | None = None,
    jwks_url: str | None = None,
    executor: str | None = None,
    request_id: str | None = None,
    leeway: float = 30,
) -> dict[str, Any]:
    """The grant's claims once it holds; InvalidGrant saying why when it does not.

    Checks the EdDSA signature against ``jwks`` (a JWKS document) or the one at
    ``jwks_url`` (default ``$SIGNOFF_URL/.well-known/jwks.json``; cached, and fetched again
    when the token names a key it lacks), that it is unexpired and from ``iss`` =
    ``signoff`` (``leeway`` seconds of clock skew allowed), that ``action_sha256`` is the
    hash of ``action`` — the action about to be run — and, when given, that ``sub`` is
    ``executor`` and ``jti`` is ``request_id``.
    """
    kid = header_kid(token)
    if jwks is None:
        url = jwks_url or default_jwks_url()
        if not url:
            raise ValueError("verify_grant needs jwks= or jwks_url= (or SIGNOFF_URL in the environment)")
        jwks = JWKS.get(url, kid)
    return check_claims(token, kid, jwks, action, executor=executor, request_id=request_id, leeway=leeway)


def check_claims(
    token: str,
    kid: str,
    jwks: dict[str, Any],
    action: dict[str, Any],
    *,
    executor: str | None,
    request_id: str | None,
    leeway: float,
) -> dict[str, Any]:
    jwk = find_key(jwks, kid)
    if jwk is None:
        raise InvalidGrant(f"the grant is signed with key {kid!r}, which the JWKS does not have")
    try:
        key = jwt.PyJWK(jwk, algorithm="EdDSA").key
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            issuer="signoff",
            leeway=leeway,
            options={"require": ["iss", "sub", "jti", "iat", "exp", "action_sha256"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidGrant("the grant has expired") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidGrant("the grant's issuer is not signoff") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidGrant("the grant's signature does not verify") from exc
    except jwt.PyJWTError as exc:
        raise InvalidGrant(f"the grant does not verify: {exc}") from exc
    try:
        want = action_sha256(action)
    except (TypeError, ValueError) as exc:
        raise InvalidGrant(f"the action cannot be hashed: {exc}") from exc
    if claims["action_sha256"] != want:
        raise InvalidGrant("the grant is for another action (action_sha256 does not match)")
    if executor is not None and claims["sub"] != executor:
        raise InvalidGrant(f"the grant is for executor {claims['sub']!r}, not {executor!r}")
    if request_id is not None and claims["jti"] != request_id:
        raise InvalidGrant(f"the grant is for request {claims['jti']!r}, not {request_id!r}")
    return claims
