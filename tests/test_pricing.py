"""Pricing: listings → exact integer ticks, history, overrides, SQLite, fetching with retries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlite_utils
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from tenacity import wait_none

from daemon.pricing import (
    TOOL_FEES_TICKS,
    ModelPrice,
    OverrideError,
    PriceBook,
    PriceFetchError,
    PriceRefresher,
    PriceSet,
    UnpricedError,
    compute_cost,
    fetch_listing,
    load_price_history,
    migrate_prices,
    parse_image_models,
    parse_image_price,
    parse_language_models,
    parse_overrides,
    prices_table,
    save_price_set,
    ticks_to_usd,
    usd_per_1m_to_ticks,
    usd_to_ticks,
)
from daemon.record import CallRecord, Usage

# A listing in the documented shape, with the junk a tolerant parser must survive.
LANGUAGE_LISTING: dict[str, Any] = {
    "models": [
        {
            "id": "grok-4-fast-reasoning",
            "fingerprint": "fp_9362061f30",
            "created": 1756771200,
            "object": "model",
            "owned_by": "xai",
            "version": "1.0",
            "input_modalities": ["text", "image"],
            "output_modalities": ["text"],
            "prompt_text_token_price": 2000,
            "cached_prompt_text_token_price": 500,
            "prompt_image_token_price": 2000,
            "completion_text_token_price": 5000,
            "search_price": 250000000,
            "aliases": ["grok-4-fast", "grok-4-fast-reasoning-latest"],
        },
        {
            "id": "grok-3",
            "fingerprint": "fp_0d42a4eb3d",
            "prompt_text_token_price": 30000,
            "cached_prompt_text_token_price": 7500,
            "completion_text_token_price": 150000,
            "search_price": 250000000,
            "aliases": ["grok-3-latest", "grok-3-beta"],
        },
        {
            "id": "grok-3-mini",
            "prompt_text_token_price": 3000,
            "cached_prompt_text_token_price": 750,
            "completion_text_token_price": 5000,
            "aliases": ["grok-3-mini-latest"],
        },
        {
            "id": "grok-4-0709",
            "prompt_text_token_price": 30000,
            "cached_prompt_text_token_price": 7500,
            "completion_text_token_price": 150000,
            "long_context_threshold": 128000,
            "prompt_text_token_price_long_context": 60000,
            "cached_prompt_text_token_price_long_context": 15000,
            "completion_text_token_price_long_context": 300000,
            "context_length": 256000,
            "aliases": ["grok-4", "grok-4-latest"],
        },
        {"object": "model"},  # no id: skipped
        "not an object",  # skipped
        {"id": "   "},  # blank id: skipped
        {
            "id": "grok-odd",
            "prompt_text_token_price": "abc",
            "completion_text_token_price": -5,
            "cached_prompt_text_token_price": "1200",
            "brand_new_field": {"x": 1},
        },
    ]
}

IMAGE_LISTING: dict[str, Any] = {
    "models": [
        {"id": "grok-imagine-image", "image_price": 200000000, "aliases": ["grok-imagine"]},
        {"id": "grok-2-image-1212", "image_price": 700000000, "aliases": ["grok-2-image"]},
    ]
}

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


def listing_set(effective_at: float = 1000.0) -> PriceSet:
    models = parse_language_models(LANGUAGE_LISTING) + parse_image_models(IMAGE_LISTING)
    return PriceSet.of(models, effective_at=effective_at)


def record(
    model: str | None, usage: Usage | None, *, at: float = 5000.0, requested: str | None = None
) -> CallRecord:
    return CallRecord(
        id="c1",
        started_at=at,
        t0=0.0,
        provider="xai",
        endpoint="chat",
        method="POST",
        path="/v1/chat/completions",
        model=model,
        requested_model=requested,
        usage=usage,
    )


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
        4 * 50_000_000 + 4 * 25_000_000 + 100_000_000,
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
    assert compute_cost(usage, GROK_4_FAST, service_tier="priority") == 731000  # not priced


def test_tool_fee_table() -> None:
    assert TOOL_FEES_TICKS["web_search"] * 1000 == 5 * 10**10
    assert TOOL_FEES_TICKS["file_search"] * 1000 == 25 * 10**9
    assert TOOL_FEES_TICKS["document_search"] * 1000 == 10 * 10**10


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


# ------------------------------------------------------------------------------------------
# Parsing listings


def test_parse_language_listing_is_tolerant() -> None:
    models = {mp.model: mp for mp in parse_language_models(LANGUAGE_LISTING)}
    assert set(models) == {
        "grok-4-fast-reasoning",
        "grok-3",
        "grok-3-mini",
        "grok-4-0709",
        "grok-odd",
    }
    g3 = models["grok-3"]
    assert (g3.input, g3.cached_input, g3.output, g3.search) == (30000, 7500, 150000, 250000000)
    assert g3.aliases == ("grok-3-latest", "grok-3-beta")
    assert g3.fingerprint == "fp_0d42a4eb3d" and g3.source == "listing"
    g4 = models["grok-4-0709"]
    assert (g4.long_context_threshold, g4.input_long, g4.cached_input_long, g4.output_long) == (
        128000,
        60000,
        15000,
        300000,
    )
    odd = models["grok-odd"]  # bad fields dropped, good ones kept, unknown ones ignored
    assert (odd.input, odd.output, odd.cached_input) == (None, None, 1200)
    assert odd.image is None and odd.long_context_threshold is None


def test_parse_logs_what_it_skips() -> None:
    with capture_logs() as logs:
        parse_language_models(LANGUAGE_LISTING)
    skipped = [e["reason"] for e in logs if e["event"] == "price_listing_entry_skipped"]
    ignored = [e["field"] for e in logs if e["event"] == "price_listing_field_ignored"]
    assert skipped == ["no model id", "not an object", "no model id"]
    assert ignored == ["prompt_text_token_price", "completion_text_token_price"]


@pytest.mark.parametrize("obj", [None, 42, "x", {"models": "nope"}, {}])
def test_parse_garbage_gives_nothing(obj: Any) -> None:
    assert parse_language_models(obj) == []


def test_parse_v1_models_shape_with_newer_extras_and_single_model() -> None:
    obj = {
        "object": "list",
        "data": [
            {"id": "grok-4-1-fast", "created": 1, "object": "model", "owned_by": "xai"},
            {
                "id": "grok-5",
                "prompt_text_token_price": 20000.0,
                "completion_text_token_price": 60000,
                "long_context_threshold": 200000,
                "prompt_text_token_price_long_context": 40000,
                "context_length": 2000000,
                "image_price": 500000000,
            },
        ],
    }
    models = {mp.model: mp for mp in parse_language_models(obj)}
    assert models["grok-4-1-fast"] == ModelPrice("grok-4-1-fast")  # listed, no prices
    g5 = models["grok-5"]
    assert (g5.input, g5.long_context_threshold, g5.input_long, g5.image) == (
        20000,
        200000,
        40000,
        500000000,
    )
    assert parse_language_models(LANGUAGE_LISTING["models"][1])[0].model == "grok-3"


def test_parse_image_models_and_price_units() -> None:
    models = {mp.model: mp for mp in parse_image_models(IMAGE_LISTING)}
    assert models["grok-imagine-image"].image == 200000000  # ticks: $0.02
    assert ticks_to_usd(models["grok-2-image-1212"].image or 0) == Decimal("0.07")
    assert parse_image_price(200000000) == 200000000  # observed: ticks
    assert parse_image_price(2) == 200000000  # documented: cents, $0.02
    assert parse_image_price(7) == 700000000
    assert parse_image_price(0.5) == 50000000  # half a cent
    assert parse_image_price(10**15) is None  # $100,000 per image: neither
    assert parse_image_price(1000) is None  # 1e-7 USD as ticks, $10 as cents: neither
    assert parse_image_price("bad") is None and parse_image_price(None) is None


# ------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("grok-3", "grok-3"),
        ("GROK-3", "grok-3"),
        ("grok-3-latest", "grok-3"),  # alias
        ("grok-4-fast", "grok-4-fast-reasoning"),  # alias
        ("Grok-4-Fast", "grok-4-fast-reasoning"),
        ("grok-3-mini-high", "grok-3-mini"),  # effort suffix
        ("grok-3-mini-low", "grok-3-mini"),
        ("grok-3-mini-medium", "grok-3-mini"),
        ("grok-3-mini-latest", "grok-3-mini"),
        ("grok-3-mini-latest-high", "grok-3-mini"),
        ("grok-4-fast-reasoning-latest", "grok-4-fast-reasoning"),
        ("grok-4-latest", "grok-4-0709"),
        ("xai/grok-3", "grok-3"),
        ("grok-imagine", "grok-imagine-image"),
        ("grok-2-image", "grok-2-image-1212"),
        ("grok-9", None),
        ("grok-3-mini-beta", None),
        ("-high", None),
        ("", None),
    ],
)
def test_resolve(name: str, model: str | None) -> None:
    found = listing_set().resolve(name)
    assert (found.model if found else None) == model


def test_an_id_beats_another_models_alias() -> None:
    ps = PriceSet.of(
        [ModelPrice("a", aliases=("b",), input=1), ModelPrice("b", input=2)], effective_at=0
    )
    assert ps.resolve("b") == ModelPrice("b", input=2)


# ------------------------------------------------------------------------------------------
# PriceBook: history, overrides, records


def two_sets() -> tuple[PriceSet, PriceSet]:
    old = replace(listing_set(1000.0), id=1)
    cheaper = [
        replace(mp, input=20000) if mp.model == "grok-3" else mp for mp in old.models.values()
    ]
    new = PriceSet.of(cheaper, effective_at=2000.0, id=2)
    return old, new


def test_price_in_force_at_the_time_of_the_call() -> None:
    old, new = two_sets()
    book = PriceBook([new, old])  # any order
    assert [s.id for s in book.history] == [1, 2]
    assert book.price_for("grok-3", 1500).input == 30000  # type: ignore[union-attr]
    assert book.price_for("grok-3", 1999.999).input == 30000  # type: ignore[union-attr]
    assert book.price_for("grok-3", 2000).input == 20000  # type: ignore[union-attr]
    assert book.price_for("grok-3-latest", 9e9).input == 20000  # type: ignore[union-attr]
    # before the first set: the first set (calls made while it was being fetched)
    assert book.price_for("grok-3", 10).input == 30000  # type: ignore[union-attr]
    assert book.price_for("nope", 1500) is None

    usage = Usage(input_tokens=100)
    before, after = record("grok-3", usage, at=1500), record("grok-3", usage, at=2500)
    book.price_record(before)
    book.price_record(after)
    assert (before.cost_ticks, before.price_id, before.cost_source) == (3_000_000, 1, "computed")
    assert (after.cost_ticks, after.price_id, after.cost_source) == (2_000_000, 2, "computed")


def test_adding_the_same_content_adds_no_set() -> None:
    book = PriceBook()
    first = book.add(listing_set(1000.0))
    again = book.add(replace(listing_set(5000.0), id=7))
    assert len(book.history) == 1
    assert again.effective_at == first.effective_at == 1000.0
    assert again.fetched_at == 5000.0 and again.id == 7
    _, new = two_sets()
    book.add(new)
    assert len(book.history) == 2 and book.current == new


def test_price_record_reported_computed_unpriced() -> None:
    book = PriceBook([replace(listing_set(), id=3)])
    usage = Usage(
        input_tokens=165,
        cached_input_tokens=156,
        output_tokens=127,
        reasoning_tokens=125,
        reported_cost_ticks=731001,
    )
    r = record("grok-4-fast-reasoning", usage)
    book.price_record(r)
    assert (r.cost_ticks, r.computed_cost_ticks, r.cost_source, r.price_id) == (
        731001,
        731000,
        "reported",
        3,
    )

    r = record("grok-4-fast-reasoning", replace(usage, reported_cost_ticks=None))
    book.price_record(r)
    assert (r.cost_ticks, r.computed_cost_ticks, r.cost_source) == (731000, 731000, "computed")

    r = record("grok-unknown", Usage(input_tokens=5))
    book.price_record(r)
    assert (r.cost_ticks, r.computed_cost_ticks, r.cost_source, r.price_id) == (
        None,
        None,
        "unpriced",
        None,
    )

    r = record("grok-unknown", Usage(input_tokens=5, reported_cost_ticks=99))
    book.price_record(r)
    assert (r.cost_ticks, r.computed_cost_ticks, r.cost_source) == (99, None, "reported")

    # resolved name unknown: the requested name is tried next
    r = record(None, Usage(input_tokens=1), requested="grok-3-latest")
    book.price_record(r)
    assert (r.cost_ticks, r.cost_source) == (30000, "computed")

    # a price the model does not list: unpriced, never zero
    r = record("grok-3", Usage(images=1))
    book.price_record(r)
    assert (r.cost_ticks, r.cost_source) == (None, "unpriced")

    r = record("grok-3", None)
    book.price_record(r)
    assert (r.cost_ticks, r.computed_cost_ticks, r.cost_source, r.price_id) == (
        None,
        None,
        None,
        None,
    )

    r = record("grok-imagine", Usage(images=3))
    book.price_record(r)
    assert r.cost_ticks == 600000000


def test_overrides_win_over_the_listing() -> None:
    book = PriceBook(
        [replace(listing_set(), id=1)],
        overrides={
            "grok-3-latest": {"input": 2.5},  # names a listed model: only input changes
            "my-finetune": {"input": 1, "output": 2, "aliases": ["ft"]},  # unlisted: by itself
        },
    )
    g3 = book.price_for("grok-3", 5000)
    assert g3 is not None
    assert (g3.input, g3.cached_input, g3.output, g3.source) == (25000, 7500, 150000, "override")
    assert book.price_for("grok-3-beta", 5000) == g3
    ft = book.price_for("FT", 5000)
    assert ft is not None and (ft.input, ft.output, ft.source) == (10000, 20000, "override")
    assert book.price_for("grok-4-fast", 5000) == listing_set().resolve("grok-4-fast")
    # overrides alone price calls before any listing arrived
    alone = PriceBook(overrides={"grok-3": {"input": 3, "output": 15}})
    r = record("grok-3", Usage(input_tokens=10, output_tokens=1))
    alone.price_record(r)
    assert (r.cost_ticks, r.price_id) == (10 * 30000 + 150000, None)


def test_override_conversion_is_exact() -> None:
    assert usd_per_1m_to_ticks(3) == 30000
    assert usd_per_1m_to_ticks(0.2) == 2000
    assert usd_per_1m_to_ticks(0.75) == 7500
    assert usd_per_1m_to_ticks(0.0001) == 1
    assert usd_per_1m_to_ticks("1.2345") == 12345
    assert usd_to_ticks(0.02) == 200000000
    assert usd_to_ticks(0.025) == 250000000
    parsed = parse_overrides(
        {
            "Grok-X": {
                "image": 0.07,
                "search": 0.025,
                "cached_input": 0.05,
                "long_context_threshold": 128000,
                "output_long_context": 30,
            }
        }
    )
    assert parsed == {
        "grok-x": ModelPrice(
            "Grok-X",
            image=700000000,
            search=250000000,
            cached_input=500,
            long_context_threshold=128000,
            output_long=300000,
            source="override",
        )
    }


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"grok-3": {"input": 0.00001}}, ["grok-3.input", "0.1", "whole number"]),
        ({"grok-3": {"output": 1.23456}}, ["grok-3.output", "whole number"]),
        ({"grok-3": {"image": 1e-11}}, ["grok-3.image", "whole number of ticks"]),
        ({"grok-3": {"input": -1}}, ["grok-3.input", "0 or more"]),
        ({"grok-3": {"input": True}}, ["grok-3.input"]),
        ({"grok-3": {"input": "three"}}, ["grok-3.input"]),
        ({"grok-3": {"inptu": 3}}, ["grok-3.inptu", "Did you mean input"]),
        ({"grok-3": {"long_context_threshold": 1.5}}, ["grok-3.long_context_threshold"]),
        ({"grok-3": 3}, ["grok-3"]),
        ({"grok-3": {"aliases": "x"}}, ["grok-3.aliases"]),
    ],
)
def test_override_errors_name_model_and_field(table: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(OverrideError) as err:
        PriceBook(overrides=table)
    for w in words:
        assert w in str(err.value)


def test_bad_override_reload_keeps_the_old_ones() -> None:
    book = PriceBook([listing_set()], overrides={"grok-3": {"input": 1}})
    with pytest.raises(OverrideError):
        book.set_overrides({"grok-3": {"input": "x"}})
    assert book.price_for("grok-3", 5000).input == 10000  # type: ignore[union-attr]
    book.set_overrides({})
    assert book.price_for("grok-3", 5000).input == 30000  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------
# SQLite


def test_sqlite_round_trip(tmp_path: Path) -> None:
    db = sqlite_utils.Database(tmp_path / "prices.db")
    assert load_price_history(db) == []
    migrate_prices(db)
    migrate_prices(db)  # idempotent
    assert {c.name for c in db.table("prices").columns} >= {
        "price_set_id",
        "model",
        "aliases",
        "input",
        "cached_input",
        "output",
        "image_input",
        "search",
        "image",
        "long_context_threshold",
        "input_long",
        "cached_input_long",
        "output_long",
        "fingerprint",
    }
    assert [c.name for c in db.table("price_sets").columns] == [
        "id",
        "effective_at",
        "fetched_at",
        "source",
        "digest",
    ]

    first = save_price_set(db, listing_set(1000.0))
    same = save_price_set(db, listing_set(1500.0))  # a refresh that changes nothing
    assert same == first
    assert db.table("price_sets").count == 1
    assert db.table("prices").count == len(listing_set().models)
    _, new = two_sets()
    second = save_price_set(db, replace(new, id=None))
    assert second != first and db.table("price_sets").count == 2

    history = load_price_history(db)
    assert [s.id for s in history] == [first, second]
    assert [s.effective_at for s in history] == [1000.0, 2000.0]
    assert history[0].fetched_at == 1500.0  # moved on by the unchanged refresh
    assert history[0].digest == listing_set().digest and history[1].digest == new.digest
    assert dict(history[0].models) == dict(listing_set().models)

    book = PriceBook(history)
    r = record("grok-3", Usage(input_tokens=1), at=1200)
    book.price_record(r)
    assert (r.cost_ticks, r.price_id) == (30000, first)


def test_load_orders_by_effective_time(tmp_path: Path) -> None:
    db = sqlite_utils.Database(tmp_path / "p.db")
    migrate_prices(db)
    late = save_price_set(db, PriceSet.of([GROK_3], effective_at=2000.0))
    early = save_price_set(db, PriceSet.of([NO_CACHED], effective_at=1000.0))
    assert [s.id for s in load_price_history(db)] == [early, late]


# ------------------------------------------------------------------------------------------
# Fetching, against a tiny real server


class Script:
    """Answers per path: a list of (status, body) played in order, the last one repeated."""

    def __init__(self, routes: dict[str, list[tuple[int, Any]]]) -> None:
        self.routes = routes
        self.hits: dict[str, int] = {}
        self.auth: list[str | None] = []

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.auth.append(request.headers.get("Authorization"))
        n = self.hits.get(path, 0)
        self.hits[path] = n + 1
        answers = self.routes.get(path)
        if not answers:
            return web.json_response({"code": "not_found", "error": "no route"}, status=404)
        status, body = answers[min(n, len(answers) - 1)]
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)


@contextlib.asynccontextmanager
async def serve(script: Script) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", script.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            yield f"http://127.0.0.1:{port}", session
    finally:
        await runner.cleanup()


OK_ROUTES: dict[str, list[tuple[int, Any]]] = {
    "/v1/language-models": [(200, LANGUAGE_LISTING)],
    "/v1/image-generation-models": [(200, IMAGE_LISTING)],
}


@pytest.mark.asyncio
async def test_fetch_listing() -> None:
    script = Script(OK_ROUTES)
    async with serve(script) as (base, session):
        ps = await fetch_listing(session, base, "xai-secret", clock=lambda: 1234.0)
        again = await fetch_listing(session, base + "/v1/", None, clock=lambda: 1234.0)
    assert ps.id is None and ps.effective_at == ps.fetched_at == 1234.0
    assert ps.digest == listing_set().digest
    assert ps.resolve("grok-imagine").image == 200000000  # type: ignore[union-attr]
    assert again.digest == ps.digest
    assert script.auth[:2] == ["Bearer xai-secret", "Bearer xai-secret"]
    assert script.auth[2:] == [None, None]


@pytest.mark.asyncio
async def test_fetch_listing_without_image_models_and_failures() -> None:
    script = Script({"/v1/language-models": [(200, LANGUAGE_LISTING)]})  # images: 404
    async with serve(script) as (base, session):
        ps = await fetch_listing(session, base, None)
        assert ps.resolve("grok-imagine") is None and ps.resolve("grok-3") is not None

    script = Script(
        {
            "/v1/language-models": [
                (
                    400,
                    {
                        "code": "Client specified an invalid argument",
                        "error": "Incorrect API key provided: xa***23.",
                    },
                )
            ]
        }
    )
    async with serve(script) as (base, session):
        with pytest.raises(PriceFetchError) as err:
            await fetch_listing(session, base, "bad")
    assert err.value.status == 400 and not err.value.retryable
    assert "Incorrect API key" in err.value.detail and "HTTP 400" in str(err.value)

    cases: list[tuple[dict[str, list[tuple[int, Any]]], int]] = [
        ({"/v1/language-models": [(200, "<html>oops</html>")]}, 200),  # not JSON
        ({"/v1/language-models": [(200, {"models": []})]}, 200),  # nothing usable
        ({**OK_ROUTES, "/v1/image-generation-models": [(502, "bad gateway")]}, 502),
    ]
    for routes, status in cases:
        async with serve(Script(routes)) as (base, session):
            with pytest.raises(PriceFetchError) as err:
                await fetch_listing(session, base, None)
        assert err.value.status == status and err.value.retryable

    async with aiohttp.ClientSession() as session:  # nothing listening: no HTTP answer
        with pytest.raises(PriceFetchError) as err:
            await fetch_listing(session, "http://127.0.0.1:1", None)
    assert err.value.status is None and err.value.retryable


def refresher(
    book: PriceBook, session: aiohttp.ClientSession, base: str, failures: list[Exception], **kw: Any
) -> PriceRefresher:
    return PriceRefresher(
        book, session, base, "k", attempts=3, wait=wait_none(), on_failure=failures.append, **kw
    )


@pytest.mark.asyncio
async def test_refresh_retries_a_failing_listing() -> None:
    script = Script(
        {
            **OK_ROUTES,
            "/v1/language-models": [
                (503, {"code": "unavailable", "error": "try later"}),
                (200, LANGUAGE_LISTING),
            ],
        }
    )
    book, saved = PriceBook(), []
    failures: list[Exception] = []
    successes: list[PriceSet] = []

    async def save(ps: PriceSet) -> int:
        saved.append(ps)
        return 41

    async with serve(script) as (base, session):
        r = refresher(book, session, base, failures, save=save, on_success=successes.append)
        ps = await r.refresh()
    assert script.hits["/v1/language-models"] == 2 and r.tries == 2
    assert failures == [] and r.last_error is None
    assert ps is not None and ps.id == 41 and book.current == ps and successes == [ps]
    assert len(saved) == 1 and saved[0].id is None


@pytest.mark.asyncio
async def test_permanent_failure_keeps_old_prices_and_reports() -> None:
    old, _ = two_sets()
    book = PriceBook([old])
    failures: list[Exception] = []
    script = Script({"/v1/language-models": [(503, "upstream down")]})
    async with serve(script) as (base, session):
        r = refresher(book, session, base, failures)
        assert await r.refresh() is None
    assert script.hits["/v1/language-models"] == 3  # bounded attempts
    assert len(failures) == 1
    exc = failures[0]
    assert isinstance(exc, PriceFetchError) and exc.status == 503
    assert "upstream down" in exc.detail
    assert book.history == (old,) and r.last_error is exc

    failures.clear()
    script = Script({"/v1/language-models": [(401, {"error": "no key"})]})
    async with serve(script) as (base, session):
        r = refresher(book, session, base, failures)
        assert await r.refresh() is None
    assert script.hits["/v1/language-models"] == 1  # a 401 is not retried
    assert len(failures) == 1 and book.history == (old,)


@pytest.mark.asyncio
async def test_unchanged_refresh_adds_no_set_and_save_failure_still_prices() -> None:
    book = PriceBook([replace(listing_set(1.0), id=5)])
    failures: list[Exception] = []

    async def broken_save(ps: PriceSet) -> int:
        raise OSError("disk full")

    async with serve(Script(OK_ROUTES)) as (base, session):
        r = refresher(book, session, base, failures, clock=lambda: 99.0)
        ps = await r.refresh()
        assert ps is not None and [s.id for s in book.history] == [5]
        assert (ps.id, ps.effective_at, ps.fetched_at) == (5, 1.0, 99.0)

        changed = {
            "/v1/language-models": [
                (
                    200,
                    {
                        "models": [
                            {**LANGUAGE_LISTING["models"][1], "prompt_text_token_price": 20000}
                        ]
                    },
                )
            ]
        }
        async with serve(Script(changed)) as (base2, _):
            r2 = refresher(book, session, base2, failures, save=broken_save)
            ps2 = await r2.refresh()
    assert ps2 is not None and ps2.id is None and len(book.history) == 2
    assert book.price_for("grok-3", 9e12).input == 20000  # type: ignore[union-attr]
    assert len(failures) == 1 and isinstance(failures[0], OSError)


@pytest.mark.asyncio
async def test_run_refreshes_until_cancelled() -> None:
    book: PriceBook = PriceBook()
    seen: list[PriceSet] = []
    twice = asyncio.Event()

    def on_success(ps: PriceSet) -> None:
        seen.append(ps)
        if len(seen) == 2:
            twice.set()

    async with serve(Script(OK_ROUTES)) as (base, session):
        r = PriceRefresher(book, session, base, wait=wait_none(), on_success=on_success)
        task = asyncio.create_task(r.run(interval=0))
        await asyncio.wait_for(twice.wait(), 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(book.history) == 1


# ------------------------------------------------------------------------------------------
# The `xai-meter prices` table


def test_prices_table() -> None:
    book = PriceBook(
        [replace(listing_set(1_700_000_000.0), id=9)], overrides={"grok-3-mini": {"output": 0.4}}
    )
    rows = {row["model"]: row for row in prices_table(book, at=1_800_000_000.0)}
    g3 = rows["grok-3"]
    assert (g3["input_usd_per_1m"], g3["cached_input_usd_per_1m"], g3["output_usd_per_1m"]) == (
        "3.00",
        "0.75",
        "15.00",
    )
    assert g3["search_usd"] == "0.025" and g3["image_usd"] is None
    assert g3["aliases"] == "grok-3-latest, grok-3-beta"
    assert g3["source"] == "listing" and g3["price_set_id"] == 9
    assert g3["fetched_at"] == "2023-11-14T22:13:20+00:00"
    fast = rows["grok-4-fast-reasoning"]
    assert (fast["input_usd_per_1m"], fast["cached_input_usd_per_1m"]) == ("0.20", "0.05")
    assert fast["image_input_usd_per_1m"] == "0.20"
    g4 = rows["grok-4-0709"]
    assert (
        g4["long_context_threshold"],
        g4["input_long_usd_per_1m"],
        g4["output_long_usd_per_1m"],
    ) == (128000, "6.00", "30.00")
    assert rows["grok-imagine-image"]["image_usd"] == "0.02"
    assert rows["grok-3-mini"]["output_usd_per_1m"] == "0.40"
    assert rows["grok-3-mini"]["source"] == "override"
    assert list(rows) == sorted(rows)
    odd = PriceBook([PriceSet.of([ModelPrice("m", input=1, output=12345)], effective_at=0)])
    row = prices_table(odd)[0]
    assert (row["input_usd_per_1m"], row["output_usd_per_1m"]) == ("0.0001", "1.2345")
    assert prices_table(PriceBook()) == []


def test_listing_errors_never_quote_a_key() -> None:
    from daemon.pricing.refresh import _excerpt

    body = (
        b'{"code":"Client specified an invalid argument","error":"Incorrect API key '
        b'provided: xai-AbCd****************************WxYz. You can obtain an API key"}'
    )
    text = _excerpt(body)
    assert "AbCd" not in text and "WxYz" not in text and "<key>" in text
