"""Change windows and freezes. Pure: every moment is an argument, every result aware UTC.

A *window* is a weekly wall-clock range in an IANA timezone: on each listed day it opens
at ``start`` local time and closes at ``end`` local time — on the next day when ``end``
is not after ``start`` (``22:00``–``02:00``), or at the following midnight for ``24:00``.
Local times are turned into instants with ``zoneinfo``: a start or end that falls in a
DST gap (spring forward) is read with the offset in force before the gap, so it lands
just after it (``02:30`` on the night clocks jump from 02:00 to 03:00 becomes 03:30); a
time that occurs twice (fall back) means its first occurrence.

A *freeze* is an absolute range ``[start, end)`` during which nothing may execute.

A *schedule* is a set of windows plus a set of freezes: an instant is allowed when it is
inside at least one window (any instant, when there are no windows) and inside no
freeze. Several schedules can be required at once (the policy a request started under
and the current file): an instant is allowed only when every one of them allows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# How far ahead to look for the next allowed moment before calling it "never".
HORIZON = timedelta(days=366)
UTC = timezone.utc


def parse_hhmm(value: str, *, allow_24: bool = False) -> time | None:
    """``"HH:MM"`` as a time; ``"24:00"`` (when allowed) as None, meaning the next midnight."""
    if (
        not isinstance(value, str)
        or len(value) != 5
        or value[2] != ":"
        or not (value[:2].isdigit() and value[3:].isdigit())
    ):
        raise ValueError(f"{value!r} is not a time of day HH:MM")
    h, m = int(value[:2]), int(value[3:])
    if allow_24 and (h, m) == (24, 0):
        return None
    if h > 23 or m > 59:
        raise ValueError(f"{value!r} is not a time of day HH:MM (00:00–23:59" + (", or 24:00)" if allow_24 else ")"))
    return time(h, m)


def zone(name: str) -> ZoneInfo:
    """The IANA timezone ``name``; ValueError when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown timezone {name!r} (use an IANA name such as 'Europe/Paris' or 'UTC')") from None


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday … 6 = Sunday (local days)
    start: time
    end: time | None  # None: the midnight after the start day
    tz: str = "UTC"

    def occurrence(self, day: date) -> tuple[datetime, datetime]:
        """The window that opens on local ``day``, as UTC instants [open, close)."""
        z = zone(self.tz)
        opens = datetime.combine(day, self.start, tzinfo=z)
        if self.end is None:
            closes = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=z)
        elif self.end > self.start:
            closes = datetime.combine(day, self.end, tzinfo=z)
        else:
            closes = datetime.combine(day + timedelta(days=1), self.end, tzinfo=z)
        return opens.astimezone(UTC), closes.astimezone(UTC)

    def occurrences_around(self, t: datetime, days_ahead: int) -> Iterable[tuple[datetime, datetime]]:
        """Occurrences that may contain ``t`` or open within ``days_ahead`` days after it."""
        local = t.astimezone(zone(self.tz)).date()
        for offset in range(-1, days_ahead + 1):
            day = local + timedelta(days=offset)
            if day.weekday() in self.days:
                opens, closes = self.occurrence(day)
                if closes > opens:  # a DST gap can swallow a very short window
                    yield opens, closes

    def contains(self, t: datetime) -> bool:
        span = _SPANS.get(self)
        if span is not None and span[0] <= t < span[1]:
            return span[2]
        return self._contains_span(t)

    def _contains_span(self, t: datetime) -> bool:
        """``contains``, remembering the span around ``t`` with the same answer: the
        occurrence holding it, or the gap between the last close and the next opening
        (each check of "now" then costs a comparison until the next of them)."""
        occurrences = list(self.occurrences_around(t, 8))
        inside = next(((o, c) for o, c in occurrences if o <= t < c), None)
        if inside is not None:
            span = (inside[0], inside[1], True)
        else:
            # occurrences of earlier days than these close before the local day of ``t``
            span = (
                max((c for _o, c in occurrences if c <= t), default=t),
                min((o for o, _c in occurrences if o > t), default=t),
                False,
            )
        if len(_SPANS) >= _SPANS_MAX:
            _SPANS.clear()
        _SPANS[self] = span
        return span[2]

    def describe(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        end = "24:00" if self.end is None else self.end.strftime("%H:%M")
        return f"{days} {self.start.strftime('%H:%M')}–{end} {self.tz}"


# Window -> (from, until, whether it contains the instants in [from, until)): equal windows
# share it (a pure function of the window and the instant).
_SPANS: dict[Window, tuple[datetime, datetime, bool]] = {}
_SPANS_MAX = 4096


@dataclass(frozen=True)
class Freeze:
    start: datetime
    end: datetime
    reason: str = ""

    def contains(self, t: datetime) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True)
