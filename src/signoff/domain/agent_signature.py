"""The agent signature scheme, one recipe per version (the ``X-Signoff-Signature`` header).

- ``v1=<hex HMAC-SHA256(secret, "v1:" + timestamp + ":" + body)>`` binds the timestamp and
  the body only: the same headers are valid on any method and path with that body.
- ``v2=<hex HMAC-SHA256(secret, "v2:" + timestamp + ":" + METHOD + ":" + target + ":" + body)>``
  also binds the upper-case method and the request target as sent on the wire (the path,
  percent-encoded as sent, plus ``?query`` when there is one).

A header may carry several, comma-separated: ``v1=…,v2=…``. Used both ways: to check an
agent's request and to sign the executor webhook.
"""

from __future__ import annotations

import hashlib
import hmac
import re

V1 = "v1"
V2 = "v2"
VERSIONS = (V1, V2)

_ENTRY = re.compile(r"(v[0-9]{1,3})=([0-9a-f]{64})")


class MalformedSignature(ValueError):
    """The header is not a comma-separated list of ``vN=<64 lower-case hex digits>``."""


def _text(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def sign_v1(secret: bytes, timestamp: str, body: bytes) -> str:
    """``v1=<hex>`` for ``body`` sent at ``timestamp`` (unix seconds, as in the header)."""
    message = b"v1:" + _text(timestamp) + b":" + body
    return "v1=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_v2(secret: bytes, timestamp: str, method: str, target: str | bytes, body: bytes) -> str:
    """``v2=<hex>`` for ``method`` on ``target`` (path plus ``?query``, exactly as sent)."""
    message = b"v2:" + _text(timestamp) + b":" + _text(method.upper()) + b":" + _text(target) + b":" + body
    return "v2=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_both(secret: bytes, timestamp: str, method: str, target: str | bytes, body: bytes) -> str:
    """``v1=…,v2=…``: accepted by servers that know only v1 and checked as v2 by the others."""
    return sign_v1(secret, timestamp, body) + "," + sign_v2(secret, timestamp, method, target, body)


def parse_header(value: str) -> dict[str, str]:
    """The header's signatures by version (``{"v1": "v1=…", "v2": "v2=…"}``).

    Versions this module does not know are skipped (a newer client may add one next to
    v2); a malformed entry, or one version given twice, raises MalformedSignature.
    """
    found: dict[str, str] = {}
    for part in value.split(","):
        entry = part.strip(" \t")
        m = _ENTRY.fullmatch(entry)
        if m is None:
            raise MalformedSignature("X-Signoff-Signature must be v1=<hex> and/or v2=<hex>, comma-separated")
        version = m.group(1)
        if version in found:
            raise MalformedSignature(f"X-Signoff-Signature carries {version} twice")
        found[version] = entry
    return {v: s for v, s in found.items() if v in VERSIONS}


def matches(expected: str, given: str) -> bool:
    """Constant-time comparison of two ``vN=<hex>`` strings."""
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii"))
