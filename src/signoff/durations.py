"""Duration parsing shared by the settings and the workflow file.

A duration is an integer number of seconds or a string such as ``90s``, ``10m``,
``1h30m`` or ``7d``.
"""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: object) -> timedelta:
    """Return the duration ``value`` denotes; ValueError with a readable reason otherwise."""
    if isinstance(value, bool):
        raise ValueError("a duration must be seconds or a string like '90s', '10m', '1h30m'")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            pos, seconds, seen = 0, 0.0, set()
            for m in _PART.finditer(text):
                if m.start() != pos or m.group(2) in seen:
                    break
                seen.add(m.group(2))
                seconds += int(m.group(1)) * _UNITS[m.group(2)]
                pos = m.end()
            if not text or pos != len(text):
                raise ValueError(
                    f"invalid duration {value!r}: use seconds or a string like '90s', '10m', '1h30m', '7d'"
                )
    else:
        raise ValueError("a duration must be seconds or a string like '90s', '10m', '1h30m'")
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return timedelta(seconds=seconds)


def parse_duration_or_zero(value: object) -> timedelta:
    """``parse_duration``, with 0 (``0``, ``"0"``, ``"0s"``) allowed: a setting turned off."""
    if not isinstance(value, bool) and (
        value == 0 or (isinstance(value, str) and value.strip().lower() in ("0", "0s", "0m", "0h"))
    ):
        return timedelta(0)
    if isinstance(value, timedelta) and value == timedelta(0):
        return value
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (or 0 to turn it off)") from None


def format_duration(delta: timedelta) -> str:
    """Render a duration compactly, e.g. ``1h30m``."""
    seconds = delta.total_seconds()
    if seconds != int(seconds):
        return f"{seconds:g}"  # fractional: plain seconds, parsed back exactly
    total = int(seconds)
    if total == 0:
        return "0s"
    out = []
    for unit, size in _UNITS.items():
        if total >= size:
            out.append(f"{total // size}{unit}")
            total %= size
    return "".join(out)
