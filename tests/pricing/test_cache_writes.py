"""Prompt-cache writes priced as a real Anthropic upstream bills them (xai-api.md,
"Anthropic-compatible"): 5-minute writes 1.25x the input price, 1-hour writes 2x, unless
``[pricing.overrides]`` sets ``cache_write`` / ``cache_write_1h``.

Prices here: input 30000, cached 3000, output 150000 ticks per token ($3 / $0.30 / $15 per 1M);
so a 5-minute write is 37500 ticks and a 1-hour write 60000.
"""

from __future__ import annotations

import pytest

from daemon.pricing.book import PriceBook, PriceSet
from daemon.pricing.cost import UnpricedError, compute_cost
from daemon.pricing.model import ModelPrice
from daemon.pricing.overrides import OverrideError, parse_overrides
from daemon.record import Usage

PRICE = ModelPrice("claude-x", input=30000, cached_input=3000, output=150000)
# 1000 prompt tokens: 100 read from the cache, 300 written for 5 minutes, 200 for 1 hour, and
# 400 plain; 5 output tokens.
USAGE = Usage(
    input_tokens=1000,
    cached_input_tokens=100,
    cache_creation_input_tokens=500,
    cache_creation_1h_input_tokens=200,
    output_tokens=5,
)


def test_derived_write_prices() -> None:
    assert compute_cost(USAGE, PRICE) == (
        400 * 30000 + 100 * 3000 + 300 * 37500 + 200 * 60000 + 5 * 150000
    )
    assert compute_cost(USAGE, PRICE) == 36_300_000


def test_override_write_prices() -> None:
    price = ModelPrice(
        "claude-x",
        input=30000,
        cached_input=3000,
        output=150000,
        cache_write=40000,
        cache_write_1h=70000,
    )
    assert compute_cost(USAGE, price) == 12_000_000 + 300_000 + 12_000_000 + 14_000_000 + 750_000


def test_writes_without_a_split_are_five_minute_writes() -> None:
    usage = Usage(input_tokens=1000, cached_input_tokens=100, cache_creation_input_tokens=500)
    assert compute_cost(usage, PRICE) == 400 * 30000 + 100 * 3000 + 500 * 37500


def test_five_minute_premium_rounds_to_the_nearest_tick() -> None:
    # 1.25 x 3 ticks = 3.75 ticks per token: 3 writes are 11.25 ticks, billed 11.
    price = ModelPrice("tiny", input=3, output=3)
    assert compute_cost(Usage(input_tokens=3, cache_creation_input_tokens=3), price) == 11


def test_long_context_writes_follow_the_input_price_in_force() -> None:
    price = ModelPrice(
        "claude-x",
        input=30000,
        cached_input=3000,
        output=150000,
        long_context_threshold=1000,
        input_long=60000,
    )
    usage = Usage(input_tokens=1000, cache_creation_input_tokens=400)
    assert compute_cost(usage, price) == 600 * 60000 + 400 * 75000


def test_writes_without_any_input_price_are_unpriced() -> None:
    with pytest.raises(UnpricedError, match="cache_write"):
        compute_cost(Usage(input_tokens=10, cache_creation_input_tokens=10), ModelPrice("m"))


def test_overrides_accept_cache_write_fields() -> None:
    parsed = parse_overrides(
        {
            "claude-x": {"cache_write": 3.75, "cache_write_1h": 6},
            "claude-y": {"cache_write_5m": "4.5"},
        }
    )
    assert (parsed["claude-x"].cache_write, parsed["claude-x"].cache_write_1h) == (37500, 60000)
    assert (parsed["claude-y"].cache_write, parsed["claude-y"].cache_write_1h) == (45000, None)
    with pytest.raises(OverrideError, match=r"claude-x\.cache_write_1h .* not a whole number"):
        parse_overrides({"claude-x": {"cache_write_1h": 0.00001}})


def test_override_write_price_applies_over_the_listing() -> None:
    listed = PriceSet.of([PRICE], effective_at=1.0, id=1)
    book = PriceBook([listed], overrides={"claude-x": {"cache_write_1h": 7}})
    price = book.price_for("claude-x", 2.0)
    assert price is not None
    assert (price.input, price.cache_write, price.cache_write_1h) == (30000, None, 70000)
    assert "cache_write" not in PRICE.content()  # price history rows hold listing fields only
