"""Prices: xAI's listings as exact integer ticks, their history, and the cost of one call.

Money is an integer number of ticks everywhere (`daemon.units`: 1 tick = 1e-10 USD, the unit of
xAI's ``usage.cost_in_usd_ticks``). The modules, in the order data flows through them:

- `listing`: listing JSON → `ModelPrice` (`model`), tolerant of old and new shapes.
- `refresh`: GET the listings (retried with tenacity) → `PriceSet`; `PriceRefresher`.
- `daemon.ledger.prices`: the history in SQLite (sync; run in the ledger thread).
- `catalog`: the prices no listing carries (video, voice, tool fees, multipliers, the batch
  discount), each dated and sourced, shipped as data (``catalog.toml``); `Catalog.price`.
- `overrides`: ``[pricing.overrides]`` from the config → partial `ModelPrice`, exactly; and
  its ``catalog`` table → catalog entries in force at every time.
- `book`: `PriceBook`, every `PriceSet` by the time it took effect plus the overrides, and name
  resolution, and the catalog; `PriceBook.price_record` prices a finished `CallRecord` on the
  hot path.
- `cost`: `compute_cost`, one `Usage` at one `ModelPrice` → ticks (the formula is there);
  `catalog_cost`, a usage priced by the unit from the catalog.
- `report`: `prices_table` and `catalog_table`, the rows of ``xai-meter prices``.

The price history's SQL lives in `daemon.ledger.prices` (no SQL outside the ledger). The names
the rest of the daemon uses are re-exported here; the modules' other names are imported from
the modules themselves.
"""

from __future__ import annotations

from daemon.pricing.book import PriceBook, PriceSet
from daemon.pricing.catalog import Catalog, CatalogEntry, default_catalog
from daemon.pricing.cost import catalog_cost, compute_cost
from daemon.pricing.model import ModelPrice
from daemon.pricing.overrides import OverrideError, parse_overrides
from daemon.pricing.refresh import PriceRefresher
from daemon.pricing.report import catalog_table, prices_table

__all__ = [
    "Catalog",
    "CatalogEntry",
    "ModelPrice",
    "OverrideError",
    "PriceBook",
    "PriceRefresher",
    "PriceSet",
    "catalog_cost",
    "catalog_table",
    "compute_cost",
    "default_catalog",
    "parse_overrides",
    "prices_table",
]
