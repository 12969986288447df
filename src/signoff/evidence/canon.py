"""Fast RFC 8785 canonical bytes for the evidence hash chain, from stored JSON text.

``signoff.domain.canonical`` holds the fast path (the standard library's C JSON encoder
where it provably gives the reference ``rfc8785`` bytes, see there); this module applies
it to the stored columns, so ``verify`` can check a large store quickly without building
Python values it does not need. Everything off the fast path goes to ``rfc8785`` itself.
``tests/unit/test_evidence_canon.py`` checks the two agree.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

from signoff.domain.canonical import (  # re-exported for the verifier
    MAX_SAFE,
    canonical_json,
    canonical_text_of_json,
    encode_canonical,
    json_string,
    reference_canonical_json,
    scan_json,
)

__all__ = [
    "MAX_SAFE",
    "NotCanonicalizable",
    "canonical_bytes",
    "canonical_bytes_of_json",
    "canonical_text_of_json",
    "encode_canonical",
    "event_bytes",
    "event_hash",
    "json_string",
    "ledger_hash",
    "scan_json",
    "slow_canonical",
]

# what ``rfc8785`` raises for a value it refuses
_REFUSED = (rfc8785.CanonicalizationError, TypeError, ValueError, OverflowError)


class NotCanonicalizable(ValueError):
    """The value cannot be expressed as RFC 8785 JSON (so the writer could not have hashed it)."""


def canonical_bytes_of_json(text: str) -> bytes:
    """RFC 8785 bytes of the JSON document ``text`` (fast path, else ``rfc8785``)."""
    fast = canonical_text_of_json(text)
    if fast is not None:
        return fast.encode("utf-8")
    return slow_canonical(json.loads(text))


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 bytes of a Python JSON value (``domain.canonical.canonical_json``: the fast
    path when provably identical); a value RFC 8785 refuses raises ``NotCanonicalizable``."""
    try:
        return canonical_json(value)
    except _REFUSED as exc:
        raise NotCanonicalizable(str(exc)) from None


def slow_canonical(value: Any) -> bytes:
    try:
        return reference_canonical_json(value)
    except _REFUSED as exc:
        raise NotCanonicalizable(str(exc)) from None


# -- the chain ------------------------------------------------------------------------
# The event body's keys in RFC 8785 order: actor, at, data, request_id, seq, type.


def event_bytes(request_id: str, seq: int, at: str, type_: str, actor: str, data_text: str) -> bytes:
    """Canonical bytes of ``chain.event_body(...)`` with ``data`` given as JSON text."""
    data = canonical_text_of_json(data_text)
    if data is not None:
        try:
            return (
                '{"actor":%s,"at":%s,"data":%s,"request_id":%s,"seq":%d,"type":%s}'
                % (
                    json_string(actor),
                    json_string(at),
                    data,
                    json_string(request_id),
                    seq,
                    json_string(type_),
                )
            ).encode("utf-8")
        except (TypeError, UnicodeEncodeError):
            pass
    return slow_canonical(
        {"request_id": request_id, "seq": seq, "at": at, "type": type_, "actor": actor, "data": json.loads(data_text)}
    )


def event_hash(prev_hash: str, request_id: str, seq: int, at: str, type_: str, actor: str, data_text: str) -> str:
    """``chain.link(prev_hash, chain.event_body(...))`` from the stored columns."""
    return hashlib.sha256(prev_hash.encode() + event_bytes(request_id, seq, at, type_, actor, data_text)).hexdigest()


def ledger_hash(prev_hash: str, seq: int, request_id: str, at: str) -> str:
    """The ledger's link: ``chain.link(prev, {"seq", "request_id", "at"})``."""
    if at.isascii() and request_id.isascii() and -MAX_SAFE <= seq <= MAX_SAFE:
        body = ('{"at":%s,"request_id":%s,"seq":%d}' % (json_string(at), json_string(request_id), seq)).encode()
    else:
        body = slow_canonical({"seq": seq, "request_id": request_id, "at": at})
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()
