"""The verifier's fast canonical JSON agrees with the reference ``rfc8785`` package."""

from __future__ import annotations

import json
import random
import struct

import pytest
import rfc8785

from signoff.domain import chain
from signoff.domain.canonical import canonical_json
from signoff.evidence.canon import (
    NotCanonicalizable,
    canonical_bytes,
    canonical_bytes_of_json,
    canonical_text_of_json,
    event_hash,
    ledger_hash,
)

STRINGS = [
    "",
    "plain",
    'quote " backslash \\ slash /',
    "tab\tnew\nline\rcr\bbs\fff",
    "\x00\x01\x1f\x7f",
    "é ü ß",
    "€ \u2028 \u2029 \ufeff",
    "\ue000 private",
    "emoji 😀 and 𝄞",
    "<script>alert(1)</script>",
    "'single'",
    "a" * 300,
]
NUMBERS = [
    0,
    1,
    -1,
    42,
    2**31,
    -(2**31),
    2**53 - 1,
    -(2**53 - 1),
    0.0,
    -0.0,
    0.5,
    1.5,
    -2.25,
    0.1,
    1e-4,
    9.999e-5,
    1e-7,
    1e-6,
    123456.789,
    1e15,
    1e16,
    1e21,
    1.7976931348623157e308,
    5e-324,
    2.0**53,
    3.0,
    0.30000000000000004,
    100.0,
    1e20,
]


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.random()
    if depth > 3 or kind < 0.35:
        pick = rng.random()
        if pick < 0.4:
            return rng.choice(STRINGS) + str(rng.randint(0, 9))
        if pick < 0.55:
            return rng.choice(NUMBERS)
        if pick < 0.65:
            return struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if pick < 0.75:
            return rng.randint(-(2**60), 2**60)
        return rng.choice([True, False, None])
    if kind < 0.65:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = rng.sample(STRINGS + ["a", "b", "B", "aa", "é", "😀", "\ue000", "1", "10", "2"], rng.randint(0, 5))
    return {k: _random_value(rng, depth + 1) for k in keys}


def _reference(value):
    try:
        return rfc8785.dumps(value)
    except Exception:
        return None


def test_fast_path_matches_rfc8785_on_random_documents():
    rng = random.Random(8785)
    fast = 0
    for _ in range(5000):
        value = _random_value(rng)
        try:
            text = json.dumps(value, allow_nan=False)
        except ValueError:
            continue
        ref = _reference(json.loads(text))
        got = canonical_text_of_json(text)
        if got is not None:
            fast += 1
            assert got.encode("utf-8") == ref, text
        try:
            assert canonical_bytes(json.loads(text)) == ref
        except NotCanonicalizable:
            assert ref is None
        # what the writers hash with (domain.canonical) gives the reference bytes too
        if ref is None:
            with pytest.raises(Exception):  # noqa: B017 - whatever the reference refused, this refuses too
                canonical_json(value)
        else:
            assert canonical_json(value) == ref, value
    assert fast > 1000  # the fast path is the common one


# text from every plane: what a store holds literally (its JSON written with ensure_ascii=False)
WIDE = [
    "é",
    "ß",
    "Ω",
    "щ",
    "ש",
    "م",
    "中",
    "€",
    "\u2028",
    "\u2029",
    "\x7f",
    "\x85",
    "e\u0301",
    "\u202e",
    "\ud7ff",
    "\ue000",
    "\uffff",
    "\ufeff",
    "😀",
    "𝄞",
    "\U00010000",
    "\U0010ffff",
    "\\u00e9",
    "\\ud800",
    '"',
    "\n",
]


def _wide_text(rng: random.Random) -> str:
    return "".join(rng.choice(WIDE + ["a", "Z", " ", "1"]) for _ in range(rng.randint(0, 6)))


def _wide_value(rng: random.Random, depth: int = 0):
    kind = rng.random()
    if depth > 3 or kind < 0.4:
        return _wide_text(rng) if rng.random() < 0.8 else rng.choice(NUMBERS)
    if kind < 0.6:
        return [_wide_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_wide_text(rng): _wide_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def test_fast_path_matches_rfc8785_on_literal_unicode():
    """Stored text carries non-ASCII literally; the fast path takes it wherever it provably
    gives the reference bytes (keys sort by UTF-16 code units in RFC 8785, by code point in
    Python: they agree unless U+D800–U+FFFF is in the text), and declines the rest."""
    rng = random.Random(2028)
    fast = fast_wide = 0
    for _ in range(5000):
        value = _wide_value(rng)
        text = json.dumps(
            value, ensure_ascii=False, sort_keys=rng.random() < 0.5, separators=rng.choice([(",", ":"), (", ", ": ")])
        )
        ref = _reference(json.loads(text))
        got = canonical_text_of_json(text)
        if got is not None:
            fast += 1
            fast_wide += not text.isascii()
            assert got.encode("utf-8") == ref, text
        assert canonical_bytes_of_json(text) == ref
    assert fast_wide > 1000, (fast, fast_wide)


@pytest.mark.parametrize(
    "value",
    [{"k": v} for v in NUMBERS]
    + [{"s": s} for s in STRINGS]
    + [{"😀": 1, "\ue000": 2}, {"b": 1, "a": {"d": [1, 2, {"c": None}]}}],
)
def test_known_values(value):
    assert canonical_bytes(value) == rfc8785.dumps(value)


def test_values_outside_rfc8785_are_refused():
    for value in ({"n": 2**53}, {"n": -(2**60)}, ["\ud800"]):
        with pytest.raises(NotCanonicalizable):
            canonical_bytes(value)


def test_event_and_ledger_hashes_match_the_chain_module():
    rng = random.Random(7)
    prev = chain.GENESIS
    for seq in range(1, 400):
        data = _random_value(rng)
        if not isinstance(data, dict):
            data = {"v": data}
        body = chain.event_body("req-é-1", seq, "2026-03-02T09:00:00.000001Z", "t.ype", rng.choice(STRINGS), data)
        try:
            expected = chain.link(prev, body)
        except Exception:
            with pytest.raises(NotCanonicalizable):
                event_hash(prev, body["request_id"], seq, body["at"], body["type"], body["actor"], json.dumps(data))
            continue
        assert (
            event_hash(prev, body["request_id"], seq, body["at"], body["type"], body["actor"], json.dumps(data))
            == expected
        )
        prev = expected
    assert ledger_hash(prev, 7, "r-1", "2026-03-02T09:00:00.000000Z") == chain.link(
        prev, {"seq": 7, "request_id": "r-1", "at": "2026-03-02T09:00:00.000000Z"}
    )
