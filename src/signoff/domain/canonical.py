"""RFC 8785 (JSON Canonicalization Scheme).

``canonical_json`` gives the same bytes as the reference ``rfc8785`` package, several
times faster: it takes a fast path through the standard library's C JSON encoder only
where the two are provably identical, and hands everything else to ``rfc8785``:

- numbers: integers within ±(2**53 − 1); floats that are whole numbers below 2**53 (written
  as integers, as ECMAScript does) or whose magnitude is at least 1e-4 (below 2**53 for a
  fraction), where Python's shortest round-trip ``repr`` is the ECMAScript form; any other
  number (tiny, huge, big integers) sends the document down the reference path;
- text: no UTF-16 surrogate escapes; and in text holding non-ASCII characters literally
  (as stored JSON does), nothing from U+D800 to U+FFFF, literal or escaped — so object keys
  sort the same by code point as by UTF-16 code unit (astral planes included), and no lone
  surrogate can slip through;
- strings are escaped the way RFC 8785 (ECMAScript ``JSON.stringify``) escapes them,
  which is what ``json``'s C encoder does with ``ensure_ascii=False``: ``\\"``, ``\\\\``,
  ``\\b \\f \\n \\r \\t`` and ``\\u00xx`` (lower-case hex) for other controls, all else
  literal.

``tests/unit/test_evidence_canon.py`` checks the fast path against ``rfc8785`` on random
documents.
"""

from __future__ import annotations

import hashlib
import json
import re
from json import encoder as _json_encoder
from typing import Any

import rfc8785

MAX_SAFE = 2**53 - 1


def reference_canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes from the reference implementation (raises on values it refuses)."""
    return rfc8785.dumps(value)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical bytes of a JSON-compatible value."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return rfc8785.dumps(value)
    fast = canonical_text_of_json(text)
    if fast is not None:
        return fast.encode("utf-8")
    return rfc8785.dumps(value)


def sha256_hex(value: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``value`` (a grant's ``action_sha256``)."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


# -- the fast path ---------------------------------------------------------------------


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
_scan = _decoder.scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__; typeshed omits it
json_string = _json_encoder.encode_basestring  # C version: a str as an RFC 8785 JSON string
# (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys, allow_nan)
_c_make_encoder = getattr(_json_encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    _c_encode = _c_make_encoder(None, _refuse, json_string, None, ":", ",", True, False, False)

    def encode_canonical(value: Any) -> str:
        """Canonical JSON text of a value from ``scan_json``; TypeError/ValueError off the fast path."""
        return "".join(_c_encode(value, 0))
else:  # pragma: no cover - CPython always has the C encoder
    _py_encoder = json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_refuse
    )

    def encode_canonical(value: Any) -> str:
        """Canonical JSON text of a value from ``scan_json``; TypeError/ValueError off the fast path."""
        return _py_encoder.encode(value)


# In text with non-ASCII characters (as a store holds it), what the fast path must decline:
# U+D800–U+FFFF literally, or escaped (``\\uDxxx``–``\\uFxxx``). Without them, sorting keys by
# code point (Python) and by UTF-16 code unit (RFC 8785) agree, astral planes included,
# and no lone surrogate is left to encode.
_WIDE_UNSAFE = re.compile("[\ud800-\uffff]|\\\\u[d-fD-F]")


def scan_json(text: str) -> Any:
    """Parse JSON text for the fast path; None when the text is not eligible (or not JSON).

    Numbers come back as the fast encoder needs them (see the module docstring); values it
    must refuse come back as a marker that makes ``encode_canonical`` raise."""
    if "\\ud" in text or "\\uD" in text:
        return None
    if not text.isascii() and _WIDE_UNSAFE.search(text):
        return None
    try:
        value, end = _scan(text, 0)
    except (ValueError, StopIteration):
        return None
    if end != len(text) and text[end:].strip():
        return None
    return value


def canonical_text_of_json(text: str) -> str | None:
    """Canonical JSON (as ``str``) of a JSON document given as text; None: use ``rfc8785``."""
    value = scan_json(text)
    if value is None:
        return None
    try:
        return encode_canonical(value)
    except (TypeError, ValueError):
        return None
