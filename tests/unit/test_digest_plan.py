"""How many posts go one by one and how the rest are grouped into digests."""

from __future__ import annotations

import math

import pytest

from signoff.outbox.digest import digest_after, split
from signoff.outbox.pacing import POST, Pacer


@pytest.mark.parametrize("n, allowance, expected", [
    (3, 7, (3, [])),            # fits: all one by one
    (7, 7.9, (7, [])),
    (30, 7, (4, [9, 9, 8])),     # 4 alone + 3 digests = the 7 posts that fit
    (8, 7, (6, [2])),
    (11, 0, (0, [6, 5])),        # nothing fits: all digested, evenly
    (1, 0, (1, [])),             # a digest of one is just a post
    (2, 0, (0, [2])),
    (100, 7, (0, [10] * 10)),
])
def test_split(n, allowance, expected):
    assert split(n, allowance) == expected


@pytest.mark.parametrize("n", range(1, 120))
@pytest.mark.parametrize("allowance", [0, 1, 2.5, 7, 12])
def test_split_shows_every_request_once_and_fits_when_it_can(n, allowance):
    alone, sizes = split(n, allowance)
    assert alone + sum(sizes) == n
    assert all(2 <= s <= 10 for s in sizes)
    if sizes:
        assert max(sizes) - min(sizes) <= 1
        assert alone + len(sizes) <= max(math.floor(allowance), math.ceil(n / 10))


def test_digest_after_from_the_policy_snapshot():
    assert digest_after({"digest_after": "5s"}) == 5
    assert digest_after({"digest_after": "0s"}) == 0
    assert digest_after({"digest_after": "1m"}) == 60
    assert digest_after({}) == 5  # a snapshot from before the key: the default


def test_allowance_is_the_tokens_now_plus_the_refill_within_the_horizon():
    now = [0.0]
    pacer = Pacer(clock=lambda: now[0])
    assert pacer.allowance(POST, "C1", 5) == pytest.approx(2 + 5)  # burst 2, then 1 a second
    assert pacer.take(POST, "C1") == 0 and pacer.take(POST, "C1") == 0
    assert pacer.allowance(POST, "C1", 5) == pytest.approx(5)
    pacer.pause(POST, "C1", 3)
    assert pacer.allowance(POST, "C1", 5) == pytest.approx(2)
    assert pacer.allowance(POST, "C1", 2) == 0
    assert Pacer(share=2, clock=lambda: 0.0).allowance(POST, "C1", 4) == pytest.approx(1 + 2)
