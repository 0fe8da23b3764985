"""`daemon.windows.parse_window`: every form a user may type, at a fixed `now` (no clock),
in UTC and in a zone whose clocks change inside the window."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daemon.windows import Window, WindowError, parse_window, with_until


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


NOW = utc("2026-11-15T08:20:00")  # a Sunday in November, 08:20 UTC (09:20 in Paris)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800),
        (" 24H ", 86400),
        ("7d", 7 * 86400),
        ("2w", 14 * 86400),
        ("90s", 90),
        ("1h30m", 5400),
        ("1d12h", 36 * 3600),
        ("1w2d3h4m5s", 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
    ],
)
def test_durations_reach_back_from_now(text: str, seconds: int) -> None:
    window = parse_window(text, NOW, "Europe/Paris")  # a zone changes nothing for a duration
    assert (window.start, window.end) == (NOW - seconds, None)


def test_a_duration_label_names_start_now_zone_and_the_words() -> None:
    assert parse_window("1h30m", NOW) == Window(
        start=NOW - 5400,
        end=None,
        tz="UTC",
        label="2026-11-15 06:50 → now UTC (1h30m)",
    )


@pytest.mark.parametrize(
    ("text", "start", "end", "label"),
    [
        ("today", "2026-11-15T00:00", None, "2026-11-15 00:00 → now UTC (today)"),
        (
            "yesterday",
            "2026-11-14T00:00",
            "2026-11-15T00:00",
            "2026-11-14 00:00 → 2026-11-15 00:00 UTC (yesterday)",
        ),
        ("this-month", "2026-11-01T00:00", None, "2026-11-01 00:00 → now UTC (this-month)"),
        (
            "last-month",
            "2026-10-01T00:00",
            "2026-11-01T00:00",
            "2026-10-01 00:00 → 2026-11-01 00:00 UTC (last-month)",
        ),
        ("2026-11-01", "2026-11-01T00:00", None, "2026-11-01 00:00 → now UTC (2026-11-01)"),
        (
            "2026-11-01T08:00",
            "2026-11-01T08:00",
            None,
            "2026-11-01 08:00 → now UTC (2026-11-01T08:00)",
        ),
        ("2026-11-01T08:00+01:00", "2026-11-01T07:00", None, None),
        ("2026-11-01T08:00Z", "2026-11-01T08:00", None, None),
        ("Today", "2026-11-15T00:00", None, "2026-11-15 00:00 → now UTC (Today)"),
    ],
)
def test_calendar_words_and_dates_in_utc(
    text: str, start: str, end: str | None, label: str | None
) -> None:
    window = parse_window(text, NOW)
    assert window.start == utc(start)
    assert window.end == (None if end is None else utc(end))
    assert window.tz == "UTC"
    if label is not None:
        assert window.label == label


def test_calendar_words_in_a_zone() -> None:
    # 09:20 in Paris (CET, UTC+1): the day began at 23:00 UTC the day before
    today = parse_window("today", NOW, "Europe/Paris")
    assert (today.start, today.end) == (utc("2026-11-14T23:00"), None)
    assert today.label == "2026-11-15 00:00 → now Europe/Paris (today)"
    month = parse_window("this-month", NOW, "Europe/Paris")
    assert month.start == utc("2026-10-31T23:00")
    naive = parse_window("2026-11-01T08:00", NOW, "America/New_York")  # EST, UTC-5
    assert naive.start == utc("2026-11-01T13:00")
    assert naive.label == "2026-11-01 08:00 → now America/New_York (2026-11-01T08:00)"
    # an explicit offset wins over the zone; the label shows it in the zone
    offset = parse_window("2026-11-01T08:00+00:00", NOW, "Europe/Paris")
    assert offset.start == utc("2026-11-01T08:00")
    assert offset.label.startswith("2026-11-01 09:00 → now Europe/Paris")


def test_yesterday_across_a_clock_change_is_25_or_23_hours() -> None:
    # Europe/Paris: CEST→CET at 03:00 on 2026-10-25, CET→CEST at 02:00 on 2026-03-29
    autumn = parse_window("yesterday", utc("2026-10-26T12:00"), "Europe/Paris")
    assert (autumn.start, autumn.end) == (utc("2026-10-24T22:00"), utc("2026-10-25T23:00"))
    assert autumn.end is not None and autumn.end - autumn.start == 25 * 3600
    assert autumn.label == "2026-10-25 00:00 → 2026-10-26 00:00 Europe/Paris (yesterday)"
    spring = parse_window("yesterday", utc("2026-03-30T12:00"), "Europe/Paris")
    assert (spring.start, spring.end) == (utc("2026-03-28T23:00"), utc("2026-03-29T22:00"))
    assert spring.end is not None and spring.end - spring.start == 23 * 3600
    # last-month across the change: October in Paris is 31 days and one hour
    october = parse_window("last-month", NOW, "Europe/Paris")
    assert (october.start, october.end) == (utc("2026-09-30T22:00"), utc("2026-10-31T23:00"))
    # a duration stays a duration: 24h back, whatever the clocks did
    assert parse_window("24h", utc("2026-10-26T12:00"), "Europe/Paris").start == utc(
        "2026-10-25T12:00"
    )


def test_last_month_in_january_is_december() -> None:
    window = parse_window("last-month", utc("2027-01-10T00:00"))
    assert (window.start, window.end) == (utc("2026-12-01T00:00"), utc("2027-01-01T00:00"))


@pytest.mark.parametrize("text", ["1M", "3M", "1h30M", " 2M "])
def test_capital_m_is_ambiguous(text: str) -> None:
    with pytest.raises(WindowError) as caught:
        parse_window(text, NOW)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{text.strip()!r} is ambiguous (minutes or months?)")
    assert "this-month" in message


@pytest.mark.parametrize("text", ["", "yesterday-ish", "1y", "m", "30 m", "-1h", "2026-13-01"])
def test_anything_else_names_the_accepted_forms(text: str) -> None:
    with pytest.raises(WindowError) as caught:
        parse_window(text, NOW)
    message = str(caught.value)
    assert "\n" not in message and "not a window" in message
    for form in ("30m", "1h30m", "today", "yesterday", "this-month", "2026-11-01"):
        assert form in message


@pytest.mark.parametrize("tz", ["Mars/Olympus", "../etc/passwd", "", "utc+1"])
def test_an_unknown_zone_is_refused(tz: str) -> None:
    with pytest.raises(WindowError, match=r"unknown time zone .*Europe/Paris"):
        parse_window("today", NOW, tz)


def test_until_closes_a_window() -> None:
    since = parse_window("2026-11-01", NOW, "Europe/Paris")
    window = with_until(since, "2026-11-05", NOW)
    assert (window.start, window.end) == (utc("2026-10-31T23:00"), utc("2026-11-04T23:00"))
    assert window.label == (
        "2026-11-01 00:00 → 2026-11-05 00:00 Europe/Paris (2026-11-01 until 2026-11-05)"
    )
    assert with_until(parse_window("7d", NOW), "today", NOW).end == utc("2026-11-15T00:00")
    assert with_until(parse_window("7d", NOW), "1h", NOW).end == NOW - 3600
    with pytest.raises(WindowError, match="before it starts"):
        with_until(parse_window("today", NOW), "yesterday", NOW)
    with pytest.raises(WindowError, match="ambiguous"):
        with_until(parse_window("7d", NOW), "1M", NOW)


@pytest.mark.parametrize(
    ("text", "tz"),
    [
        ("99999999d", "UTC"),  # before year 1: was ValueError (year out of range)
        ("9999999999999d", "UTC"),  # was OSError (time_t)
        ("9" * 400 + "w", "UTC"),  # was OverflowError (int too large to convert to float)
        ("9" * 5000 + "s", "UTC"),  # past what int() reads
        ("0001-01-01", "Asia/Tokyo"),  # year 0 in UTC
        ("0001-01-01T00:00+05:00", "UTC"),
        ("9999-12-31T23:59", "America/New_York"),  # year 10000 in UTC
    ],
)
def test_a_window_past_the_dates_a_datetime_holds_is_a_window_error(text: str, tz: str) -> None:
    with pytest.raises(WindowError) as caught:
        parse_window(text, NOW, tz)
    message = str(caught.value)
    assert "\n" not in message and "reaches past the dates a window can hold" in message
    with pytest.raises(WindowError, match="reaches past"):
        with_until(parse_window("7d", NOW), text if tz == "UTC" else "99999999d", NOW)


def test_the_first_and_last_dates_are_windows() -> None:
    first = parse_window("0001-01-01", NOW)
    assert (first.start, first.label) == (-62135596800.0, "0001-01-01 00:00 → now UTC (0001-01-01)")
    assert parse_window("9999-12-31T23:59", NOW).start == 253402300740.0
    assert parse_window("000000000000000000000000005m", NOW).start == NOW - 300  # zeros: 5m


@pytest.mark.parametrize("tz", ["utc", "Utc", "UTC"])
def test_utc_in_any_case(tz: str) -> None:
    assert parse_window("today", NOW, tz) == Window(
        start=utc("2026-11-15T00:00"),
        end=None,
        tz="UTC",
        label="2026-11-15 00:00 → now UTC (today)",
    )


def test_until_now_is_the_open_end() -> None:
    window = with_until(parse_window("yesterday", NOW), " Now ", NOW)
    assert window == Window(
        start=utc("2026-11-14T00:00"),
        end=None,
        tz="UTC",
        label="2026-11-14 00:00 → now UTC (yesterday until now)",
    )
