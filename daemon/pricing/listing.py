"""xAI's price listings → `ModelPrice`: ``/v1/language-models`` and ``/v1/image-generation-models``.

Tolerant by design: every price field is optional, unknown fields are ignored, an entry without
an id is skipped and an unreadable price is dropped (each logged), because old listings lack
fields and new ones add them. Fetching the listings is `daemon.pricing.refresh`'s job.

Facts from /work/shared/xai-api.md, "Listings" (the fields and answer shapes, including
``GET /v1/models`` with its newer extras) and "Units": token prices are already integer ticks
per token ("USD cents per 100 million tokens" is the same unit), ``search_price`` is ticks per
source. ``image_price`` is documented as cents but observed as ticks (200000000 = $0.02 per
image) and, in a real April 2025 listing, as 1e-4 USD (700 = $0.07); `parse_image_price` tells
the units apart by magnitude (`IMAGE_PRICE_UNITS`, `PLAUSIBLE_IMAGE_USD`). 2026 listings add
``pricing[]`` tiers ``{quality, resolution, price_per_image}`` (documented as ticks, read
through the same magnitude rule). Long context: ``long_context_threshold`` of 0 or absent (old
listings) is no long-context tier; a ``*_long_context`` price of 0 is "the normal price" (kept as
None).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import structlog

from daemon.pricing.model import ImageTier, ModelPrice
from daemon.units import TICKS_PER_USD, parse_amount

log = structlog.get_logger("xai_meter.pricing")

#: The per-image price band (USD, lowest included, highest excluded) a listed image price
#: must fall in, in exactly one of `IMAGE_PRICE_UNITS`. Known prices are $0.02-$0.10 per image
#: (xai-api.md "Units", "Models"); the band leaves room around them but spans a factor of 100,
#: the smallest ratio between two units, so no number is plausible in two units.
PLAUSIBLE_IMAGE_USD: Final = (Decimal("0.005"), Decimal("0.5"))

#: Units an ``image_price`` has been seen or documented in, as ticks per unit: ticks (2026
#: listings, 200000000 = $0.02), 1e-4 USD (April 2025, 700 = $0.07) and cents (the docs, 2 =
#: $0.02).
IMAGE_PRICE_UNITS: Final = (("ticks", 1), ("1e-4 USD", 1_000_000), ("cents", 100_000_000))

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


def parse_image_price(value: Any, model: str = "?", field: str = "image_price") -> int | None:
    """Ticks per image from a listing's ``image_price``, whichever unit it came in.

    Never read blindly in one unit: the value is taken in the one unit of `IMAGE_PRICE_UNITS`
    that makes it a per-image price in `PLAUSIBLE_IMAGE_USD` (200000000 → ticks, $0.02; 700 →
    1e-4 USD, $0.07; 500 → 1e-4 USD, $0.05, not $5 in cents; 7 → cents, $0.07). The band spans
    a factor of 100, so at most one unit fits. 0 is free; a value plausible in no unit (or not a
    whole number of ticks) is dropped with a warning, and the model's images go unpriced.
    """
    d = parse_amount(value)
    if d is None:
        if value is not None:
            log.warning(
                "price_listing_field_ignored",
                model=model,
                field=field,
                value=repr(value)[:80],
                reason="not a number",
            )
        return None
    if d == 0:
        return 0
    lo, hi = PLAUSIBLE_IMAGE_USD
    for _unit, ticks_per_unit in IMAGE_PRICE_UNITS:
        ticks = d * ticks_per_unit
        if lo * TICKS_PER_USD <= ticks < hi * TICKS_PER_USD and ticks == ticks.to_integral_value():
            return int(ticks)
    log.warning(
        "price_listing_field_ignored",
        model=model,
        field=field,
        value=repr(value)[:80],
        reason="not a plausible per-image price in ticks, 1e-4 USD or cents",
    )
    return None


def _tier_key(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def parse_image_tiers(value: Any, model: str = "?") -> tuple[ImageTier, ...]:
    """The ``pricing[]`` tiers of a 2026 image model: ``(quality, resolution, ticks)`` each.

    Each entry is ``{quality, resolution, price_per_image}``; ``price_per_image`` goes through
    the magnitude rule of `parse_image_price` (documented as ticks). An entry without a
    quality, a resolution or a plausible price is dropped with a warning; the first of two
    entries for one pair wins.
    """
    if not isinstance(value, list):
        return ()
    tiers: dict[tuple[str, str], int] = {}
    for entry in value:
        entry = entry if isinstance(entry, Mapping) else {}
        quality, resolution = _tier_key(entry.get("quality")), _tier_key(entry.get("resolution"))
        ticks = parse_image_price(entry.get("price_per_image"), model, "pricing.price_per_image")
        if quality is None or resolution is None or ticks is None:
            log.warning(
                "price_listing_field_ignored",
                model=model,
                field="pricing",
                value=repr(entry)[:80],
                reason="a tier needs quality, resolution and a plausible price_per_image",
            )
            continue
        tiers.setdefault((quality, resolution), ticks)
    return tuple((q, r, t) for (q, r), t in tiers.items())


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
    for name in ("input_long", "cached_input_long", "output_long"):
        prices[name] = prices[name] or None  # 0 = "use the normal price" (xai-api.md)
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
        image_tiers=parse_image_tiers(entry.get("pricing"), model),
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

    Same tolerance as `parse_language_models`; ``image_price`` goes through `parse_image_price`
    and ``pricing[]`` through `parse_image_tiers`.
    """
    return _parse_listing(obj)
