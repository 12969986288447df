"""Signed evidence links: ``/evidence/{id}?exp=<unix>&sig=<base64url HMAC-SHA256>``.

The HMAC key is derived from the Ed25519 signing key with HKDF-SHA256 (RFC 5869,
``info = "signoff evidence-link v1"``), so every replica that shares the signing key (the
database-kept key or ``SIGNOFF_SIGNING_KEY``) makes and accepts the same links, and the
derived key reveals nothing about the signing key. The MAC covers the version, the request
id and the expiry: a link opens only its own request, only until ``exp``.

Given a ``KeyRing``, ``check_link`` also accepts links made with a retired key, so links
sent before a key rotation keep working until they expire.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from signoff.keys import KeyRing, SigningKey, b64url

_INFO = b"signoff evidence-link v1"
# The spellings sign_link issues, and the only ones check_link reads: a positive decimal
# without sign, leading zero, separator or space, in ASCII digits; unpadded base64url of a
# 32-byte MAC. (int() would also read "+12", "012", "1_2", " 12 " and Arabic-Indic digits.)
_EXP = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)
_SIG = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)


def _private_raw(material: Any) -> bytes:
    if isinstance(material, SigningKey):
        material = material.private
    if isinstance(material, Ed25519PrivateKey):
        return material.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    if isinstance(material, (bytes, bytearray)) and len(material) >= 16:
        return bytes(material)
    raise TypeError("evidence links need the signing key (SigningKey, Ed25519PrivateKey or raw bytes)")


@lru_cache(maxsize=16)
def _derive(raw: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(raw)


def link_key(material: Any) -> bytes:
    """The 32-byte HMAC key for evidence links, derived from the signing key."""
    return _derive(_private_raw(material))


def _mac(key: bytes, request_id: str, exp: int) -> str:
    msg = f"v1\n{request_id}\n{exp}".encode()
    return b64url(hmac.new(key, msg, hashlib.sha256).digest())


def sign_link(key_material: Any, request_id: str, exp: int) -> str:
    """The query string ``exp=…&sig=…`` for ``/evidence/{request_id}``, valid until ``exp``
    (unix seconds). ``key_material``: the active ``SigningKey`` (or a ``KeyRing``)."""
    if isinstance(key_material, KeyRing):
        key_material = key_material.active
    return urlencode({"exp": int(exp), "sig": _mac(link_key(key_material), request_id, int(exp))})


def check_link(key_material: Any, request_id: str, exp: int | str, sig: str, now: int | float | datetime) -> bool:
    """True when ``sig`` is this request's link signature for ``exp`` and ``exp`` has not
    passed. ``exp`` and ``sig`` are read only in the spelling ``sign_link`` issues (an ``int``
    is taken as it is). Constant-time comparison. ``key_material``: a ``SigningKey`` or a ``KeyRing``
    (any of its keys)."""
    if isinstance(exp, str) and _EXP.fullmatch(exp):
        exp_int = int(exp)
    elif type(exp) is int:
        exp_int = exp
    else:
        return False
    if not isinstance(sig, str) or not _SIG.fullmatch(sig) or not isinstance(request_id, str):
        return False
    now_s = now.timestamp() if isinstance(now, datetime) else float(now)
    if exp_int <= now_s:
        return False
    candidates = [key_material.active, *key_material.retired] if isinstance(key_material, KeyRing) else [key_material]
    ok = False
    for material in candidates:
        # compare with every key (no early exit), so timing says nothing about which matched
        ok |= hmac.compare_digest(_mac(link_key(material), request_id, exp_int).encode(), sig.encode())
    return ok