class Schedule:
    windows: tuple[Window, ...] = ()
    freezes: tuple[Freeze, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """Whether execution may start at ``at``; if not, why and from when (None: not within
    the horizon)."""

    allowed: bool
    reason: str
    not_before: datetime | None = None
    freeze: Freeze | None = field(default=None, compare=False)


def in_windows(windows: Sequence[Window], t: datetime) -> bool:
    """Inside at least one window; always true without windows."""
    return not windows or any(w.contains(t) for w in windows)


def window_closing(windows: Sequence[Window], t: datetime) -> datetime | None:
    """When the window(s) containing ``t`` close (following back-to-back windows); None
    without windows or when ``t`` is outside every window."""
    if not windows or not in_windows(windows, t):
        return None
    end = t
    for _ in range(64):
        ends = [c for w in windows for o, c in w.occurrences_around(end, 0) if o <= end < c]
        if not ends:
            return end
        end = max(ends)
    return end


def next_window_open(windows: Sequence[Window], t: datetime) -> datetime | None:
    """The first instant at or after ``t`` inside a window (``t`` itself when inside)."""
    if in_windows(windows, t):
        return t
    starts = [o for w in windows for o, c in w.occurrences_around(t, 8) if o >= t]
    return min(starts) if starts else None


def freeze_at(freezes: Sequence[Freeze], t: datetime) -> Freeze | None:
    """The freeze covering ``t`` that lasts longest (None when none does)."""
    covering = [f for f in freezes if f.contains(t)]
    return max(covering, key=lambda f: f.end) if covering else None


def check(schedules: Sequence[Schedule], now: datetime, *, horizon: timedelta = HORIZON) -> Verdict:
    """May execution start at ``now`` under every schedule? If not: the reason at ``now``
    and the first moment all of them allow it (None when none within ``horizon``)."""
    reason = _blocked_reason(schedules, now)
    if reason is None:
        return Verdict(True, "ok", None)
    return Verdict(False, reason[0], next_allowed(schedules, now, horizon=horizon), reason[1])


def next_allowed(schedules: Sequence[Schedule], t: datetime, *, horizon: timedelta = HORIZON) -> datetime | None:
    """The first instant at or after ``t`` every schedule allows; None beyond ``horizon``."""
    limit = t + horizon
    for _ in range(10_000):
        if t > limit:
            return None
        moved = False
        for s in schedules:
            f = freeze_at(s.freezes, t)
            if f is not None:
                t, moved = f.end, True
                continue
            opens = next_window_open(s.windows, t)
            if opens is None:
                return None
            if opens != t:
                t, moved = opens, True
        if not moved:
            return t
    return None


def _blocked_reason(schedules: Sequence[Schedule], t: datetime) -> tuple[str, Freeze | None] | None:
    for s in schedules:
        f = freeze_at(s.freezes, t)
        if f is not None:
            return f"freeze until {iso(f.end)}" + (f": {f.reason}" if f.reason else ""), f
    for s in schedules:
        if not in_windows(s.windows, t):
            return "outside the change windows (" + "; ".join(w.describe() for w in s.windows) + ")", None
    return None


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")
