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

Every name importers use is re-exported here. ``migrate_prices``, ``save_price_set`` and
``load_price_history`` now live in `daemon.ledger.prices` (no SQL outside the ledger); they are
still importable from here, loaded on first use so that importing pricing never imports the
ledger (which imports pricing), until every importer has switched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from daemon.pricing.book import CostSource, PriceBook, PriceSet
from daemon.pricing.cost import TOOL_FEES_TICKS, UnpricedError, compute_cost
from daemon.pricing.listing import (
    PLAUSIBLE_IMAGE_USD,
    parse_image_models,
    parse_image_price,
    parse_language_models,
)
from daemon.pricing.model import PRICE_FIELDS, ModelPrice, Source
from daemon.pricing.overrides import (
    OverrideError,
    parse_overrides,
    usd_per_1m_to_ticks,
    usd_to_ticks,
)
from daemon.pricing.refresh import PriceFetchError, PriceRefresher, fetch_listing
from daemon.pricing.report import prices_table
from daemon.units import TICKS_PER_TOKEN_PER_USD_PER_1M, TICKS_PER_USD, ticks_to_usd

if TYPE_CHECKING:
    from daemon.ledger.prices import load_price_history, migrate_prices, save_price_set

__all__ = [
    "PLAUSIBLE_IMAGE_USD",
    "PRICE_FIELDS",
    "TICKS_PER_TOKEN_PER_USD_PER_1M",
    "TICKS_PER_USD",
    "TOOL_FEES_TICKS",
    "CostSource",
    "ModelPrice",
    "OverrideError",
    "PriceBook",
    "PriceFetchError",
    "PriceRefresher",
    "PriceSet",
    "Source",
    "UnpricedError",
    "compute_cost",
    "fetch_listing",
    "load_price_history",
    "migrate_prices",
    "parse_image_models",
    "parse_image_price",
    "parse_language_models",
    "parse_overrides",
    "prices_table",
    "save_price_set",
    "ticks_to_usd",
    "usd_per_1m_to_ticks",
    "usd_to_ticks",
]

_IN_LEDGER = frozenset({"load_price_history", "migrate_prices", "save_price_set"})

if not TYPE_CHECKING:  # mypy sees the imports above; at run time they load on first use

    def __getattr__(name: str) -> Any:
        if name in _IN_LEDGER:
            value = getattr(importlib.import_module("daemon.ledger.prices"), name)
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
