"""PriceBook: name resolution, the price in force at a call's time, overrides, price_record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from daemon.pricing.book import PriceBook, PriceSet
from daemon.pricing.model import ModelPrice
from daemon.pricing.overrides import OverrideError
from daemon.record import CallRecord, Usage
from daemon.testing import make_record


def record(
    model: str | None, usage: Usage | None, *, at: float = 5000.0, requested: str | None = None
) -> CallRecord:
    return make_record(model=model, requested_model=requested, usage=usage, started_at=at)


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
def test_resolve(name: str, model: str | None, listing_set: Callable[..., PriceSet]) -> None:
    found = listing_set().resolve(name)
    assert (found.model if found else None) == model


def test_an_id_beats_another_models_alias() -> None:
    ps = PriceSet.of(
        [ModelPrice("a", aliases=("b",), input=1), ModelPrice("b", input=2)], effective_at=0
    )
    assert ps.resolve("b") == ModelPrice("b", input=2)


# ------------------------------------------------------------------------------------------
# PriceBook: history, overrides, records


def test_price_in_force_at_the_time_of_the_call(two_sets: tuple[PriceSet, PriceSet]) -> None:
    old, new = two_sets
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


def test_adding_the_same_content_adds_no_set(
    listing_set: Callable[..., PriceSet], two_sets: tuple[PriceSet, PriceSet]
) -> None:
    book = PriceBook()
    first = book.add(listing_set(1000.0))
    again = book.add(replace(listing_set(5000.0), id=7))
    assert len(book.history) == 1
    assert again.effective_at == first.effective_at == 1000.0
    assert again.fetched_at == 5000.0 and again.id == 7
    _, new = two_sets
    book.add(new)
    assert len(book.history) == 2 and book.current == new


def test_price_record_reported_computed_unpriced(listing_set: Callable[..., PriceSet]) -> None:
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


def test_overrides_win_over_the_listing(listing_set: Callable[..., PriceSet]) -> None:
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


def test_bad_override_reload_keeps_the_old_ones(listing_set: Callable[..., PriceSet]) -> None:
    book = PriceBook([listing_set()], overrides={"grok-3": {"input": 1}})
    with pytest.raises(OverrideError):
        book.set_overrides({"grok-3": {"input": "x"}})
    assert book.price_for("grok-3", 5000).input == 10000  # type: ignore[union-attr]
    book.set_overrides({})
    assert book.price_for("grok-3", 5000).input == 30000  # type: ignore[union-attr]
