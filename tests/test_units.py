"""Money units (daemon/units.py): ticks are exact, USD is printed without float on the way."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.units import TICKS_PER_USD, format_usd, parse_amount, ticks_to_usd


def test_one_tick_is_1e_minus_10_usd() -> None:
    assert TICKS_PER_USD == 10**10
    assert ticks_to_usd(731_000) == Decimal("0.0000731")  # xai-api.md's chat sample


@pytest.mark.parametrize(
    ("ticks", "places", "text"),
    [
        (30_000_000_000, None, "3.00"),
        (250_000_000, None, "0.025"),
        (731_000, None, "0.0000731"),
        (731_000, 6, "0.000073"),
        (5_000, 6, "0.000000"),  # half-even: 0.0000005 rounds to even
        (15_000, 6, "0.000002"),  # 0.0000015 rounds up to even
        (12_345_678_901_234, 6, "1234.567890"),
    ],
)
def test_format_usd(ticks: int, places: int | None, text: str) -> None:
    assert format_usd(ticks, places) == text


@given(st.integers(min_value=0, max_value=10**20))
def test_format_usd_is_exact(ticks: int) -> None:
    assert Decimal(format_usd(ticks)) * TICKS_PER_USD == ticks


@pytest.mark.parametrize(
    ("value", "amount"),
    [
        (0.2, Decimal("0.2")),
        (3, Decimal(3)),
        ("1.25", Decimal("1.25")),
        (True, None),
        (-1, None),
        (float("nan"), None),
        ("abc", None),
        (None, None),
    ],
)
def test_parse_amount(value: object, amount: Decimal | None) -> None:
    assert parse_amount(value) == amount
