"""The OpenID Connect side of a step-up: discovery, the authorization URL (code flow with
PKCE S256, ``state``, ``nonce``, ``max_age``), the code exchange and ID-token verification.

The protocol is Authlib's (its OAuth 2 client builds the authorization request, computes
the S256 challenge and exchanges the code; its ``CodeIDToken`` claims class checks the ID
token's ``iss``, ``aud``, ``azp``, ``exp``, ``iat``, ``nonce`` and ``at_hash``) with joserfc
for the signature. What is ours: caching the discovery document and the JWKS (refreshed
once on an unknown ``kid``, so a provider's key rotation is picked up at once), refusing
plain-http endpoints except on loopback, asymmetric algorithms only, and time from the
caller (the injected clock).

Every failure is a ``domain.step_up.Refusal``: ``provider_error`` when the provider could
not be asked or refused, ``token_invalid`` when its answer does not verify.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc.errors import JoseError

from signoff.config import StepUp, _loopback
from signoff.domain.step_up import Refusal

log = logging.getLogger(__name__)

SCOPE = "openid email"
# Asymmetric only: a token signed with a shared secret (HS*) or unsigned is never accepted.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
LEEWAY = 30  # seconds of clock skew tolerated on exp / iat
TIMEOUT = 5.0
MAX_TOKEN = 16 * 1024


def secure_url(url: Any) -> bool:
    """https, or http on a loopback address (local development and tests)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    return bool(host) and (parts.scheme == "https" or (parts.scheme == "http" and _loopback(host)))


def metadata_problems(su: StepUp, meta: Any) -> list[str]:
    """What makes a discovery document unusable for a step-up (empty: usable)."""
    if not isinstance(meta, dict):
        return ["the discovery document is not a JSON object"]
    out = []
    if meta.get("issuer") != su.issuer:
        out.append(f"its issuer is {meta.get('issuer')!r}, not {su.issuer!r} as configured (they must be equal)")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not meta.get(key):
            out.append(f"it has no {key}")
        elif not secure_url(meta[key]):
            out.append(f"its {key} {meta[key]!r} is not https (http only on a loopback address)")
    types = meta.get("response_types_supported")
    if isinstance(types, list) and "code" not in types:
        out.append("it does not support response_type code")
    methods = meta.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        out.append("it does not list S256 in code_challenge_methods_supported (PKCE)")
    algs = meta.get("id_token_signing_alg_values_supported")
    if isinstance(algs, list) and not set(algs) & set(ALGORITHMS):
        out.append(f"it signs ID tokens only with {algs}, none of which signoff accepts ({', '.join(ALGORITHMS)})")
    return out


class _Cached:
    def __init__(self):
        self.value: Any = None
        self.fetched = float("-inf")
        self.tried = float("-inf")
        self.lock = threading.Lock()


