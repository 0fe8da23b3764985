"""The `xai-meter prices` table: exact USD strings per 1M tokens, per image, per source."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from daemon.pricing.book import PriceBook, PriceSet
from daemon.pricing.model import ModelPrice
from daemon.pricing.report import prices_table


def test_prices_table(listing_set: Callable[..., PriceSet]) -> None:
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
