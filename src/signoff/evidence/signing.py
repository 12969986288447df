"""Ed25519 signatures over canonical JSON, and finding the public key for a ``kid``.

A verifier may be given a ``KeyRing`` (the store's keys), a JWKS document
(``{"keys": [...]}``, as served at ``/.well-known/jwks.json``), a list of JWKs or one JWK.
"""

from __future__ import annotations

from typing import Any

from signoff.keys import KeyRing, SigningKey, verify_with_jwk


def jwk_list(keys_or_jwks: Any) -> list[dict]:
    if isinstance(keys_or_jwks, KeyRing):
        return keys_or_jwks.jwks()["keys"]
    if isinstance(keys_or_jwks, SigningKey):
        return [keys_or_jwks.jwk()]
    if isinstance(keys_or_jwks, dict):
        if isinstance(keys_or_jwks.get("keys"), list):
            return [k for k in keys_or_jwks["keys"] if isinstance(k, dict)]
        return [keys_or_jwks]
    if isinstance(keys_or_jwks, (list, tuple)):
        return [k for k in keys_or_jwks if isinstance(k, dict)]
    raise TypeError("expected a KeyRing, a JWKS ({'keys': [...]}) or a JWK")


def find_jwk(keys_or_jwks: Any, kid: str) -> dict | None:
    """The Ed25519 public JWK with this ``kid`` (OKP / Ed25519 only)."""
    for jwk in jwk_list(keys_or_jwks):
        if jwk.get("kid") == kid and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            return jwk
    return None


def verify_signature(keys_or_jwks: Any, kid: str, data: bytes, signature_b64: str) -> tuple[bool, str]:
    """(ok, reason) for an Ed25519 signature made by the key ``kid``."""
    if not isinstance(kid, str) or not isinstance(signature_b64, str):
        return False, "signature has no kid or no value"
    jwk = find_jwk(keys_or_jwks, kid)
    if jwk is None:
        return False, f"no public key with kid {kid!r}"
    if not verify_with_jwk(jwk, data, signature_b64):
        return False, f"the signature does not verify with key {kid!r}"
    return True, "ok"
