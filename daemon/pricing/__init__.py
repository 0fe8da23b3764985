"""Prices: xAI's listings as exact integer ticks, their history, and the cost of one call.

Money is an integer number of ticks everywhere (`daemon.units`: 1 tick = 1e-10 USD, the unit of
xAI's ``usage.cost_in_usd_ticks``). The modules, in the order data flows through them:

- `listing`: listing JSON → `ModelPrice` (`model`), tolerant of old and new shapes.
- `refresh`: GET the listings (retried with tenacity) → `PriceSet`; `PriceRefresher`.
- `daemon.ledger.prices`: the history in SQLite (sync; run in the ledger thread).
- `overrides`: ``[pricing.overrides]`` from the config → partial `ModelPrice`, exactly.
- `book`: `PriceBook`, every `PriceSet` by the time it took effect plus the overrides, and name
  resolution; `PriceBook.price_record` prices a finished `CallRecord` on the hot path.
- `cost`: `compute_cost`, one `Usage` at one `ModelPrice` → ticks (the formula is there).
- `report`: `prices_table`, the rows of ``xai-meter prices``.

The price history's SQL lives in `daemon.ledger.prices` (no SQL outside the ledger). Every name
importers use is re-exported here.
"""

from __future__ import annotations

from daemon.pricing.book import PriceBook, PriceSet
from daemon.pricing.cost import (
    IMAGE_DEFAULTS,
    TIER_MULTIPLIERS,
    TOOL_FEES_TICKS,
    UnpricedError,
    compute_cost,
    exact_multiplier,
)
from daemon.pricing.listing import (
    IMAGE_PRICE_UNITS,
    PLAUSIBLE_IMAGE_USD,
    parse_image_models,
    parse_image_price,
    parse_image_tiers,
    parse_language_models,
)
from daemon.pricing.model import PRICE_FIELDS, ImageTier, ModelPrice, Source
from daemon.pricing.overrides import (
    OverrideError,
    parse_overrides,
    usd_per_1m_to_ticks,
    usd_to_ticks,
)
from daemon.pricing.refresh import PriceFetchError, PriceRefresher, fetch_listing
from daemon.pricing.report import prices_table
from daemon.units import TICKS_PER_TOKEN_PER_USD_PER_1M, TICKS_PER_USD, ticks_to_usd

__all__ = [
    "IMAGE_DEFAULTS",
    "IMAGE_PRICE_UNITS",
    "PLAUSIBLE_IMAGE_USD",
    "PRICE_FIELDS",
    "TICKS_PER_TOKEN_PER_USD_PER_1M",
    "TICKS_PER_USD",
    "TIER_MULTIPLIERS",
    "TOOL_FEES_TICKS",
    "ImageTier",
    "ModelPrice",
    "OverrideError",
    "PriceBook",
    "PriceFetchError",
    "PriceRefresher",
    "PriceSet",
    "Source",
    "UnpricedError",
    "compute_cost",
    "exact_multiplier",
    "fetch_listing",
    "parse_image_models",
    "parse_image_price",
    "parse_image_tiers",
    "parse_language_models",
    "parse_overrides",
    "prices_table",
    "ticks_to_usd",
    "usd_per_1m_to_ticks",
    "usd_to_ticks",
]
