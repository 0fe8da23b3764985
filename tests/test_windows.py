"""`daemon.windows.parse_window`: every form a user may type, at a fixed `now` (no clock)."""

from __future__ import annotations

import pytest

from daemon.windows import WindowError, parse_window

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def test_durations_and_dates() -> None:
    assert parse_window("30m", NOW).start == NOW - 1800
    assert parse_window(" 24H ", NOW).start == NOW - 86400
    assert parse_window("2w", NOW).start == NOW - 2 * 604800
    assert parse_window("2026-11-01", NOW).start == 1793491200.0
    assert parse_window("2026-11-01T08:00+01:00", NOW).start == 1793491200.0 + 7 * 3600
    with pytest.raises(WindowError, match="1M"):
        parse_window("1M", NOW)
