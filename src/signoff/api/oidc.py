"""Workload identity: short-lived OIDC/JWT tokens instead of an HMAC secret.

An agent with ``oidc: {issuer, audience, subject, jwks_url | jwks_file}`` may send
``Authorization: Bearer <jwt>`` (Kubernetes service-account tokens, CI OIDC tokens,
SPIFFE JWT-SVIDs…). The token names the agent through its ``iss`` and ``sub`` (or the
``X-Signoff-Agent`` header, when several agents share an issuer and subject); its
signature is checked against the issuer's keys, then ``iss``, ``aud``, ``sub`` and
``exp`` (required) against the agent's configuration and the server's clock. Any failure
is the same 401.

Keys are cached per source for ``JwksCache.ttl`` seconds; a token signed with a key id
the cache does not know triggers one refresh (at most every ``min_refresh`` seconds per
source, so random key ids cannot make us hammer the issuer). When a refresh fails the
keys already known keep working.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

from signoff.config import Agent, Config
from signoff.domain.errors import Unauthorized
from signoff.usecases.ports import Context

log = logging.getLogger(__name__)

# Asymmetric algorithms only: a shared-secret (HS*) or unsigned token is never accepted.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
LEEWAY = 30  # seconds of clock skew tolerated on exp / nbf / iat
FETCH_TIMEOUT = 5.0
MAX_TOKEN = 16 * 1024


@dataclass
class _Entry:
    keys: dict[str | None, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = float("-inf")
    tried_at: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)


class JwksCache:
    """Public keys per source (a JWKS URL or file), fetched lazily and refreshed."""

    def __init__(self, *, ttl: float = 300.0, min_refresh: float = 10.0):
        self.ttl = ttl
        self.min_refresh = min_refresh
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def key(self, source: str, kid: str | None) -> jwt.PyJWK | None:
        """The key ``kid`` of ``source`` (the only key, when the token names none)."""
        with self._lock:
            entry = self._entries.setdefault(source, _Entry())
        with entry.lock:  # one fetch per source at a time; other sources are not held up
            now = time.monotonic()
            stale = now - entry.fetched_at > self.ttl
            unknown = _pick(entry.keys, kid) is None
            if stale or (unknown and now - entry.tried_at >= self.min_refresh):
                entry.tried_at = now
                try:
                    entry.keys = _load(source)
                    entry.fetched_at = now
                except Exception as exc:  # keep what we had: an issuer outage is not ours
                    log.warning("cannot refresh JWKS from %s: %s", source, exc)
            return _pick(entry.keys, kid)


def _pick(keys: dict[str | None, jwt.PyJWK], kid: str | None) -> jwt.PyJWK | None:
    if kid is not None:
        return keys.get(kid)
    return next(iter(keys.values())) if len(keys) == 1 else None


def _load(source: str) -> dict[str | None, jwt.PyJWK]:
    if source.startswith(("http://", "https://")):
        resp = httpx.get(source, timeout=FETCH_TIMEOUT, follow_redirects=False)
        resp.raise_for_status()
        data = resp.json()
    else:
        data = json.loads(Path(source).read_text(encoding="utf-8"))
    keys: dict[str | None, jwt.PyJWK] = {}
    for jwk in (data or {}).get("keys") or []:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        try:
            keys[jwk.get("kid")] = jwt.PyJWK.from_dict(jwk)
        except Exception:  # a key type we cannot use (or HS): skip it, keep the others
            continue
    return keys


CACHE = JwksCache()


def key_source(config: Config, agent: Agent) -> str:
    """Where the agent's issuer keys are: the URL, or the file (relative paths are taken
    from the workflow file's directory)."""
    oidc = agent.oidc
    if oidc.jwks_url:
        return oidc.jwks_url
    path = Path(oidc.jwks_file)
    if not path.is_absolute() and config.source not in ("", "<memory>"):
        path = Path(config.source).parent / path
    return str(path)


def verify_bearer(ctx: Context, agent_hint: str | None, token: str) -> str:
    """The agent id a valid bearer token authenticates; Unauthorized (401) otherwise."""
    if not token or len(token) > MAX_TOKEN:
        raise Unauthorized("missing or oversized bearer token")
    try:
        header = jwt.get_unverified_header(token)
        unverified: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise Unauthorized("malformed bearer token") from None
    config = ctx.config()
    agent = _agent_for(config, unverified, agent_hint)
    oidc = agent.oidc
    kid = header.get("kid")
    if header.get("alg") not in ALGORITHMS:
        raise Unauthorized("bearer token algorithm not accepted")
    key = CACHE.key(key_source(config, agent), kid if isinstance(kid, str) else None)
    if key is None:
        raise Unauthorized("bearer token signed with an unknown key")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            audience=oidc.audience,
            issuer=oidc.issuer,
            subject=oidc.subject,
            # Time claims are checked below against the server's clock (injectable).
            options={
                "require": ["exp", "iss", "aud", "sub"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid bearer token: {exc}") from None
    _check_times(claims, ctx.clock().timestamp())
    return agent.id


def _agent_for(config: Config, claims: dict[str, Any], hint: str | None) -> Agent:
    iss, sub = claims.get("iss"), claims.get("sub")
    candidates = [a for a in config.agents if a.oidc is not None and a.oidc.issuer == iss and a.oidc.subject == sub]
    if hint:
        candidates = [a for a in candidates if a.id == hint]
    if len(candidates) != 1:
        # Unknown, and ambiguous without a hint: the same answer, nothing to enumerate.
        raise Unauthorized(
            "no agent has this workload identity"
            if not candidates
            else "several agents share this workload identity: send X-Signoff-Agent"
        )
    return candidates[0]


def _check_times(claims: dict[str, Any], now: float) -> None:
    def number(name: str) -> float | None:
        value = claims.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Unauthorized(f"bearer token claim {name} is not a number")
        return float(value)

    exp, nbf, iat = number("exp"), number("nbf"), number("iat")
    if exp is None or now >= exp + LEEWAY:
        raise Unauthorized("bearer token has expired")
    if nbf is not None and now < nbf - LEEWAY:
        raise Unauthorized("bearer token is not valid yet")
    if iat is not None and now < iat - LEEWAY:
        raise Unauthorized("bearer token was issued in the future")
