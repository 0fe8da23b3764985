"""Pricing rules beyond the listing's plain prices (xai-api.md "Pricing rules beyond the listing",
"Listings", "Units", "Images"): the tier and regional multipliers, the long-context tier as the
listing states it, image price units and ``pricing[]`` tiers. Every expected value is worked out
by hand from those formulas, with prices of our own."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from daemon.pricing import PriceBook, PriceSet
from daemon.pricing.cost import UnpricedError, compute_cost, exact_multiplier
from daemon.pricing.listing import (
    parse_image_models,
    parse_image_price,
    parse_image_tiers,
    parse_language_models,
)
from daemon.pricing.model import ModelPrice
from daemon.record import Usage
from daemon.testing import make_record
from daemon.units import ticks_to_usd

# $2.00 / $0.50 / $6.00 per 1M in / cached / out; $25 per 1k sources (ticks per token/source)
PLAIN = ModelPrice("m", input=20000, cached_input=5000, output=60000, search=250_000_000)
# 600 uncached + 400 cached in, 300 out, 2 web searches ($5 per 1k calls)
CALL = Usage(
    input_tokens=1000,
    cached_input_tokens=400,
    output_tokens=300,
    server_tool_calls={"web_search": 2},
)
TOKENS = 600 * 20000 + 400 * 5000 + 300 * 60000  # 32_000_000: cache discount first
TOOLS = 2 * 50_000_000  # 100_000_000, never multiplied


# --- kind 4: service tier and upstream multipliers ------------------------------------------


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        (None, 132_000_000),
        ("default", 132_000_000),
        ("priority", 164_000_000),  # 2 * 32_000_000 + 100_000_000
        ("fast", 164_000_000),
        ("Priority", 164_000_000),
        ("flex", 132_000_000),  # a tier with no known multiplier bills x1
    ],
)
def test_service_tier_doubles_token_prices_only(tier: str | None, expected: int) -> None:
    assert TOKENS == 32_000_000
    assert compute_cost(CALL, PLAIN, tier) == expected


def test_regional_multiplier_is_exact_and_rounds_down_once() -> None:
    us = exact_multiplier(1.1)
    assert us == Fraction(11, 10) and exact_multiplier(1.0) is None and exact_multiplier(1) is None
    assert exact_multiplier(1.15) == Fraction(23, 20)
    assert compute_cost(CALL, PLAIN, None, us) == 35_200_000 + TOOLS  # 32_000_000 * 1.1
    assert compute_cost(CALL, PLAIN, "priority", us) == 70_400_000 + TOOLS  # x2 x1.1
    # 1 token at 7 ticks: 7.7 ticks exactly, booked as 7 (rounded down, once per call)
    seven = ModelPrice("seven", input=7, output=7)
    assert compute_cost(Usage(input_tokens=1), seven, None, us) == 7
    # 3 tokens: 23.1 -> 23; at x2 first: 46.2 -> 46 (one rounding, after both multipliers)
    assert compute_cost(Usage(input_tokens=3), seven, None, us) == 23
    assert compute_cost(Usage(input_tokens=3), seven, "fast", us) == 46
    # per-source and per-image prices are not token prices: not multiplied
    priced = ModelPrice("s", input=10, search=250_000_000, image=200_000_000)
    usage = Usage(input_tokens=10, sources=2, images=1)
    assert compute_cost(usage, priced, "priority", us) == 220 + 500_000_000 + 200_000_000


def test_reported_cost_stays_the_truth_and_the_computed_one_carries_the_rules() -> None:
    book = PriceBook([PriceSet.of([PLAIN], effective_at=0.0, id=1)])
    record = make_record(model="m", service_tier="priority", price_multiplier=Fraction(11, 10))
    record.usage = Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=300)
    record.usage.reported_cost_ticks = 77_000_000
    book.price_record(record)
    assert (record.cost_ticks, record.cost_source) == (77_000_000, "reported")
    assert record.computed_cost_ticks == 70_400_000  # 32_000_000 x2 x1.1
    record.usage.reported_cost_ticks = None
    book.price_record(record)
    assert (record.cost_ticks, record.cost_source) == (70_400_000, "computed")


# --- kind 5: the long-context tier is the listing's ----------------------------------------

THRESHOLD = 200_000


def listed(**fields: Any) -> ModelPrice:
    """One model parsed from a language listing entry with our prices plus `fields`."""
    entry = {
        "id": "lc",
        "prompt_text_token_price": 20000,
        "cached_prompt_text_token_price": 5000,
        "completion_text_token_price": 60000,
        "long_context_threshold": THRESHOLD,
        "prompt_text_token_price_long_context": 40000,
        "cached_prompt_text_token_price_long_context": 10000,
        "completion_text_token_price_long_context": 120000,
        **fields,
    }
    [mp] = parse_language_models({"models": [{k: v for k, v in entry.items() if v != "-"}]})
    return mp


def lc_usage(prompt: int) -> Usage:
    return Usage(input_tokens=prompt, cached_input_tokens=1000, output_tokens=500)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # below: (199_999 - 1000)*20000 + 1000*5000 + 500*60000
        (THRESHOLD - 1, 4_014_980_000),
        # at ("at or above"): every token long, (199_000)*40000 + 1000*10000 + 500*120000
        (THRESHOLD, 8_030_000_000),
        (THRESHOLD + 1, 8_030_040_000),
    ],
)
def test_long_context_from_the_listing_at_or_above(prompt: int, expected: int) -> None:
    assert compute_cost(lc_usage(prompt), listed()) == expected


def test_threshold_zero_or_absent_is_no_long_context_tier() -> None:
    normal = 199_000 * 20000 + 1000 * 5000 + 500 * 60000  # 4_015_000_000
    for price in (listed(long_context_threshold=0), listed(long_context_threshold="-")):
        assert price.long_context_threshold is None
        assert compute_cost(lc_usage(THRESHOLD), price) == normal == 4_015_000_000
        assert compute_cost(lc_usage(10_000_000), price) == (
            9_999_000 * 20000 + 1000 * 5000 + 500 * 60000
        )
    # an old listing: no threshold and no long prices at all
    old = listed(
        long_context_threshold="-",
        prompt_text_token_price_long_context="-",
        cached_prompt_text_token_price_long_context="-",
        completion_text_token_price_long_context="-",
    )
    assert compute_cost(lc_usage(THRESHOLD), old) == 4_015_000_000


def test_long_price_zero_falls_back_to_the_normal_price() -> None:
    price = listed(completion_text_token_price_long_context=0)
    assert price.output_long is None  # 0 means "the normal price", kept as no long price
    # at the threshold: input and cached long, output at its normal 60000
    assert compute_cost(lc_usage(THRESHOLD), price) == 199_000 * 40000 + 1000 * 10000 + 500 * 60000
    assert compute_cost(lc_usage(THRESHOLD), price) == 8_000_000_000
    # the same rule for a price set stored (or overridden) with 0
    stored = ModelPrice(
        "lc", input=20000, cached_input=5000, output=60000, long_context_threshold=THRESHOLD,
        input_long=0, cached_input_long=0, output_long=120000,
    )  # fmt: skip
    assert compute_cost(lc_usage(THRESHOLD), stored) == (
        199_000 * 20000 + 1000 * 5000 + 500 * 120000
    )


# --- kind 11: image price units and tiers ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ticks"),
    [
        (700, 700_000_000),  # a real 2025 listing: 1e-4 USD, $0.07
        (500, 500_000_000),  # 1e-4 USD, $0.05; read as cents it would be $5, 100x too high
        (200, 200_000_000),  # 1e-4 USD, $0.02
        (50, 50_000_000),  # 1e-4 USD, $0.005 (the band's low end); as cents $0.50 is out
        (49, 4_900_000_000),  # cents, $0.49 (as 1e-4 USD, $0.0049, below the band)
        (5, 500_000_000),  # the documented unit, cents: $0.05
        (200_000_000, 200_000_000),  # 2026 listings: ticks, $0.02
        (450_000_000, 450_000_000),  # ticks, $0.045
        (0, 0),
    ],
)
def test_image_price_unit_is_decided_by_magnitude(value: int, ticks: int) -> None:
    assert parse_image_price(value) == ticks
    assert ticks == 0 or Decimal("0.005") <= ticks_to_usd(ticks) < Decimal("0.5")


@pytest.mark.parametrize("value", [4_999_999, 5_000_000_000, 0.001, 10**12, -700, "x"])
def test_image_price_in_no_unit_is_dropped(value: Any) -> None:
    assert parse_image_price(value) is None


def test_a_2025_listing_prices_its_images() -> None:
    [mp] = parse_image_models({"models": [{"id": "grok-2-image-1212", "image_price": 700}]})
    assert mp.image == 700_000_000
    assert compute_cost(Usage(images=3), mp) == 2_100_000_000  # 3 x $0.07 = $0.21


TIERED_ENTRY: dict[str, Any] = {
    "id": "grok-imagine-image-2.0",
    "pricing": [
        {"quality": "low", "resolution": "1k", "price_per_image": 300_000_000},  # $0.03
        {"quality": "medium", "resolution": "1k", "price_per_image": 400_000_000},  # $0.04
        {"quality": "Medium", "resolution": "2K", "price_per_image": 700_000_000},  # $0.07
        {"quality": "low", "resolution": "1k", "price_per_image": 1},  # duplicate: first wins
        {"quality": "high", "price_per_image": 800_000_000},  # no resolution: dropped
        {"quality": "low", "resolution": "2k", "price_per_image": 10**15},  # implausible
        "junk",
    ],
}


def test_pricing_tiers_are_parsed() -> None:
    [mp] = parse_image_models({"data": [TIERED_ENTRY]})
    assert mp.image is None
    assert mp.image_tiers == (
        ("low", "1k", 300_000_000),
        ("medium", "1k", 400_000_000),
        ("medium", "2k", 700_000_000),
    )
    assert parse_image_tiers(None) == () and parse_image_tiers({"x": 1}) == ()


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        (None, 3 * 400_000_000),  # neither given: medium at 1k
        (("low", "1k"), 3 * 300_000_000),
        (("medium", "2k"), 3 * 700_000_000),
        (("low", None), 3 * 300_000_000),  # resolution defaults to 1k
        ((None, "2k"), 3 * 700_000_000),  # quality defaults to medium
        (("auto", "2k"), 3 * 700_000_000),  # "auto" is the default quality too
    ],
)
def test_image_call_priced_by_quality_and_resolution(
    tier: tuple[str | None, str | None] | None, expected: int
) -> None:
    [mp] = parse_image_models({"models": [TIERED_ENTRY]})
    assert compute_cost(Usage(images=3), mp, image_tier=tier) == expected
    # multipliers are for tokens: an image's price is not multiplied
    assert compute_cost(Usage(images=3), mp, "priority", Fraction(11, 10), tier) == expected


def test_image_tier_not_listed_falls_back_to_image_price_else_unpriced() -> None:
    [mp] = parse_image_models({"models": [TIERED_ENTRY]})
    with pytest.raises(UnpricedError):
        compute_cost(Usage(images=1), mp, image_tier=("ultra", "1.5k"))
    [both] = parse_image_models({"models": [{**TIERED_ENTRY, "image_price": 500_000_000}]})
    assert compute_cost(Usage(images=2), both, image_tier=("ultra", "1.5k")) == 1_000_000_000
    assert compute_cost(Usage(images=2), both, image_tier=("low", "1k")) == 600_000_000


def test_image_rows_get_the_requested_model_resolved() -> None:
    imagine = ModelPrice("grok-imagine-image", aliases=("grok-imagine",), image=200_000_000)
    book = PriceBook([PriceSet.of([imagine], effective_at=0.0, id=1)])
    record = make_record(endpoint="images.generations", requested_model="grok-imagine")
    record.usage = Usage(images=2)
    book.price_record(record)
    assert (record.model, record.computed_cost_ticks) == ("grok-imagine-image", 400_000_000)
    unknown = make_record(endpoint="images.generations", requested_model="not-listed")
    unknown.usage = Usage(images=1)
    book.price_record(unknown)
    assert (unknown.model, unknown.cost_source) == ("not-listed", "unpriced")
    answered = make_record(model="named-by-answer", requested_model="grok-imagine")
    answered.usage = Usage(images=1)
    book.price_record(answered)
    assert answered.model == "named-by-answer"  # an answer's own model is never replaced


def test_an_image_override_wins_over_listed_tiers() -> None:
    [mp] = parse_image_models({"models": [TIERED_ENTRY]})
    book = PriceBook(
        [PriceSet.of([mp], effective_at=0.0, id=1)],
        overrides={"grok-imagine-image-2.0": {"image": 0.05}},
    )
    price = book.price_for("grok-imagine-image-2.0", 1.0)
    assert price is not None and (price.image, price.image_tiers) == (500_000_000, ())
    assert compute_cost(Usage(images=2), price, image_tier=("low", "1k")) == 1_000_000_000
