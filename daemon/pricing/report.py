"""The rows of ``xai-meter prices``: the price book as people read prices, in exact USD strings.

Two tables: `prices_table`, one row per listed (or overridden) model, and `catalog_table`, one
row per entry of the price catalog (prices no listing carries), every dated entry with the day
it took effect, whether it is the one in force, and its source.

Kept apart from `daemon.pricing.book` because it is presentation (USD strings, ISO times), read
once by the CLI, while the book is the hot-path lookup; `daemon.tables` then renders the rows
like any other table. Unit facts from /work/shared/xai-api.md, "Units": a token price in ticks
per token is USD per 1M tokens once multiplied by 1M (`daemon.units.format_usd`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from daemon.pricing.book import PriceBook
from daemon.pricing.catalog import Catalog, display_unit, display_value
from daemon.units import format_usd

_TOKENS_PER_1M = 1_000_000


def _per_1m(ticks_per_token: int | None) -> str | None:
    """USD per 1M tokens, exact; None when unlisted."""
    return None if ticks_per_token is None else format_usd(ticks_per_token * _TOKENS_PER_1M)


def _each(ticks: int | None) -> str | None:
    """USD per unit (image, source), exact; None when unlisted."""
    return None if ticks is None else format_usd(ticks)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def prices_table(book: PriceBook, at: float | None = None) -> list[dict[str, Any]]:
    """One row per model in force at ``at`` (now by default): USD as exact decimal strings
    (per 1M tokens for token prices, per image, per source), None where unlisted; ``aliases``
    a list of names (the CLI joins them for a table or CSV)."""
    current = book.set_at(time.time() if at is None else at)
    fetched_at = _iso(current.fetched_at) if current is not None else None
    rows = []
    for mp in book.models_at(at):
        rows.append(
            {
                "model": mp.model,
                "aliases": list(mp.aliases),
                "input_usd_per_1m": _per_1m(mp.input),
                "cached_input_usd_per_1m": _per_1m(mp.cached_input),
                "output_usd_per_1m": _per_1m(mp.output),
                "image_input_usd_per_1m": _per_1m(mp.image_input),
                "image_usd": _each(mp.image),
                "search_usd": _each(mp.search),
                "long_context_threshold": mp.long_context_threshold,
                "input_long_usd_per_1m": _per_1m(mp.input_long),
                "cached_input_long_usd_per_1m": _per_1m(mp.cached_input_long),
                "output_long_usd_per_1m": _per_1m(mp.output_long),
                "source": mp.source,
                "price_set_id": current.id if current is not None else None,
                "fetched_at": fetched_at,
            }
        )
    return rows


def catalog_table(catalog: Catalog, at: float | None = None) -> list[dict[str, Any]]:
    """One row per catalog entry, by id then date: ``id``, ``price`` (exact: USD per the
    ``unit`` shown, which is how an override of it is written, or the factor), ``unit``,
    ``effective`` (ISO day; ``always`` for an override), ``in_force`` (bool: the entry in
    force at ``at``, now by default; the CLI shows yes/no in a table or CSV), ``origin``
    (catalog | override), ``source`` and ``note``."""
    when = time.time() if at is None else at
    return [
        {
            "id": entry.id,
            "price": display_value(entry),
            "unit": display_unit(entry),
            "effective": entry.effective or "always",
            "in_force": catalog.in_force(entry, when),
            "origin": entry.origin,
            "source": entry.source,
            "note": entry.note,
        }
        for entry in catalog.entries
    ]
