"""Parsing /v1/language-models and /v1/image-generation-models: tolerant, logged, exact."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.pricing.listing import parse_image_models, parse_image_price, parse_language_models
from daemon.pricing.model import ModelPrice
from daemon.units import ticks_to_usd


def test_parse_language_listing_is_tolerant(language_listing: dict[str, Any]) -> None:
    models = {mp.model: mp for mp in parse_language_models(language_listing)}
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


def test_parse_logs_what_it_skips(language_listing: dict[str, Any]) -> None:
    with capture_logs() as logs:
        parse_language_models(language_listing)
    skipped = [e["reason"] for e in logs if e["event"] == "price_listing_entry_skipped"]
    ignored = [e["field"] for e in logs if e["event"] == "price_listing_field_ignored"]
    assert skipped == ["no model id", "not an object", "no model id"]
    assert ignored == ["prompt_text_token_price", "completion_text_token_price"]


@pytest.mark.parametrize("obj", [None, 42, "x", {"models": "nope"}, {}])
def test_parse_garbage_gives_nothing(obj: Any) -> None:
    assert parse_language_models(obj) == []


def test_parse_v1_models_shape_with_newer_extras_and_single_model(
    language_listing: dict[str, Any],
) -> None:
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
    assert parse_language_models(language_listing["models"][1])[0].model == "grok-3"


def test_parse_image_models_and_price_units(image_listing: dict[str, Any]) -> None:
    models = {mp.model: mp for mp in parse_image_models(image_listing)}
    assert models["grok-imagine-image"].image == 200000000  # ticks: $0.02
    assert ticks_to_usd(models["grok-2-image-1212"].image or 0) == Decimal("0.07")
    assert parse_image_price(200000000) == 200000000  # observed: ticks
    assert parse_image_price(2) == 200000000  # documented: cents, $0.02
    assert parse_image_price(7) == 700000000
    assert parse_image_price(0.5) == 50000000  # half a cent
    assert parse_image_price(10**15) is None  # $100,000 per image: neither
    # was "None" (1e-7 USD as ticks, $10 as cents); read in 1e-4 USD, the unit of a real 2025
    # listing, 1000 is $0.10: inside the known $0.02-$0.10 range
    assert parse_image_price(1000) == 1_000_000_000
    assert parse_image_price(100_000) is None  # $0.00001, $10 or $1000 per image: no unit fits
    assert parse_image_price("bad") is None and parse_image_price(None) is None
