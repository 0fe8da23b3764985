"""Time windows for reports, the status page API and every command taking `--since`.

`parse_window(text, now, tz)` reads what a user types (`24h`, `1h30m`, `today`, `yesterday`,
`this-month`, `last-month`, `2026-11-01`, `2026-11-01T08:00`) into a `Window`: epoch seconds,
start inclusive, end exclusive or open. Calendar words and naive dates are read in `tz`, an IANA
zone name (zoneinfo: the system's zone database, or the `tzdata` package where there is none),
so "yesterday" in Europe/Paris is 23 or 25 hours long on the days clocks change. `now` is always
passed in: nothing here reads the clock (tests pin it).

`1M` is refused: minutes or months? (`m` is minutes; a month is `this-month`, `last-month` or a
date.) So is a window reaching past what a date can hold (`99999999d`: before year 1, or after
9999, in its zone). Every refusal is a `WindowError` whose text is one line naming the accepted
forms. `--until now` is the open end every window has by default (`with_until`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Seconds per duration unit; `M` (upper case) is refused before the text is lower-cased.
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
_PART = re.compile(r"(\d+)([smhdw])")
_SPAN = 10_000 * 366 * 86400  # seconds: more than any two dates a datetime holds lie apart

ACCEPTED = (
    "a duration back from now (30m, 24h, 7d, 2w, 1h30m), today, yesterday, this-month, "
    "last-month, or an ISO date/time (2026-11-01, 2026-11-01T08:00)"
)


class WindowError(ValueError):
    """A user's window text we cannot read; str(exc) is the one-line message."""


@dataclass(frozen=True)
class Window:
    """A span of time: calls with `start <= started_at < end` (no upper bound when `end` is None).

    `start`, `end`: epoch seconds. `tz`: the IANA name the window was read in ("UTC",
    "Europe/Paris"). `label`: for people, e.g.
    "2026-11-28 00:00 → 2026-11-29 00:00 UTC (yesterday)"; an open end reads "now"."""

    start: float
    end: float | None
    tz: str
    label: str


def zone(tz: str) -> tzinfo:
    """The tzinfo for IANA name `tz` ("UTC", in any case, needs no zone database; other names
    as the zone database spells them); `WindowError` if unknown."""
    if tz.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: not a zone name at all ("../x")
        raise WindowError(
            f"unknown time zone {tz!r}: expected an IANA name like UTC or Europe/Paris "
            "(on a system without a zone database: pip install tzdata)"
        ) from None


def parse_window(text: str, now: float, tz: str = "UTC") -> Window:
    """The window `text` names, at epoch `now`, read in IANA zone `tz`.

    Durations (`30m`, `24h`, `7d`, `2w`, `90s`, compound `1h30m`) reach back from `now`, end
    open. `today` and `this-month` start at the local midnight (of the day, of the 1st) and stay
    open; `yesterday` and `last-month` are closed, ending where today / this month start.
    ISO dates and date-times start there (naive ones are read in `tz`, `...+01:00` or `...Z`
    in their own offset), end open. `tz` "UTC" may be spelled in any case (the window's `tz`
    is then "UTC"). Raises `WindowError` for `1M` (ambiguous), an unknown `tz`, a start or end
    no date holds (before year 1, after 9999, in `tz`), and anything else."""
    where = zone(tz)
    tz = zone_name(tz)
    raw = text.strip()
    words = raw.lower()
    local_now = datetime.fromtimestamp(now, where)
    today = local_now.date()
    start: float
    end: float | None = None
    if raw and _DURATION.fullmatch(words):
        if "M" in raw:
            raise WindowError(
                f"{raw!r} is ambiguous (minutes or months?): write {raw.replace('M', 'm')} for "
                "minutes, or this-month, last-month or a date like 2026-11-01 for months"
            )
        # a number past 15 digits is past any date (and past 4300, more than int() reads)
        parts = [
            (int(n) if len(n.lstrip("0")) <= 15 else _SPAN, u) for n, u in _PART.findall(words)
        ]
        back = sum(n * _UNITS[u] for n, u in parts)
        start = now - back if back <= _SPAN else -math.inf  # past any date: refused below
    elif words == "today":
        start = _midnight(today, where)
    elif words == "yesterday":
        start, end = _midnight(today - timedelta(days=1), where), _midnight(today, where)
    elif words == "this-month":
        start = _midnight(today.replace(day=1), where)
    elif words == "last-month":
        first = today.replace(day=1)
        start = _midnight((first - timedelta(days=1)).replace(day=1), where)
        end = _midnight(first, where)
    else:
        start = _iso(raw, where)
    label = f"{_show(start, where, raw)} → "
    label += f"{'now' if end is None else _show(end, where, raw)} {tz} ({raw})"
    return Window(start=start, end=end, tz=tz, label=label)


def with_until(window: Window, text: str, now: float) -> Window:
    """`window` ending where `text` (any form `parse_window` reads) starts: `--until`.

    `--until 2026-11-05` ends before Nov 5 begins; `--until today` at today's midnight; `--until
    1h` an hour ago; `--until now` (the default made explicit) leaves the end open, at now.
    Raises `WindowError` for what `parse_window` refuses, or an end not after the start."""
    where = zone(window.tz)
    start_text, _, rest = window.label.partition(" → ")
    words = rest[rest.index("(") :]  # the user's own words, in parentheses
    if text.strip().lower() == "now":
        label = f"{start_text} → now {window.tz} {words[:-1]} until now)"
        return Window(start=window.start, end=None, tz=window.tz, label=label)
    end = parse_window(text, now, window.tz).start
    if end <= window.start:
        raise WindowError(
            f"the window would end ({text.strip()!r}) before it starts: {start_text} {window.tz}"
        )
    label = (
        f"{start_text} → {_show(end, where, text)} {window.tz} {words[:-1]} until {text.strip()})"
    )
    return Window(start=window.start, end=end, tz=window.tz, label=label)


def _midnight(day: date, where: tzinfo) -> float:
    # zoneinfo resolves a local time the clocks skip or repeat by fold=0: the earlier offset.
    return datetime(day.year, day.month, day.day, tzinfo=where).timestamp()


def _iso(raw: str, where: tzinfo) -> float:
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise WindowError(f"{raw!r} is not a window: expected {ACCEPTED}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=where)
    try:
        return when.timestamp()
    except (ValueError, OverflowError):  # year 1 in a zone ahead of UTC: before any date
        return -math.inf  # refused with the others, by `_show`


def zone_name(tz: str) -> str:
    """`tz` as windows name it: "UTC" for any spelling of it, other names as given."""
    return "UTC" if tz.upper() == "UTC" else tz


def _show(epoch: float, where: tzinfo, raw: str) -> str:
    """`epoch` as "YYYY-MM-DD HH:MM" in `where`; `WindowError` when no date holds it (before
    year 1 or after 9999 there), for window text `raw`."""
    try:
        when = datetime.fromtimestamp(epoch, where)
    except (ValueError, OverflowError, OSError):  # out of datetime's range, or the C time_t's
        raise WindowError(
            f"{raw.strip()!r} reaches past the dates a window can hold (years 1 to 9999 in "
            f"its zone): give a shorter duration or a date within them"
        ) from None
    return when.isoformat(sep=" ", timespec="minutes")[:16]
