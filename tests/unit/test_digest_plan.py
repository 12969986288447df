"""How many posts go one by one and how the rest are grouped into digests."""

from __future__ import annotations

import math

import pytest

from signoff.slack.digest import digest_after, split
from signoff.slack.pacing import POST, Pacer


@pytest.mark.parametrize(
    "n, allowance, free, expected",
    [
        (3, 7, 0, (3, 0, [])),  # fits: all one by one
        (7, 7.9, 0, (7, 0, [])),
        (30, 7, 0, (4, 0, [9, 9, 8])),  # 4 alone + 3 digests = the 7 posts that fit
        (8, 7, 0, (6, 0, [2])),
        (11, 0, 0, (0, 0, [6, 5])),  # nothing fits: all digested, evenly
        (1, 0, 0, (1, 0, [])),  # a digest of one is just a post
        (2, 0, 0, (0, 0, [2])),
        (100, 7, 0, (0, 0, [10] * 10)),
        (5, 0, 7, (0, 5, [])),  # a digest still owed has room: they join it, no new post
        (12, 1, 4, (0, 4, [8])),
        (12, 2, 4, (1, 4, [7])),
        (6, 3, 3, (3, 3, [])),
    ],
)
def test_split(n, allowance, free, expected):
    assert split(n, allowance, free) == expected


@pytest.mark.parametrize("n", range(1, 120))
@pytest.mark.parametrize("allowance", [0, 1, 2.5, 7, 12])
@pytest.mark.parametrize("free", [0, 3, 17])
def test_split_shows_every_request_once_and_fits_when_it_can(n, allowance, free):
    alone, joined, sizes = split(n, allowance, free)
    assert alone + joined + sum(sizes) == n
    assert joined <= free
    assert all(2 <= s <= 10 for s in sizes)
    if sizes:
        assert max(sizes) - min(sizes) <= 1
        assert joined == free, "open digests fill up before new ones are made"
        assert alone + len(sizes) <= max(math.floor(allowance), math.ceil(max(0, n - free) / 10))


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
