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

The price history's SQL lives in `daemon.ledger.prices` (no SQL outside the ledger). The names
the rest of the daemon uses are re-exported here; the modules' other names are imported from
the modules themselves.
"""

from __future__ import annotations

from daemon.pricing.book import PriceBook, PriceSet
from daemon.pricing.cost import compute_cost
from daemon.pricing.model import ModelPrice
from daemon.pricing.overrides import OverrideError, parse_overrides
from daemon.pricing.refresh import PriceRefresher
from daemon.pricing.report import prices_table

__all__ = [
    "ModelPrice",
    "OverrideError",
    "PriceBook",
    "PriceRefresher",
    "PriceSet",
    "compute_cost",
    "parse_overrides",
    "prices_table",
]
