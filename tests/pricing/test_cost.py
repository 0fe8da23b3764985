"""compute_cost: real bills table-driven, and the properties integer ticks must keep."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.pricing.book import PriceBook
from daemon.pricing.catalog import default_catalog
from daemon.pricing.cost import UnpricedError, compute_cost
from daemon.pricing.model import ModelPrice
from daemon.record import Usage
from daemon.testing import make_record
from daemon.units import ticks_to_usd

X_SEARCH_REPRICED_AT = 1789948800.0  # 2026-09-21T00:00:00Z, the catalog's dated x_search entries
TOOL_FEES_TICKS = default_catalog().tool_fees()  # every tool kind and alias in force today

GROK_4_FAST = ModelPrice(
    "grok-4-fast-reasoning",
    input=2000,
    cached_input=500,
    output=5000,
    image_input=2000,
    search=250000000,
)
GROK_3 = ModelPrice("grok-3", input=30000, cached_input=7500, output=150000, search=250000000)
GROK_4 = ModelPrice(
    "grok-4-0709",
    input=30000,
    cached_input=7500,
    output=150000,
    long_context_threshold=128000,
    input_long=60000,
    cached_input_long=15000,
    output_long=300000,
)
IMAGINE = ModelPrice("grok-imagine-image", image=200000000)
NO_CACHED = ModelPrice("plain", input=2000, output=5000)
VISION = ModelPrice("vision", input=2000, cached_input=500, output=5000, image_input=3000)


# ------------------------------------------------------------------------------------------
# compute_cost: real bills, table-driven

CASES: list[tuple[str, Usage, ModelPrice, int]] = [
    # real: prompt 165, cached 156, completion 2 + reasoning 125 = output 127 → 731000 ticks
    (
        "chat sample",
        Usage(input_tokens=165, cached_input_tokens=156, output_tokens=127, reasoning_tokens=125),
        GROK_4_FAST,
        9 * 2000 + 156 * 500 + 127 * 5000,
    ),
    # Responses: output 484 already includes reasoning 264; not billed again
    (
        "responses sample",
        Usage(input_tokens=680, output_tokens=484, reasoning_tokens=264),
        GROK_4_FAST,
        680 * 2000 + 484 * 5000,
    ),
    ("grok-3 1M input = $3", Usage(input_tokens=1_000_000), GROK_3, 3 * 10**10),
    (
        "grok-3 1M cached = $0.75",
        Usage(input_tokens=1_000_000, cached_input_tokens=1_000_000),
        GROK_3,
        75 * 10**8,
    ),
    ("grok-3 1M output = $15", Usage(output_tokens=1_000_000), GROK_3, 15 * 10**10),
    (
        "long context: just below",
        Usage(input_tokens=127_999, cached_input_tokens=1000, output_tokens=10),
        GROK_4,
        126_999 * 30000 + 1000 * 7500 + 10 * 150000,
    ),
    (
        "long context: at threshold, all tokens long",
        Usage(input_tokens=128_000, cached_input_tokens=1000, output_tokens=10),
        GROK_4,
        127_000 * 60000 + 1000 * 15000 + 10 * 300000,
    ),
    (
        "sources",
        Usage(input_tokens=10, output_tokens=5, sources=3),
        GROK_3,
        10 * 30000 + 5 * 150000 + 3 * 250000000,
    ),
    # At today's fees (no `at`): since 2026-09-21 an x_search call itself costs nothing (its
    # posts and profiles fetched do; see test_x_search_fee_follows_the_call_time), so this case
    # no longer bills x_search's 1 call at $5/1k as it did before that date.
    (
        "server-side tools",
        Usage(
            server_tool_calls={
                "web_search": 2,
                "x_search": 1,
                "code_interpreter": 1,
                "file_search": 4,
                "document_search": 1,
                "mcp": 3,
                "some_future_tool": 7,
            }
        ),
        GROK_4_FAST,
        3 * 50_000_000 + 4 * 25_000_000 + 100_000_000,
    ),
    (
        "tool keys with xai's _calls suffix",
        Usage(server_tool_calls={"web_search_calls": 1000}),
        GROK_4_FAST,
        5 * 10**10,
    ),  # $5 per 1,000 calls
    ("images x n", Usage(images=4), IMAGINE, 4 * 200000000),
    (
        "cached without a cached price costs the input price",
        Usage(input_tokens=200, cached_input_tokens=100, output_tokens=1),
        NO_CACHED,
        200 * 2000 + 5000,
    ),
    (
        "image input tokens are part of input, billed once at their price",
        Usage(input_tokens=1000, cached_input_tokens=100, image_input_tokens=600),
        VISION,
        300 * 2000 + 100 * 500 + 600 * 3000,
    ),
    (
        "cached > input is clamped",
        Usage(input_tokens=10, cached_input_tokens=50),
        GROK_3,
        10 * 7500,
    ),
]


@pytest.mark.parametrize(
    ("usage", "price", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_real_bills(usage: Usage, price: ModelPrice, expected: int) -> None:
    assert compute_cost(usage, price) == expected


def test_chat_sample_is_exactly_the_reported_bill() -> None:
    usage = Usage(
        input_tokens=165,
        cached_input_tokens=156,
        output_tokens=2 + 125,
        reasoning_tokens=125,
        reported_cost_ticks=731000,
    )
    assert compute_cost(usage, GROK_4_FAST) == 731000
    assert ticks_to_usd(731000) == Decimal("0.0000731")
    # priority bills tokens x2 (xai-api.md "Pricing rules beyond the listing")
    assert compute_cost(usage, GROK_4_FAST, service_tier="priority") == 2 * 731000


def test_tool_fee_table() -> None:
    assert TOOL_FEES_TICKS["web_search"] * 1000 == 5 * 10**10
    assert TOOL_FEES_TICKS["file_search"] * 1000 == 25 * 10**9
    assert TOOL_FEES_TICKS["document_search"] * 1000 == 10 * 10**10


# X search as a 2026 body reports it: 3 calls that fetched 42 posts and 5 profiles.
X_SEARCH = Usage(
    input_tokens=1000,
    output_tokens=200,
    server_tool_calls={"x_search": 3, "x_posts_fetched": 42, "x_users_fetched": 5},
)
TOKENS_ONLY = 1000 * 2000 + 200 * 5000  # at GROK_4_FAST's prices: 3,000,000 ticks


def test_x_search_fee_follows_the_call_time() -> None:
    """xai-api.md, "Tool fees": before 2026-09-21, $5 per 1,000 calls; from then on, $5 per
    1,000 posts and $10 per 1,000 profiles fetched, and nothing per call."""
    assert X_SEARCH_REPRICED_AT == 1789948800.0  # 2026-09-21T00:00:00Z
    before = compute_cost(X_SEARCH, GROK_4_FAST, at=X_SEARCH_REPRICED_AT - 1)
    assert before == TOKENS_ONLY + 3 * 50_000_000  # $0.015 for the 3 calls
    since = compute_cost(X_SEARCH, GROK_4_FAST, at=X_SEARCH_REPRICED_AT)
    assert since == TOKENS_ONLY + 42 * 50_000_000 + 5 * 100_000_000  # $0.21 + $0.05
    assert ticks_to_usd(since - TOKENS_ONLY) == Decimal("0.26")
    assert compute_cost(X_SEARCH, GROK_4_FAST) == since  # no time: today's fees
    assert TOOL_FEES_TICKS["x_posts_fetched"] * 1000 == 5 * 10**10  # $5 per 1,000
    assert TOOL_FEES_TICKS["x_users_fetched"] * 1000 == 10 * 10**10  # $10 per 1,000
    catalog = default_catalog()
    assert catalog.tool_fees(0.0)["x_search"] * 1000 == 5 * 10**10  # older than the first entry
    assert catalog.tool_fees(X_SEARCH_REPRICED_AT - 1)["x_posts_fetched"] == 0
    assert catalog.tool_fees(None) == TOOL_FEES_TICKS
    assert [e.effective for e in catalog.entries if e.id == "tool:x_search"] == [
        "2025-11-19",
        "2026-09-21",
    ]


def test_tools_counted_from_output_items_are_priced_by_kind() -> None:
    """What the Responses reader makes of a 2025 body (items only): each kind at its fee, an
    unknown call at none (xAI publishes no fee for a call nobody names)."""
    usage = Usage(
        server_tool_calls={
            "web_search": 2,
            "x_search": 3,
            "code_interpreter": 1,
            "file_search": 1,
            "mcp": 1,
            "unknown": 4,
        }
    )
    in_2025 = 1751328000.0  # 2025-07-01
    assert compute_cost(usage, GROK_4_FAST, at=in_2025) == (
        2 * 50_000_000 + 3 * 50_000_000 + 50_000_000 + 25_000_000
    )


def test_the_book_prices_tool_fees_at_the_calls_own_time() -> None:
    """A backfill prices at a later price set's time, but a call's tool fees are those in force
    when it was made."""
    book = PriceBook(overrides={"grok-4-fast-reasoning": {"input": 0.2, "output": 0.5}})
    old = make_record(model="grok-4-fast-reasoning", usage=X_SEARCH, started_at=1789000000.0)
    book.price_record(old)
    assert old.computed_cost_ticks == TOKENS_ONLY + 3 * 50_000_000
    book.price_record(old, at=X_SEARCH_REPRICED_AT + 86400)  # backfill, a day after the change
    assert old.computed_cost_ticks == TOKENS_ONLY + 3 * 50_000_000
    new = make_record(model="grok-4-fast-reasoning", usage=X_SEARCH, started_at=1790000000.0)
    book.price_record(new)
    assert new.computed_cost_ticks == TOKENS_ONLY + 42 * 50_000_000 + 5 * 100_000_000
    assert (new.cost_ticks, new.cost_source) == (new.computed_cost_ticks, "computed")


def test_missing_price_is_unpriced_not_zero() -> None:
    with pytest.raises(UnpricedError) as err:
        compute_cost(Usage(input_tokens=1, output_tokens=1), ModelPrice("m", input=1))
    assert err.value.field == "output"
    with pytest.raises(UnpricedError):
        compute_cost(Usage(images=1), GROK_3)
    with pytest.raises(UnpricedError):
        compute_cost(Usage(sources=1), NO_CACHED)
    assert compute_cost(Usage(), ModelPrice("m")) == 0  # nothing used, nothing owed


# ------------------------------------------------------------------------------------------
# compute_cost: properties

counts = st.integers(min_value=-10, max_value=3_000_000)
ticks = st.integers(min_value=0, max_value=10**9)
maybe_ticks = st.none() | ticks


@st.composite
def usages(draw: st.DrawFn, *, nonneg: bool = False) -> Usage:
    c = st.integers(min_value=0, max_value=3_000_000) if nonneg else counts
    return Usage(
        input_tokens=draw(c),
        cached_input_tokens=draw(c),
        output_tokens=draw(c),
        image_input_tokens=draw(c),
        images=draw(c),
        sources=draw(c),
        server_tool_calls=draw(
            st.dictionaries(st.sampled_from([*TOOL_FEES_TICKS, "unknown"]), c, max_size=3)
        ),
    )


@st.composite
def prices(draw: st.DrawFn) -> ModelPrice:
    p_in = draw(ticks)
    p_in_long = draw(st.none() | st.integers(min_value=p_in, max_value=2 * 10**9))
    return ModelPrice(
        "m",
        input=p_in,
        output=draw(ticks),
        image_input=draw(maybe_ticks),
        cached_input=draw(st.none() | st.integers(min_value=0, max_value=p_in)),
        search=draw(ticks),
        image=draw(ticks),
        long_context_threshold=draw(st.none() | st.integers(min_value=1, max_value=2_000_000)),
        input_long=p_in_long,
        output_long=draw(maybe_ticks),
        cached_input_long=draw(st.none() | st.integers(min_value=0, max_value=p_in)),
    )


@given(usages(), prices())
def test_cost_never_negative(usage: Usage, price: ModelPrice) -> None:
    assert compute_cost(usage, price) >= 0


@given(usages(nonneg=True), prices())
def test_cached_tokens_never_double_billed(usage: Usage, price: ModelPrice) -> None:
    # P_cached <= P_in (short and long) by construction: caching can only make a call cheaper,
    # by exactly cached * (P_in - P_cached)
    uncached = replace(usage, cached_input_tokens=0)
    assert compute_cost(usage, price) <= compute_cost(uncached, price)
    # short context, no image tokens: the saving is exactly cached * (P_in - P_cached)
    usage, uncached = (replace(u, image_input_tokens=0) for u in (usage, uncached))
    price = replace(price, long_context_threshold=None)
    assert price.input is not None
    p_cached = price.cached_input if price.cached_input is not None else price.input
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    saving = compute_cost(uncached, price) - compute_cost(usage, price)
    assert saving == cached * (price.input - p_cached)


@given(st.lists(usages(nonneg=True), min_size=1, max_size=8), prices())
@settings(max_examples=200)
def test_integer_ticks_add_up_across_any_split(parts: list[Usage], price: ModelPrice) -> None:
    price = replace(price, long_context_threshold=None)  # one regime for the whole and the parts
    parts = [
        replace(
            u, cached_input_tokens=min(u.cached_input_tokens, u.input_tokens), image_input_tokens=0
        )
        for u in parts
    ]
    whole = Usage(
        input_tokens=sum(u.input_tokens for u in parts),
        cached_input_tokens=sum(u.cached_input_tokens for u in parts),
        output_tokens=sum(u.output_tokens for u in parts),
        images=sum(u.images for u in parts),
        sources=sum(u.sources for u in parts),
        server_tool_calls={
            k: sum(u.server_tool_calls.get(k, 0) for u in parts)
            for u0 in parts
            for k in u0.server_tool_calls
        },
    )
    costs = [compute_cost(u, price) for u in parts]
    assert all(isinstance(c, int) for c in costs)
    assert sum(costs) == compute_cost(whole, price)
    assert sum((ticks_to_usd(c) for c in costs), Decimal(0)) == ticks_to_usd(sum(costs))
