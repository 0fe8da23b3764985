"""The price history in SQLite (daemon/ledger/prices.py): stored once per content, read in order.

Uses the price-listing fixtures of tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import sqlite_utils

from daemon.ledger.prices import load_price_history, save_price_set
from daemon.ledger.schema import migrate
from daemon.ledger.store import all_calls, insert_calls, record_from_row
from daemon.pricing.book import PriceBook, PriceSet
from daemon.pricing.model import ModelPrice
from daemon.record import CallRecord, Usage
from daemon.testing import make_record

GROK_3 = ModelPrice("grok-3", input=30000, cached_input=7500, output=150000, search=250000000)
NO_CACHED = ModelPrice("plain", input=2000, output=5000)


def record(
    model: str | None, usage: Usage | None, *, at: float = 5000.0, requested: str | None = None
) -> CallRecord:
    return make_record(model=model, requested_model=requested, usage=usage, started_at=at)


def test_sqlite_round_trip(
    tmp_path: Path, listing_set: Callable[..., PriceSet], two_sets: tuple[PriceSet, PriceSet]
) -> None:
    db = sqlite_utils.Database(tmp_path / "prices.db")
    assert load_price_history(db) == []
    migrate(db)
    migrate(db)  # idempotent
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
    _, new = two_sets
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
    migrate(db)
    late = save_price_set(db, PriceSet.of([GROK_3], effective_at=2000.0))
    early = save_price_set(db, PriceSet.of([NO_CACHED], effective_at=1000.0))
    assert [s.id for s in load_price_history(db)] == [early, late]


def test_image_tiers_and_repricing_inputs_survive_the_ledger(tmp_path: Path) -> None:
    """What repricing needs beyond usage round-trips: the listing's pricing[] tiers, a call's
    upstream multiplier and its image quality/resolution (migration m009)."""
    db = sqlite_utils.Database(tmp_path / "l.db")
    migrate(db)
    tiered = ModelPrice(
        "grok-imagine-image-2.0", image_tiers=(("low", "1k", 300_000_000), ("medium", "2k", 7))
    )
    save_price_set(db, PriceSet.of([tiered, GROK_3], effective_at=1.0))
    [loaded] = load_price_history(db)
    assert loaded.models["grok-imagine-image-2.0"] == tiered
    assert loaded.models["grok-3"].image_tiers == ()
    us = make_record(id="a", model="grok-3", price_multiplier=Fraction(11, 10))
    image = make_record(id="b", image_tier=("low", None), endpoint="images.generations")
    plain = make_record(id="c")
    insert_calls(db, [us, image, plain])
    rows = {row["id"]: row for row in all_calls(db)}
    assert (rows["a"]["price_multiplier"], rows["b"]["image_tier"]) == (1.1, "low/")
    assert rows["c"]["price_multiplier"] is None and rows["c"]["image_tier"] is None
    assert record_from_row(rows["a"]).price_multiplier == Fraction(11, 10)
    assert record_from_row(rows["b"]).image_tier == ("low", None)
    assert record_from_row(rows["c"]).price_multiplier is None
