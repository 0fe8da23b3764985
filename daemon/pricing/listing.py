"""xAI's price listings → `ModelPrice`: ``/v1/language-models`` and ``/v1/image-generation-models``.

Tolerant by design: every price field is optional, unknown fields are ignored, an entry without
an id is skipped and an unreadable price is dropped (each logged), because old listings lack
fields and new ones add them. Fetching the listings is `daemon.pricing.refresh`'s job.

Facts from /work/shared/xai-api.md, "Listings" (the fields and answer shapes, including
``GET /v1/models`` with its newer extras) and "Units": token prices are already integer ticks
per token ("USD cents per 100 million tokens" is the same unit), ``search_price`` is ticks per
source. ``image_price`` is documented as cents but observed as ticks (200000000 = $0.02 per
image); `parse_image_price` tells the two apart by magnitude.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import structlog

from daemon.pricing.model import ModelPrice
from daemon.units import TICKS_PER_USD, parse_amount

log = structlog.get_logger("xai_meter.pricing")

#: Per-image prices outside this range (USD) are not believed in either unit.
PLAUSIBLE_IMAGE_USD: Final = (Decimal("0.0005"), Decimal("5"))

_LISTING_PRICE_KEYS: Final = {
    "prompt_text_token_price": "input",
    "cached_prompt_text_token_price": "cached_input",
    "completion_text_token_price": "output",
    "prompt_image_token_price": "image_input",
    "search_price": "search",
    "prompt_text_token_price_long_context": "input_long",
    "cached_prompt_text_token_price_long_context": "cached_input_long",
    "completion_text_token_price_long_context": "output_long",
}


def _whole(value: Any) -> int | None:
    """A non-negative whole number (30000, 30000.0, "30000"); anything else → None."""
    d = parse_amount(value)
    if d is None or d != d.to_integral_value():
        return None
    return int(d)


def parse_image_price(value: Any, model: str = "?") -> int | None:
    """Ticks per image from a listing's ``image_price``, whichever unit it came in.

    Observed values are ticks (200000000 = $0.02); the docs say cents (2 = $0.02). A value is
    taken in the unit that makes it a plausible per-image price (`PLAUSIBLE_IMAGE_USD`); the two
    ranges cannot overlap. A value plausible in neither unit is dropped with a warning.
    """
    d = parse_amount(value)
    if d is None:
        if value is not None:
            log.warning(
                "price_listing_field_ignored",
                model=model,
                field="image_price",
                value=repr(value)[:80],
                reason="not a number",
            )
        return None
    if d == 0:
        return 0
    lo, hi = PLAUSIBLE_IMAGE_USD
    as_ticks = d
    as_cents = d * (TICKS_PER_USD // 100)
    for ticks in (as_ticks, as_cents):
        if lo * TICKS_PER_USD <= ticks <= hi * TICKS_PER_USD and ticks == ticks.to_integral_value():
            return int(ticks)
    log.warning(
        "price_listing_field_ignored",
        model=model,
        field="image_price",
        value=repr(value)[:80],
        reason="not a plausible per-image price in ticks or cents",
    )
    return None


def _parse_entry(entry: Any) -> ModelPrice | None:
    if not isinstance(entry, Mapping):
        log.warning("price_listing_entry_skipped", reason="not an object", entry=repr(entry)[:80])
        return None
    model = entry.get("id")
    if not isinstance(model, str) or not model.strip():
        log.warning("price_listing_entry_skipped", reason="no model id", entry=repr(entry)[:80])
        return None
    model = model.strip()
    prices: dict[str, int | None] = {}
    for key, name in _LISTING_PRICE_KEYS.items():
        raw = entry.get(key)
        prices[name] = _whole(raw)
        if raw is not None and prices[name] is None:
            log.warning(
                "price_listing_field_ignored",
                model=model,
                field=key,
                value=repr(raw)[:80],
                reason="not a whole number of ticks, 0 or more",
            )
    prices["image"] = parse_image_price(entry.get("image_price"), model)
    threshold = _whole(entry.get("long_context_threshold"))
    raw_aliases = entry.get("aliases")
    aliases: list[str] = []
    if isinstance(raw_aliases, list):
        for a in raw_aliases:
            if isinstance(a, str) and a.strip() and a.strip() != model and a.strip() not in aliases:
                aliases.append(a.strip())
    fingerprint = entry.get("fingerprint")
    return ModelPrice(
        model=model,
        aliases=tuple(aliases),
        long_context_threshold=threshold or None,
        fingerprint=fingerprint if isinstance(fingerprint, str) and fingerprint else None,
        source="listing",
        **prices,
    )


def _entries(obj: Any) -> list[Any]:
    if isinstance(obj, list):
        return obj
    if isinstance(obj, Mapping):
        for key in ("models", "data"):
            value = obj.get(key)
            if isinstance(value, list):
                return value
        if "id" in obj:  # GET /v1/language-models/{id}: one model
            return [obj]
    log.warning("price_listing_unreadable", type=type(obj).__name__)
    return []


def _parse_listing(obj: Any) -> list[ModelPrice]:
    models: dict[str, ModelPrice] = {}
    for entry in _entries(obj):
        mp = _parse_entry(entry)
        if mp is None:
            continue
        if mp.model in models:
            log.warning("price_listing_duplicate", model=mp.model, kept="first")
            continue
        models[mp.model] = mp
    return list(models.values())


def parse_language_models(obj: Any) -> list[ModelPrice]:
    """`ModelPrice` for each usable entry of a ``/v1/language-models`` answer.

    Accepts ``{"models": [...]}``, ``{"data": [...]}`` (``/v1/models``, with or without the newer
    price extras), a bare list or one model object. Every price field is optional, unknown fields
    are ignored, an entry without an id is skipped and an unreadable price is dropped (logged).
    """
    return _parse_listing(obj)


def parse_image_models(obj: Any) -> list[ModelPrice]:
    """`ModelPrice` for each usable entry of a ``/v1/image-generation-models`` answer.

    Same tolerance as `parse_language_models`; ``image_price`` goes through `parse_image_price`.
    """
    return _parse_listing(obj)
