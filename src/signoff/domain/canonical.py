"""RFC 8785 (JSON Canonicalization Scheme) helpers."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical bytes of a JSON-compatible value."""
    return rfc8785.dumps(value)


def sha256_hex(value: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``value`` (the ``action_sha256`` of contract §4)."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
