"""Ladder arithmetic: which step is due at ``now``, after downtime, with ``repeat``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from signoff.domain.ladder import EXPIRE, STEP, Ladder, next_due, owed

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
M = timedelta(minutes=1)


def ladder(afters, timeout, repeat=False) -> Ladder:
    return Ladder(tuple(a * M for a in afters), timeout * M, repeat)


def at(minutes: float) -> datetime:
    return T0 + minutes * M


def test_offsets_without_repeat():
    lad = ladder([10, 20], 30)
    assert [lad.offset(k) for k in range(3)] == [10 * M, 20 * M, None]
    assert lad.steps_total() == 2


@pytest.mark.parametrize(
    "minutes, fired, expected",
    [
        (0, 0, []),
        (9.99, 0, []),
        (10, 0, [0]),  # due exactly at its moment
        (15, 0, [0]),
        (15, 1, []),  # already fired: nothing owed
        (20, 1, [1]),
        (25, 2, []),
        (29.99, 2, []),
    ],
)
def test_which_step_is_due_at_now(minutes, fired, expected):
    assert ladder([10, 20], 30).due(T0, fired, at(minutes)) == expected


def test_after_downtime_every_owed_step_is_due_in_order():
    lad = ladder([5, 10, 15], 60)
    # down from minute 1 to minute 16: all three fell due meanwhile, none skipped
    assert lad.due(T0, 0, at(16)) == [0, 1, 2]
    # one fired before the outage: the other two, in order
    assert lad.due(T0, 1, at(16)) == [1, 2]


def test_owed_lists_steps_then_expiry_in_deadline_order():
    lad = ladder([10, 20], 30)
    got = owed(T0, at(30), lad, 0, at(45))
    assert [(o.kind, o.k, o.at) for o in got] == [(STEP, 0, at(10)), (STEP, 1, at(20)), (EXPIRE, None, at(30))]
    assert [o.at for o in got] == sorted(o.at for o in got)


def test_owed_before_any_deadline_is_empty_and_expiry_alone_when_steps_fired():
    lad = ladder([10, 20], 30)
    assert owed(T0, at(30), lad, 0, at(5)) == []
    assert [o.kind for o in owed(T0, at(30), lad, 2, at(30))] == [EXPIRE]


def test_steps_at_or_after_the_timeout_never_fire():
    # A ladder whose step lands on the timeout (config refuses it, but a snapshot or a
    # repeat can produce one): the step is never owed, the expiry is.
    lad = ladder([10, 30], 30)
    assert lad.offset(1) is None
    assert lad.due(T0, 1, at(100)) == []
    assert [o.kind for o in owed(T0, at(30), lad, 1, at(100))] == [EXPIRE]
    # A deadline earlier than the ladder's timeout also cuts steps off.
    assert [o.kind for o in owed(T0, at(15), ladder([10, 20], 30), 0, at(100))] == [STEP, EXPIRE]


def test_repeat_starts_over_every_period_until_the_timeout():
    lad = ladder([10, 20], 75, repeat=True)
    assert lad.period == 20 * M
    offsets = []
    k = 0
    while (off := lad.offset(k)) is not None:
        offsets.append(off / M)
        k += 1
    # cycles start at 0, 20, 40, 60: rungs at +10 and +20, cut at 75
    assert offsets == [10, 20, 30, 40, 50, 60, 70]
    assert [lad.step_index(k) for k in range(7)] == [0, 1, 0, 1, 0, 1, 0]
    assert [lad.cycle(k) for k in range(7)] == [0, 0, 1, 1, 2, 2, 3]
    assert lad.steps_total() == 7


def test_repeat_after_downtime_owes_every_missed_round_in_order():
    lad = ladder([10, 20], 75, repeat=True)
    assert lad.due(T0, 2, at(55)) == [2, 3, 4]
    got = owed(T0, at(75), lad, 2, at(90))
    assert [o.k for o in got if o.kind == STEP] == [2, 3, 4, 5, 6]
    assert got[-1].kind == EXPIRE and got[-1].at == at(75)


def test_repeat_with_a_single_rung():
    lad = ladder([5], 16, repeat=True)
    assert [lad.offset(k) / M for k in range(3)] == [5, 10, 15]
    assert lad.offset(3) is None


def test_no_steps_only_expiry():
    lad = ladder([], 30, repeat=True)
    assert lad.offset(0) is None
    assert lad.due(T0, 0, at(100)) == []
    assert next_due(T0, at(30), lad, 0) == at(30)


def test_next_due_is_the_next_step_or_the_deadline():
    lad = ladder([10, 20], 30)
    assert next_due(T0, at(30), lad, 0) == at(10)
    assert next_due(T0, at(30), lad, 1) == at(20)
    assert next_due(T0, at(30), lad, 2) == at(30)
    assert lad.next_at(T0, 2) is None


def test_moments_are_monotonic_so_owed_is_a_prefix():
    lad = ladder([1, 4, 9], 100, repeat=True)
    offs = [lad.offset(k) for k in range(lad.steps_total())]
    assert offs == sorted(offs)
    for minutes in range(0, 101, 7):
        due = lad.due(T0, 0, at(minutes))
        assert due == list(range(len(due)))
