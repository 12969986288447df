"""The signing-key schedule: which key signs, which are published, when a replaced key leaves."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from signoff.keys import ScheduledKey, generate, keys_from_setting, ring_from_schedule

T0 = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)
WEEK = timedelta(days=7)


def kids(keys):
    return [k.kid for k in keys]


def test_the_newest_key_whose_moment_has_come_signs():
    a, b = generate(), generate()
    ring = ring_from_schedule(
        [ScheduledKey(a, T0), ScheduledKey(b, T0 + timedelta(hours=1))], T0 + timedelta(hours=2), WEEK
    )
    assert ring.active.kid == b.kid
    assert kids(ring.retired) == [a.kid]
    assert kids(ring.published()) == [b.kid, a.kid]


def test_a_key_not_yet_active_is_published_but_does_not_sign():
    a, b = generate(), generate()
    ring = ring_from_schedule(
        [ScheduledKey(a, T0), ScheduledKey(b, T0 + timedelta(minutes=10))], T0 + timedelta(minutes=1), WEEK
    )
    assert ring.active.kid == a.kid
    assert kids(ring.upcoming) == [b.kid]
    assert {k["kid"] for k in ring.jwks()["keys"]} == {a.kid, b.kid}


def test_a_replaced_key_leaves_the_jwks_once_everything_it_signed_has_expired():
    a, b, c = generate(), generate(), generate()
    schedule = [ScheduledKey(a, T0), ScheduledKey(b, T0 + timedelta(days=1)), ScheduledKey(c, T0 + timedelta(days=5))]
    # a was replaced on day 1: published until day 8; b replaced on day 5: until day 12
    day = lambda n: T0 + timedelta(days=n)  # noqa: E731
    assert kids(ring_from_schedule(schedule, day(8) - timedelta(seconds=1), WEEK).published()) == [c.kid, b.kid, a.kid]
    ring = ring_from_schedule(schedule, day(8), WEEK)
    assert kids(ring.published()) == [c.kid, b.kid]
    assert ring.find(a.kid) is not None, "still known here, to verify old checkpoints and bundles"
    assert {k["kid"] for k in ring.all_jwks()["keys"]} == {a.kid, b.kid, c.kid}
    assert kids(ring_from_schedule(schedule, day(12), WEEK).published()) == [c.kid]


def test_several_pem_keys_in_the_setting_the_first_signs():
    a, b = generate(), generate()
    keys = keys_from_setting(a.private_pem() + "\n" + b.private_pem())
    assert kids(keys) == [a.kid, b.kid]


def test_a_bad_second_key_is_named():
    a = generate()
    bad = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ValueError, match="key 2 of 2"):
        keys_from_setting(a.private_pem() + bad)