class Provider:
    """The identity providers of the workflow file, their documents cached per URL."""

    def __init__(self, *, ttl: float = 3600.0, min_refresh: float = 10.0, timeout: float = TIMEOUT):
        self.ttl = ttl
        self.min_refresh = min_refresh
        self.timeout = timeout
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    # -- documents ------------------------------------------------------------------------
    def _get_json(self, url: str) -> Any:
        resp = httpx.get(url, timeout=self.timeout, follow_redirects=False, headers={"Accept": "application/json"})
        resp.raise_for_status()
        return resp.json()

    def _entry(self, url: str) -> _Cached:
        with self._lock:
            return self._cache.setdefault(url, _Cached())

    def _cached(self, url: str, *, refresh: bool = False) -> Any:
        entry = self._entry(url)
        with entry.lock:
            now = time.monotonic()
            stale = now - entry.fetched > self.ttl
            # Refreshes asked for (an unknown kid) are spaced: random key ids cannot make us
            # hammer the provider.
            forced = refresh and now - entry.tried >= self.min_refresh
            if entry.value is None or stale or forced:
                if forced:
                    entry.tried = now
                try:
                    entry.value = self._get_json(url)
                    entry.fetched = now
                except (httpx.HTTPError, ValueError) as exc:
                    if entry.value is None:
                        raise Refusal("provider_error", f"cannot fetch {url}: {exc}") from None
                    log.warning("cannot refresh %s, keeping the copy we have: %s", url, exc)
            return entry.value

    def metadata(self, su: StepUp) -> dict[str, Any]:
        """The issuer's discovery document, checked (Refusal provider_error when unusable)."""
        meta = self._cached(su.discovery_url)
        problems = metadata_problems(su, meta)
        if problems:
            raise Refusal("provider_error", f"{su.discovery_url}: " + "; ".join(problems))
        return meta

    def _keys(self, meta: dict[str, Any], *, refresh: bool = False):
        from joserfc.jwk import KeySet

        data = self._cached(meta["jwks_uri"], refresh=refresh)
        try:
            keys = [k for k in (data or {}).get("keys") or [] if isinstance(k, dict) and k.get("use", "sig") == "sig"]
            return KeySet.import_key_set({"keys": keys})
        except (JoseError, ValueError, TypeError, AttributeError) as exc:
            raise Refusal("provider_error", f"the provider's JWKS is unusable: {exc}") from None

    # -- the flow -------------------------------------------------------------------------
    def _client(self, su: StepUp, meta: dict[str, Any], redirect_uri: str):
        # Authlib is imported when a step-up is first used: serve starts no slower without one.
        from authlib.integrations.httpx_client import OAuth2Client

        secret = su.client_secret()
        supported = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if secret is None:
            method = "none"
        elif "client_secret_basic" in supported:
            method = "client_secret_basic"
        else:
            method = "client_secret_post"
        return OAuth2Client(
            client_id=su.client_id,
            client_secret=secret,
            scope=SCOPE,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=method,
            timeout=self.timeout,
            follow_redirects=False,
        )

    def authorization_url(self, su: StepUp, *, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        """Where to send the approver's browser: the provider's sign-in, asked to be no
        older than ``max_age`` (providers that honour it make the approver sign in again)."""
        meta = self.metadata(su)
        with self._client(su, meta, redirect_uri) as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"],
                state=state,
                code_verifier=code_verifier,
                nonce=nonce,
                max_age=str(int(su.max_age.total_seconds())),
            )
        return url

    def exchange(self, su: StepUp, *, code: str, code_verifier: str, redirect_uri: str) -> dict[str, Any]:
        """The token endpoint's answer for ``code`` (it holds the ID token)."""
        meta = self.metadata(su)
        try:
            with self._client(su, meta, redirect_uri) as client:
                token = client.fetch_token(
                    meta["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                    redirect_uri=redirect_uri,
                )
        except Exception as exc:  # authlib's OAuthError, httpx errors, a non-JSON answer: all the provider's
            raise Refusal("provider_error", f"the token exchange failed: {type(exc).__name__}: {exc}"[:500]) from None
        if not isinstance(token, dict) or not isinstance(token.get("id_token"), str):
            raise Refusal("token_invalid", "the token endpoint returned no ID token")
        return dict(token)

    def verify(self, su: StepUp, token: dict[str, Any], *, nonce: str, now: float) -> dict[str, Any]:
        """The claims of the ID token in ``token``, once its signature (the issuer's JWKS),
        ``iss``, ``aud``, ``exp``, ``iat`` and ``nonce`` hold at ``now`` (unix seconds)."""
        from authlib.oidc.core import CodeIDToken
        from joserfc import jwt
        from joserfc.errors import InvalidKeyIdError

        meta = self.metadata(su)
        raw = token.get("id_token")
        if not isinstance(raw, str) or len(raw) > MAX_TOKEN:
            raise Refusal("token_invalid", "missing or oversized ID token")
        offered = meta.get("id_token_signing_alg_values_supported")
        algorithms = [a for a in ALGORITHMS if not isinstance(offered, list) or a in offered] or ALGORITHMS
        try:
            try:
                decoded = jwt.decode(raw, self._keys(meta), algorithms=algorithms)
            except InvalidKeyIdError:
                # A key we have not seen: the provider may have rotated. Ask once more.
                decoded = jwt.decode(raw, self._keys(meta, refresh=True), algorithms=algorithms)
            claims = CodeIDToken(
                decoded.claims,
                decoded.header,
                {
                    "iss": {"essential": True, "value": su.issuer},
                    "aud": {"essential": True, "value": su.client_id},
                    "sub": {"essential": True},
                    "nonce": {"essential": True, "value": nonce},
                },
                {
                    "nonce": nonce,
                    "client_id": su.client_id,
                    "access_token": token.get("access_token"),
                    "max_age": int(su.max_age.total_seconds()),
                },
            )
            claims.validate(now=int(now), leeway=LEEWAY)
        except Refusal:
            raise
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise Refusal("token_invalid", f"{type(exc).__name__}: {exc}"[:500]) from None
        return dict(claims)


PROVIDER = Provider()


def check_online(su: StepUp, *, timeout: float = TIMEOUT) -> list[str]:
    """What is wrong with ``su``'s provider, asked now (``check-config --online``): its
    discovery document, its keys, and whether it says it can assert what is required.
    Lines starting "warning: " are doubts (a provider may send a claim it does not list)."""
    from joserfc.jwk import KeySet

    try:
        resp = httpx.get(su.discovery_url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return [f"cannot fetch {su.discovery_url}: {type(exc).__name__}: {exc}"]
    if resp.status_code != 200:
        return [f"{su.discovery_url} answered HTTP {resp.status_code}"]
    try:
        meta = resp.json()
    except ValueError:
        return [f"{su.discovery_url} is not JSON"]
    problems = metadata_problems(su, meta)
    if problems:
        return problems
    claims = meta.get("claims_supported")
    if isinstance(claims, list):
        for claim in ("email", "email_verified", *(("amr",) if su.require_amr else ()), "auth_time"):
            if claim not in claims:
                problems.append(
                    f"warning: its claims_supported does not list {claim!r}: if its ID tokens lack "
                    "it, every approval will be refused (see docs/step-up.md)"
                )
    scopes = meta.get("scopes_supported")
    if isinstance(scopes, list) and "email" not in scopes:
        problems.append("its scopes_supported does not list 'email'")
    try:
        jwks = httpx.get(meta["jwks_uri"], timeout=timeout, follow_redirects=False)
        jwks.raise_for_status()
        keys = KeySet.import_key_set(
            {"keys": [k for k in jwks.json().get("keys") or [] if isinstance(k, dict) and k.get("use", "sig") == "sig"]}
        )
        if not keys.keys:
            problems.append(f"its JWKS {meta['jwks_uri']} holds no signing key")
    except (httpx.HTTPError, ValueError, JoseError, AttributeError, TypeError) as exc:
        problems.append(f"cannot use its JWKS {meta['jwks_uri']}: {type(exc).__name__}: {exc}")
    return problems
