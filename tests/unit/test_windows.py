"""Change-window and freeze arithmetic: timezones, overnight windows, DST, freeze overlap."""

from datetime import date, datetime, time, timedelta, timezone

import pytest

from signoff.policy import windows as win
from signoff.policy.windows import Freeze, Schedule, Window, check, in_windows, next_allowed, window_closing

UTC = timezone.utc
WEEKDAYS = frozenset(range(5))


def utc(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


def office(tz="Europe/Paris") -> Window:
    return Window(WEEKDAYS, time(9, 0), time(17, 0), tz)


def test_inside_and_outside_a_window_in_its_own_timezone():
    w = office()
    # 2026-03-02 is a Monday; Paris is UTC+1 in winter.
    assert not w.contains(utc(2026, 3, 2, 7, 59))
    assert w.contains(utc(2026, 3, 2, 8, 0))
    assert w.contains(utc(2026, 3, 2, 15, 59))
    assert not w.contains(utc(2026, 3, 2, 16, 0))  # end is exclusive
    assert not w.contains(utc(2026, 3, 7, 10, 0))  # Saturday


def test_local_day_decides_not_utc_day():
    # Tokyo is UTC+9: Monday 08:00 local is Sunday 23:00 UTC.
    w = Window(frozenset({0}), time(8, 0), time(10, 0), "Asia/Tokyo")
    assert w.contains(utc(2026, 3, 1, 23, 30))
    assert not w.contains(utc(2026, 3, 2, 23, 30))


def test_overnight_window_crosses_midnight():
    w = Window(frozenset({4}), time(22, 0), time(2, 0), "UTC")  # Friday 22:00 → Saturday 02:00
    assert w.contains(utc(2026, 3, 6, 23, 0))
    assert w.contains(utc(2026, 3, 7, 1, 59))  # Saturday, still Friday's window
    assert not w.contains(utc(2026, 3, 7, 2, 0))
    assert not w.contains(utc(2026, 3, 7, 23, 0))  # Saturday night has no window


def test_end_24_00_means_midnight():
    w = Window(frozenset({6}), time(0, 0), None, "UTC")
    assert w.contains(utc(2026, 3, 8, 23, 59))
    assert not w.contains(utc(2026, 3, 9, 0, 0))


def test_next_window_open_over_a_weekend():
    # Friday 18:00 Paris → Monday 09:00 Paris (08:00 UTC).
    assert win.next_window_open([office()], utc(2026, 3, 6, 17, 0)) == utc(2026, 3, 9, 8, 0)
    # Inside: itself.
    assert win.next_window_open([office()], utc(2026, 3, 9, 9, 0)) == utc(2026, 3, 9, 9, 0)


def test_dst_spring_forward_keeps_local_wall_clock():
    # Europe/Paris moves to UTC+2 on Sunday 2026-03-29: 09:00 local is 08:00 UTC before, 07:00 UTC after.
    w = office()
    assert win.next_window_open([w], utc(2026, 3, 27, 17, 0)) == utc(2026, 3, 30, 7, 0)
    assert w.contains(utc(2026, 3, 30, 7, 0))
    assert not w.contains(utc(2026, 3, 30, 6, 59))
    assert not w.contains(utc(2026, 3, 30, 15, 0))  # 17:00 local, closed


def test_dst_fall_back_in_new_york():
    # America/New_York falls back on Sunday 2026-11-01: 09:00 local is 13:00 UTC before, 14:00 UTC after.
    w = Window(frozenset(range(7)), time(9, 0), time(10, 0), "America/New_York")
    assert w.contains(utc(2026, 10, 31, 13, 30))
    assert not w.contains(utc(2026, 11, 1, 13, 30))
    assert w.contains(utc(2026, 11, 1, 14, 30))


def test_window_starting_in_the_dst_gap_opens_just_after_it():
    # 2026-03-08, New York: 02:00 → 03:00. A 02:30–04:00 window opens at 03:30 EDT (07:30 UTC).
    w = Window(frozenset({6}), time(2, 30), time(4, 0), "America/New_York")
    opens, closes = w.occurrence(date(2026, 3, 8))
    assert opens == utc(2026, 3, 8, 7, 30)
    assert closes == utc(2026, 3, 8, 8, 0)


def test_window_entirely_inside_the_gap_shifts_by_the_gap_instead_of_vanishing():
    # 02:00–02:30 does not exist that night: it becomes 03:00–03:30 EDT, never lost.
    w = Window(frozenset({6}), time(2, 0), time(2, 30), "America/New_York")
    assert win.next_window_open([w], utc(2026, 3, 8, 0, 0)) == utc(2026, 3, 8, 7, 0)
    assert w.contains(utc(2026, 3, 8, 7, 29)) and not w.contains(utc(2026, 3, 8, 7, 30))
    # A week later, the usual 02:00 EDT (06:00 UTC).
    assert win.next_window_open([w], utc(2026, 3, 8, 8, 0)) == utc(2026, 3, 15, 6, 0)


def test_several_windows_any_one_suffices():
    early = Window(WEEKDAYS, time(6, 0), time(7, 0), "UTC")
    late = Window(WEEKDAYS, time(20, 0), time(21, 0), "UTC")
    assert in_windows([early, late], utc(2026, 3, 2, 20, 30))
    assert win.next_window_open([early, late], utc(2026, 3, 2, 8, 0)) == utc(2026, 3, 2, 20, 0)


def test_no_windows_means_always_open():
    assert in_windows([], utc(2026, 3, 7, 3, 0))
    assert check([Schedule()], utc(2026, 3, 7, 3, 0)).allowed


def test_window_closing_follows_back_to_back_windows():
    a = Window(frozenset({0}), time(9, 0), time(12, 0), "UTC")
    b = Window(frozenset({0}), time(12, 0), time(14, 0), "UTC")
    assert window_closing([a, b], utc(2026, 3, 2, 10, 0)) == utc(2026, 3, 2, 14, 0)
    assert window_closing([a, b], utc(2026, 3, 2, 15, 0)) is None


def test_freeze_blocks_and_names_its_reason():
    f = Freeze(utc(2026, 3, 2, 10, 0), utc(2026, 3, 2, 12, 0), "quarter close")
    v = check([Schedule((), (f,))], utc(2026, 3, 2, 11, 0))
    assert not v.allowed
    assert "quarter close" in v.reason
    assert v.not_before == utc(2026, 3, 2, 12, 0)
    assert check([Schedule((), (f,))], utc(2026, 3, 2, 12, 0)).allowed  # end is exclusive


def test_overlapping_and_chained_freezes():
    f1 = Freeze(utc(2026, 3, 2, 10, 0), utc(2026, 3, 2, 12, 0), "one")
    f2 = Freeze(utc(2026, 3, 2, 11, 0), utc(2026, 3, 2, 13, 0), "two")
    f3 = Freeze(utc(2026, 3, 2, 13, 0), utc(2026, 3, 2, 14, 0), "three")
    assert next_allowed([Schedule((), (f1, f2, f3))], utc(2026, 3, 2, 10, 30)) == utc(2026, 3, 2, 14, 0)


def test_freeze_ending_outside_a_window_waits_for_the_next_window():
    w = office("UTC")
    f = Freeze(utc(2026, 3, 2, 10, 0), utc(2026, 3, 2, 18, 0), "incident")
    v = check([Schedule((w,), (f,))], utc(2026, 3, 2, 11, 0))
    assert not v.allowed and "incident" in v.reason
    assert v.not_before == utc(2026, 3, 3, 9, 0)


def test_window_opening_inside_a_freeze_waits_for_the_freeze_end():
    w = office("UTC")
    f = Freeze(utc(2026, 3, 6, 17, 0), utc(2026, 3, 10, 12, 0), "migration")
    assert next_allowed([Schedule((w,), (f,))], utc(2026, 3, 6, 18, 0)) == utc(2026, 3, 10, 12, 0)


def test_every_schedule_must_allow():
    mornings = Schedule((Window(frozenset(range(7)), time(6, 0), time(12, 0), "UTC"),))
    afternoons_overlap = Schedule((Window(frozenset(range(7)), time(10, 0), time(18, 0), "UTC"),))
    assert next_allowed([mornings, afternoons_overlap], utc(2026, 3, 2, 5, 0)) == utc(2026, 3, 2, 10, 0)
    assert not check([mornings, afternoons_overlap], utc(2026, 3, 2, 7, 0)).allowed


def test_never_within_the_horizon():
    f = Freeze(utc(2026, 1, 1), utc(2028, 1, 1), "forever-ish")
    v = check([Schedule((), (f,))], utc(2026, 3, 2))
    assert not v.allowed and v.not_before is None


@pytest.mark.parametrize("bad", ["9:00", "25:00", "12:60", "noon", "24:01", ""])
def test_bad_times(bad):
    with pytest.raises(ValueError):
        win.parse_hhmm(bad, allow_24=True)


def test_24_only_where_allowed_and_unknown_zone():
    with pytest.raises(ValueError):
        win.parse_hhmm("24:00")
    assert win.parse_hhmm("24:00", allow_24=True) is None
    with pytest.raises(ValueError):
        win.zone("Mars/Olympus")


def test_describe():
    assert office().describe() == "mon,tue,wed,thu,fri 09:00–17:00 Europe/Paris"
    assert timedelta(0) == timedelta(0)


@pytest.mark.parametrize(
    "window",
    [
        Window(WEEKDAYS, time(9, 0), time(17, 0), "Europe/Paris"),
        Window(frozenset({4, 5}), time(22, 0), time(2, 0), "America/New_York"),  # overnight, across DST
        Window(frozenset({6}), time(2, 30), time(3, 0), "Europe/Berlin"),  # inside the spring-forward gap
        Window(frozenset({0, 6}), time(1, 0), None, "America/New_York"),  # to midnight, over the fall-back hour
        Window(frozenset(range(7)), time(0, 0), None, "Asia/Kolkata"),
    ],
)
@pytest.mark.parametrize("order", ["forward", "backward", "shuffled"])
def test_contains_answers_as_the_occurrences_say_in_any_order_of_instants(window, order):
    """``contains`` keeps the span around the last instant asked about; whatever the order
    the instants come in, every answer is what the window's occurrences say."""
    import random

    instants = [utc(2026, 3, 6) + timedelta(minutes=13 * k) for k in range(2600)]  # both DST changes in the US
    instants += [utc(2026, 10, 23) + timedelta(minutes=11 * k) for k in range(2600)]  # and in Europe
    if order == "backward":
        instants.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(instants)
    win._SPANS.clear()
    for t in instants:
        assert window.contains(t) == any(o <= t < c for o, c in window.occurrences_around(t, 0)), t
