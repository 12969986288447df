"""Ed25519 signing keys: grants (EdDSA JWT), evidence signatures, JWKS.

Replicas share one key: ``SIGNOFF_SIGNING_KEY`` (PEM text or a path), or a key generated
once and kept in the database.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def public_raw(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def jwk(self) -> dict:
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(self.public_raw()), "kid": self.kid,
                "use": "sig", "alg": "EdDSA"}

    def sign(self, data: bytes) -> str:
        return b64url(self.private.sign(data))

    def private_pem(self) -> str:
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()


def kid_for(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    # RFC 7638 thumbprint of the OKP key.
    thumb = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(thumb.encode()).digest())[:16]


def key_from_pem(pem: str | bytes) -> SigningKey:
    if isinstance(pem, str):
        pem = pem.encode()
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError("SIGNOFF_SIGNING_KEY must be an Ed25519 private key (PEM)")
    return SigningKey(kid_for(private.public_key()), private)


def key_from_setting(value: str) -> SigningKey:
    """``SIGNOFF_SIGNING_KEY``: PEM text, or a path to a PEM file."""
    text = value.strip()
    if "-----BEGIN" not in text:
        path = Path(text).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"SIGNOFF_SIGNING_KEY: not PEM text and cannot read {path}: {exc}") from None
    try:
        return key_from_pem(text)
    except ValueError as exc:
        raise ValueError(f"SIGNOFF_SIGNING_KEY: {exc}") from None


def generate() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    return SigningKey(kid_for(private.public_key()), private)


@dataclass
class KeyRing:
    """The active key, plus retired public keys kept in the JWKS until their grants expire."""

    active: SigningKey
    retired: list[SigningKey]
    loaded_at: datetime | None = None

    def jwks(self) -> dict:
        return {"keys": [self.active.jwk()] + [k.jwk() for k in self.retired]}

    def find(self, kid: str) -> SigningKey | None:
        return next((k for k in [self.active, *self.retired] if k.kid == kid), None)


def verify_with_jwk(jwk: dict, data: bytes, signature_b64: str) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        pub = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
        pub.verify(b64url_decode(signature_b64), data)
        return True
    except (InvalidSignature, KeyError, ValueError):
        return False
