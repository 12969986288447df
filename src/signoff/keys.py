"""Ed25519 signing keys: grants (EdDSA JWT), evidence signatures, JWKS.

Replicas share one key: ``SIGNOFF_SIGNING_KEY`` (PEM text or a path), or a key generated
once and kept in the database.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url(self.public_raw()),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }

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
    """``SIGNOFF_SIGNING_KEY``: PEM text, or a path to a PEM file; the first key signs."""
    return keys_from_setting(value)[0]


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", re.S)


def keys_from_setting(value: str) -> list[SigningKey]:
    """Every key in ``SIGNOFF_SIGNING_KEY`` (PEM text or a path), in order. The first signs;
    the others are only published, which is how a key is rotated without a database: add the
    new key second, roll out, swap the two, roll out, drop the old one once its grants and
    links have expired."""
    text = value.strip()
    if "-----BEGIN" not in text:
        path = Path(text).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"SIGNOFF_SIGNING_KEY: not PEM text and cannot read {path}: {exc}") from None
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(text)] or [text]
    keys = []
    for n, block in enumerate(blocks, 1):
        try:
            keys.append(key_from_pem(block))
        except ValueError as exc:
            where = f" (key {n} of {len(blocks)})" if len(blocks) > 1 else ""
            raise ValueError(f"SIGNOFF_SIGNING_KEY{where}: {exc}") from None
    return keys


def generate() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    return SigningKey(kid_for(private.public_key()), private)


@dataclass
class KeyRing:
    """The active key, the keys around it, and which of them the JWKS publishes.

    ``upcoming``: made by ``signoff keys rotate --in …``, published before they sign anything,
    so verifiers that cache the JWKS know them in time. ``retired``: signed earlier grants,
    links and checkpoints; kept for verification. ``unpublished``: kids of retired keys whose
    grants and evidence links have all expired — still used to verify here, no longer served.
    """

    active: SigningKey
    retired: list[SigningKey]
    loaded_at: datetime | None = None
    upcoming: list[SigningKey] = field(default_factory=list)
    unpublished: frozenset[str] = frozenset()

    def published(self) -> list[SigningKey]:
        return [self.active, *self.upcoming, *(k for k in self.retired if k.kid not in self.unpublished)]

    def jwks(self) -> dict:
        return {"keys": [k.jwk() for k in self.published()]}

    def all_jwks(self) -> dict:
        """Every public key ever used here, published or not (for checking old exports offline)."""
        return {"keys": [k.jwk() for k in [self.active, *self.upcoming, *self.retired]]}

    def find(self, kid: str) -> SigningKey | None:
        return next((k for k in [self.active, *self.upcoming, *self.retired] if k.kid == kid), None)

    # usecases.ports.GrantSigner ------------------------------------------------------
    def sign_grant(self, claims: dict) -> tuple[str, str]:
        """(an EdDSA JWT of ``claims`` signed by the active key, that key's id)."""
        import jwt

        key = self.active
        return jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": key.kid}), key.kid

    def sign_link(self, request_id: str, exp: int) -> str:
        """The query string of an evidence link (``evidence.links``) signed by the active key."""
        from signoff.evidence.links import sign_link

        return sign_link(self.active, request_id, exp)


@dataclass(frozen=True)
class ScheduledKey:
    """A stored key and the moment it becomes (or became) the one that signs."""

    key: SigningKey
    activates: datetime


def ring_from_schedule(schedule: list[ScheduledKey], now: datetime, retention: timedelta) -> KeyRing:
    """The ring at ``now``: the newest key whose activation has come signs; keys not yet
    active are upcoming; an older key retires when its successor activates and leaves the
    JWKS ``retention`` later (the longest a grant or evidence link it signed can live)."""
    if not schedule:
        raise ValueError("no signing key")
    ordered = sorted(schedule, key=lambda s: (s.activates, s.key.kid))
    live = [s for s in ordered if s.activates <= now] or ordered[:1]
    active = live[-1]
    upcoming = [s.key for s in ordered if s.activates > now and s is not active]
    older = live[:-1]
    unpublished = frozenset(
        s.key.kid for s, successor in zip(older, live[1:], strict=True) if successor.activates + retention <= now
    )
    return KeyRing(
        active=active.key,
        retired=[s.key for s in reversed(older)],
        loaded_at=now,
        upcoming=upcoming,
        unpublished=unpublished,
    )


def verify_with_jwk(jwk: dict, data: bytes, signature_b64: str) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        pub = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
        pub.verify(b64url_decode(signature_b64), data)
        return True
    except (InvalidSignature, KeyError, ValueError):
        return False
