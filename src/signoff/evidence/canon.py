"""Fast RFC 8785 canonical bytes for the evidence hash chain.

``signoff.domain.chain`` defines the chain with the reference ``rfc8785`` package; this
module produces the same bytes several times faster, so ``verify`` can check a large
store quickly. It only takes the fast path where the two are provably identical:

- numbers: integers within ±(2**53 − 1); floats that are whole numbers below 2**53 (written
  as integers, as ECMAScript does) or whose magnitude is at least 1e-4 (below 2**53 for a
  fraction), where Python's shortest round-trip ``repr`` is the ECMAScript form; any other
  number (tiny, huge, big integers) sends the document down the slow path;
- no UTF-16 surrogate escapes in the text and the text is ASCII (so object keys sort the
  same by code point as by UTF-16 code unit, and no lone surrogate can slip through);
- strings are escaped the way RFC 8785 (ECMAScript ``JSON.stringify``) escapes them,
  which is what ``json``'s C encoder does with ``ensure_ascii=False``: ``\\"``, ``\\\\``,
  ``\\b \\f \\n \\r \\t`` and ``\\u00xx`` (lower-case hex) for other controls, all else
  literal.

Everything else falls back to ``rfc8785`` itself. ``tests/unit/test_evidence_canon.py``
checks the two agree.
"""

from __future__ import annotations

import hashlib
import json
from json import encoder as _json_encoder
from typing import Any

import rfc8785

from signoff.domain.canonical import canonical_json

MAX_SAFE = 2**53 - 1


class _Unsafe:
    """A parsed value the fast encoder must refuse (the C encoder raises TypeError)."""

    __slots__ = ()


_UNSAFE = _Unsafe()


def _parse_int(text: str) -> int | _Unsafe:
    if len(text) < 16:
        return int(text)
    value = int(text)
    return value if -MAX_SAFE <= value <= MAX_SAFE else _UNSAFE


def _parse_float(text: str) -> float | int | _Unsafe:
    value = float(text)
    size = abs(value)
    if value.is_integer():
        return int(value) if size <= MAX_SAFE else _UNSAFE
    return value if size >= 1e-4 else _UNSAFE


def _refuse(obj: Any) -> Any:
    raise TypeError("not on the fast path")


_decoder = json.JSONDecoder(parse_float=_parse_float, parse_int=_parse_int)
_scan = _decoder.scan_once
_encode_str = _json_encoder.encode_basestring  # C version; ensure_ascii=False escaping
json_string = _encode_str  # a str as an RFC 8785 JSON string (encode to UTF-8 afterwards)
# (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys, allow_nan)
_c_make_encoder = getattr(_json_encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    _c_encode = _c_make_encoder(None, _refuse, _encode_str, None, ":", ",", True, False, False)

    def _encode(value: Any) -> str:
        return "".join(_c_encode(value, 0))
else:  # pragma: no cover - CPython always has the C encoder
    _py = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                           default=_refuse)
    _encode = _py.encode


class NotCanonicalizable(ValueError):
    """The value cannot be expressed as RFC 8785 JSON (so the writer could not have hashed it)."""


def scan_json(text: str) -> Any:
    """Parse JSON text for the fast path; None when the text is not eligible (or not JSON).

    Numbers come back as the fast encoder needs them (see the module docstring); values it
    must refuse come back as a marker that makes ``encode_canonical`` raise."""
    if "\\ud" in text or "\\uD" in text or not text.isascii():
        return None
    try:
        value, end = _scan(text, 0)
    except (ValueError, StopIteration):
        return None
    if end != len(text) and text[end:].strip():
        return None
    return value


def encode_canonical(value: Any) -> str:
    """Canonical JSON text of a value from ``scan_json``; TypeError/ValueError off the fast path."""
    return _encode(value)


def canonical_text_of_json(text: str) -> str | None:
    """Canonical JSON (as ``str``) of a JSON document given as text; None: use the slow path."""
    value = scan_json(text)
    if value is None:
        return None
    try:
        return _encode(value)
    except (TypeError, ValueError):
        return None


def canonical_bytes_of_json(text: str) -> bytes:
    """RFC 8785 bytes of the JSON document ``text`` (fast path, else ``rfc8785``)."""
    fast = canonical_text_of_json(text)
    if fast is not None:
        return fast.encode("utf-8")
    return slow_canonical(json.loads(text))


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 bytes of a Python JSON value (fast path when provably identical)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return slow_canonical(value)
    return canonical_bytes_of_json(text)


def slow_canonical(value: Any) -> bytes:
    try:
        return canonical_json(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, OverflowError) as exc:
        raise NotCanonicalizable(str(exc)) from None


def sha256_hex_of(value: Any) -> str:
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


# -- the chain ------------------------------------------------------------------------
# The event body's keys in RFC 8785 order: actor, at, data, request_id, seq, type.


def event_bytes(request_id: str, seq: int, at: str, type_: str, actor: str, data_text: str) -> bytes:
    """Canonical bytes of ``chain.event_body(...)`` with ``data`` given as JSON text."""
    data = canonical_text_of_json(data_text)
    if data is not None:
        try:
            return ('{"actor":%s,"at":%s,"data":%s,"request_id":%s,"seq":%d,"type":%s}' % (
                _encode_str(actor), _encode_str(at), data, _encode_str(request_id), seq, _encode_str(type_),
            )).encode("utf-8")
        except (TypeError, UnicodeEncodeError):
            pass
    return slow_canonical({"request_id": request_id, "seq": seq, "at": at, "type": type_, "actor": actor,
                           "data": json.loads(data_text)})


def event_hash(prev_hash: str, request_id: str, seq: int, at: str, type_: str, actor: str,
               data_text: str) -> str:
    """``chain.link(prev_hash, chain.event_body(...))`` from the stored columns."""
    return hashlib.sha256(prev_hash.encode() + event_bytes(request_id, seq, at, type_, actor, data_text)).hexdigest()


def ledger_hash(prev_hash: str, seq: int, request_id: str, at: str) -> str:
    """The ledger's link: ``chain.link(prev, {"seq", "request_id", "at"})``."""
    if at.isascii() and request_id.isascii() and -MAX_SAFE <= seq <= MAX_SAFE:
        body = ('{"at":%s,"request_id":%s,"seq":%d}' % (_encode_str(at), _encode_str(request_id), seq)).encode()
    else:
        body = slow_canonical({"seq": seq, "request_id": request_id, "at": at})
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()
