"""Signed evidence links: HMAC-SHA256 with a key derived from the signing key."""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qs

from signoff.evidence.links import check_link, link_key, sign_link
from signoff.keys import KeyRing, generate, key_from_pem

NOW = 1_800_000_000


def _parts(query: str) -> tuple[int, str]:
    q = parse_qs(query)
    return int(q["exp"][0]), q["sig"][0]


def test_round_trip_and_expiry():
    key = generate()
    exp, sig = _parts(sign_link(key, "req-1", NOW + 60))
    assert exp == NOW + 60
    assert check_link(key, "req-1", exp, sig, NOW)
    assert check_link(key, "req-1", str(exp), sig, datetime.fromtimestamp(NOW, timezone.utc))
    assert not check_link(key, "req-1", exp, sig, NOW + 60)  # expired at exp
    assert not check_link(key, "req-1", exp, sig, NOW + 3600)


def test_altered_links_fail():
    key = generate()
    exp, sig = _parts(sign_link(key, "req-1", NOW + 60))
    assert not check_link(key, "req-2", exp, sig, NOW)  # another request
    assert not check_link(key, "req-1", exp + 1, sig, NOW)  # a later expiry
    assert not check_link(key, "req-1", exp, sig[:-1] + ("A" if sig[-1] != "A" else "B"), NOW)
    assert not check_link(key, "req-1", exp, "", NOW)
    assert not check_link(key, "req-1", "soon", sig, NOW)
    assert not check_link(key, "req-1", exp, "x" * 500, NOW)
    assert not check_link(generate(), "req-1", exp, sig, NOW)  # another key


def test_every_replica_with_the_same_key_agrees():
    pem = generate().private_pem()
    a, b = key_from_pem(pem), key_from_pem(pem)
    assert link_key(a) == link_key(b)
    exp, sig = _parts(sign_link(a, "req-9", NOW + 5))
    assert check_link(b, "req-9", exp, sig, NOW)
    assert link_key(a) != a.private.private_bytes_raw()  # derived, not the key itself


def test_links_made_before_a_rotation_still_open():
    old, new = generate(), generate()
    exp, sig = _parts(sign_link(old, "req-1", NOW + 60))
    ring = KeyRing(active=new, retired=[old])
    assert check_link(ring, "req-1", exp, sig, NOW)
    assert not check_link(new, "req-1", exp, sig, NOW)
    exp2, sig2 = _parts(sign_link(ring, "req-1", NOW + 60))
    assert check_link(new, "req-1", exp2, sig2, NOW)


def test_only_the_issued_spelling_of_exp_opens():
    key = generate()
    query = sign_link(key, "req-1", NOW + 60)
    exp, sig = parse_qs(query)["exp"][0], parse_qs(query)["sig"][0]
    assert exp == str(NOW + 60) and check_link(key, "req-1", exp, sig, NOW)
    arabic = "".join(chr(0x660 + int(d)) for d in exp)
    devanagari = "".join(chr(0x966 + int(d)) for d in exp)
    for spelling in (
        f"+{exp}",
        f"0{exp}",
        f"{exp[:4]}_{exp[4:]}",
        f" {exp}",
        f"{exp} ",
        f"{exp}\n",
        f"\t{exp}",
        arabic,
        devanagari,
        f"{exp}.0",
        f"{exp}e0",
        "",
        None,
        float(exp),
        True,
    ):
        assert not check_link(key, "req-1", spelling, sig, NOW), repr(spelling)


def test_only_the_issued_spelling_of_sig_opens():
    key = generate()
    exp, sig = _parts(sign_link(key, "req-1", NOW + 60))
    assert len(sig) == 43
    for spelling in (
        sig + "=",
        sig + "==",
        f" {sig}",
        f"{sig} ",
        f"{sig}\n",
        sig.encode(),
        None,
        sig.replace("-", "+").replace("_", "/") if ("-" in sig or "_" in sig) else sig + "A",
        "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in sig),
    ):  # fullwidth
        assert not check_link(key, "req-1", exp, spelling, NOW), repr(spelling)
