"""The cost of one call: one `Usage` at one `ModelPrice` → integer ticks (pure, no I/O).

The formula, checked exactly against real bills (tests/pricing/test_real_bills.py)::

    tokens = (input - cached - image_input)·P_in + cached·P_cached + image_input·P_image_in
             + output·P_out + writes_5m·P_write_5m + writes_1h·P_write_1h
    cost   = ⌊tokens · tier · multiplier⌋ + sources·P_search + Σ tool units·fee + images·P_image

with ``input - cached - image_input`` read as also less the cache writes, which are a part of
``input`` too. Cache writes (xai-api.md, "Anthropic-compatible"): a 5-minute write bills 1.25x the
input price, a 1-hour write 2x, unless an override sets ``cache_write``/``cache_write_1h``; a
write count without its split is all 5-minute writes (xAI's always 0). They are token prices, so
the multipliers apply to them too.

``output`` already includes reasoning; cached and image-input tokens are parts of ``input``
(xAI bills "prompt text, audio and image tokens" at the prompt price, and its chat usage reports
``text_tokens`` = ``prompt_tokens`` when no image is sent), so each input token is billed once.

Long context: the listing's ``long_context_threshold`` decides, "at or above": when
``input >= threshold`` every token takes its ``*_long`` price; a threshold of 0 or none (old
listings lack the field) means no long-context tier, and a ``*_long`` price of 0 or none keeps
that component's normal price. There is no built-in threshold.

Multipliers apply to the token part only, after the cache discount (cached tokens are priced at
the cached price first): ``tier`` is the catalog's ``tier`` entry for the *response's*
``service_tier`` (``priority`` and ``fast``: 2), else 1; ``multiplier`` is the upstream's
``price_multiplier`` (1.1 for the US regional endpoint), an exact `Fraction` of the decimal
configured. The product is **rounded down to a whole tick** once per call (integer arithmetic:
``tokens · tier · numerator // denominator``), so the computed cost is never above the exact
product and at most one tick below it (a 5-minute cache write's 1.25x is itself rounded to the
nearest tick first). Per-source, per-image and tool fees are not multiplied (xai-api.md prices
only tokens by tier and region). The reported ``cost_in_usd_ticks``, when present, is the
truth and stays ``cost_ticks``; these rules change only ``computed_cost_ticks``.

Images: a model whose listing has ``pricing[]`` tiers is priced by the request's quality x
resolution (``image_tier``; the images dialect reads them, defaulting to `IMAGE_DEFAULTS`); a
pair with no tier falls back to ``image_price``, and without one the call is unpriced.

Products priced by the unit, not by tokens (text-to-speech per character, speech-to-text and
realtime voice per second of audio, video per second): `catalog_cost`, from the price catalog
(`daemon.pricing.catalog`), when the usage names its ``catalog_rate``.

Sources: /work/shared/xai-api.md, "Units", "Listings" (long context "at or above" the
threshold), "Chat completions" and "Responses" (what the usage counts hold) and "Pricing rules
beyond the listing"; the tool fees and tier multipliers are the catalog's (each entry names its
source and date), per call or per item fetched, as in force when the call was made.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final

from daemon.pricing.catalog import ONE, Catalog, default_catalog
from daemon.pricing.model import ModelPrice
from daemon.record import Usage
from daemon.units import parse_amount

#: The resolution a video request without one gets (xAI's documented default [3p]; xai-api.md
#: "Video" names the values, not the default).
VIDEO_DEFAULT_RESOLUTION: Final = "480p"
#: The resolution of a video whose request is not known (a batch line's result, whose line the
#: daemon never saw; a poll whose POST this ledger never saw): ``catalog_rate``
#: ``video:unknown``, which `catalog_cost` refuses to price (no computed cost, never a guess).
VIDEO_UNKNOWN_RESOLUTION: Final = "unknown"

#: The ``endpoint`` of a Batch API result row: its computed cost takes the catalog's batch
#: discount (`Catalog.batch_multiplier`), the reported one is what xAI says (issue 11).
BATCH_RESULT_ENDPOINT: Final = "batches.result"

#: The image tier a request without ``quality``/``resolution`` gets: ``medium`` quality (the
#: price tier grok-imagine-image-2.0 uses by default [3p]) at ``1k`` (the smallest resolution,
#: documented as the default [3p]); xai-api.md "Images" names the values, not the defaults.
IMAGE_DEFAULTS: Final = ("medium", "1k")


def exact_multiplier(value: float) -> Fraction | None:
    """The exact fraction of a configured decimal multiplier (1.1 → 11/10); None for 1.

    Read from the shortest decimal that gives the float (``repr``), so 1.1 is 11/10, not the
    binary float's 2476979795053773/2251799813685248.
    """
    exact = Fraction(repr(float(value)))
    return None if exact == 1 else exact


class UnpricedError(LookupError):
    """A usage has a nonzero quantity for which the model has no price."""

    def __init__(self, model: str, price_field: str) -> None:
        super().__init__(f"model {model!r} has no {price_field} price")
        self.model = model
        self.field = price_field


def _cache_write_ticks(write_5m: int, write_1h: int, price: ModelPrice, p_in: int | None) -> int:
    """Prompt-cache writes: the override's prices, else Anthropic's 1.25x (5-minute) and 2x
    (1-hour) the input price in force, the 1.25x part rounded to the nearest tick."""
    total = 0
    if write_5m:
        if price.cache_write is not None:
            total += write_5m * price.cache_write
        elif p_in is None:
            raise UnpricedError(price.model, "cache_write")
        else:
            total += (write_5m * p_in * 5 + 2) // 4
    if write_1h:
        if price.cache_write_1h is not None:
            total += write_1h * price.cache_write_1h
        elif p_in is None:
            raise UnpricedError(price.model, "cache_write_1h")
        else:
            total += write_1h * p_in * 2
    return total


def _image_price(price: ModelPrice, image_tier: tuple[str | None, str | None] | None) -> int | None:
    """Ticks per image: the listed tier for the request's (quality, resolution), a missing half
    (or quality ``auto``) taken from `IMAGE_DEFAULTS`; else ``image_price`` (None when neither
    exists)."""
    if price.image_tiers:
        quality, resolution = image_tier or (None, None)
        if quality in (None, "auto"):
            quality = IMAGE_DEFAULTS[0]
        resolution = resolution or IMAGE_DEFAULTS[1]
        for tier_quality, tier_resolution, ticks in price.image_tiers:
            if tier_quality == quality and tier_resolution == resolution:
                return ticks
    return price.image


def compute_cost(
    usage: Usage,
    price: ModelPrice,
    service_tier: str | None = None,
    multiplier: Fraction | None = None,
    image_tier: tuple[str | None, str | None] | None = None,
    at: float | None = None,
    catalog: Catalog | None = None,
) -> int:
    """The cost of one call in ticks (see the module docstring for the formula and rounding).

    Counts are clamped: negative counts count as 0, image-input tokens as at most the input and
    cached tokens as at most the rest (xAI does not say whether cached tokens can be image
    tokens; this order keeps "caching never costs more" true), so the result is never negative
    and no token is billed twice. A cached token without a cached price costs the input price;
    an image-input token without an image price costs the input price. `UnpricedError` when a
    nonzero quantity has no price at all (never a silent zero). ``service_tier`` is the
    response's (its catalog ``tier`` multiplier); ``multiplier`` the upstream's (None: times 1);
    ``image_tier`` the request's (quality, resolution), lower case (a None half:
    `IMAGE_DEFAULTS`). ``at`` is when the call was made (epoch seconds; None: now): tool fees and
    tier multipliers are the ``catalog``'s in force then (None: the shipped `default_catalog`,
    without overrides).
    """
    if catalog is None:
        catalog = default_catalog()
    inp = max(usage.input_tokens, 0)
    image_in = min(max(usage.image_input_tokens, 0), inp)
    cached = min(max(usage.cached_input_tokens, 0), inp - image_in)
    write = min(max(usage.cache_creation_input_tokens, 0), inp - image_in - cached)
    write_1h = min(max(usage.cache_creation_1h_input_tokens, 0), write)
    text = inp - cached - image_in - write
    out = max(usage.output_tokens, 0)

    p_in, p_cached, p_out = price.input, price.cached_input, price.output
    threshold = price.long_context_threshold
    if threshold and inp >= threshold:
        # At or above the listed threshold every component takes its long-context price when
        # one is listed and nonzero (0 = "use the normal price", xai-api.md "Listings").
        p_in = price.input_long or p_in
        p_cached = price.cached_input_long or p_cached
        p_out = price.output_long or p_out
    if p_cached is None:
        p_cached = p_in
    p_image_in = price.image_input if price.image_input is not None else p_in

    tokens = 0
    for count, unit, name in (
        (text, p_in, "input"),
        (cached, p_cached, "cached_input"),
        (image_in, p_image_in, "image_input"),
        (out, p_out, "output"),
    ):
        if count:
            if unit is None:
                raise UnpricedError(price.model, name)
            tokens += count * unit
    if write:
        tokens += _cache_write_ticks(write - write_1h, write_1h, price, p_in)
    tier = catalog.tier_multiplier(service_tier, at) if service_tier is not None else ONE
    if tier is not ONE or multiplier is not None:  # exact, rounded down once: see the docstring
        factor = tier if multiplier is None else tier * multiplier
        tokens = tokens * factor.numerator // factor.denominator
    total = tokens
    images = max(usage.images, 0)
    for count, unit, name in (
        (max(usage.sources, 0), price.search, "search"),
        (images, _image_price(price, image_tier) if images else None, "image"),
    ):
        if count:
            if unit is None:
                raise UnpricedError(price.model, name)
            total += count * unit
    if usage.server_tool_calls:
        total += _tool_fees(usage, catalog, at)
    return total


def _tool_fees(usage: Usage, catalog: Catalog, at: float | None) -> int:
    """Server-side tool fees: each kind's quantity times its catalog fee in force at ``at``."""
    return sum(
        calls * catalog.tool_fee(tool, at)
        for tool, calls in usage.server_tool_calls.items()
        if calls > 0
    )


def _exact(quantity: float | int) -> Fraction:
    """A non-negative quantity (seconds, a count) as an exact fraction of its shortest decimal
    (3.52 s is 352/100, not the binary float); a negative or odd one counts as 0."""
    amount = parse_amount(quantity)
    return Fraction(amount) if amount is not None else Fraction(0)


def catalog_cost(
    usage: Usage, model: str | None, catalog: Catalog | None = None, at: float | None = None
) -> int:
    """The cost in ticks of a usage priced by the catalog, not a listing (``usage.catalog_rate``
    set: see `daemon.record.Usage`), rounded down once to a whole tick.

    By rate (``kind[:variant]``): ``tts``: ``characters`` x the TTS price per character;
    ``stt:rest`` / ``stt:streaming``: ``audio_seconds`` at the per-hour price of that mode;
    ``realtime``: ``audio_seconds`` at the per-minute price; ``video:RESOLUTION``:
    ``video_seconds`` at ``model``'s per-second price for that resolution (none given:
    `VIDEO_DEFAULT_RESOLUTION`; `VIDEO_UNKNOWN_RESOLUTION`: unpriced), plus
    ``video_image_inputs`` and ``video_input_seconds`` at their
    prices. Server-side tool fees are added as for tokens; token counts are recorded but not
    billed here (these products bill by the unit, xai-api.md "Voice" and "Video"). No
    multiplier applies (they are token multipliers). Prices are those in force at ``at``
    (None: the latest). `UnpricedError` when a nonzero quantity, or the rate itself, has no
    price in the catalog (never a silent zero).
    """
    if catalog is None:
        catalog = default_catalog()
    rate = usage.catalog_rate or ""
    kind, _, variant = rate.partition(":")
    label = model or rate or "?"
    if kind == "tts":
        parts: list[tuple[float | int, str, tuple[str | None, ...]]] = [
            (usage.characters, "tts", ())
        ]
    elif kind == "stt":
        parts = [(usage.audio_seconds, "stt", (variant,))]
    elif kind == "realtime":
        parts = [(usage.audio_seconds, "realtime", ())]
    elif kind == "video":
        if variant == VIDEO_UNKNOWN_RESOLUTION and usage.video_seconds:
            raise UnpricedError(label, "video resolution (its request is unknown)")
        parts = [
            (usage.video_seconds, "video", (model, variant or VIDEO_DEFAULT_RESOLUTION)),
            (usage.video_image_inputs, "video_image_input", (model,)),
            (usage.video_input_seconds, "video_input", (model,)),
        ]
    else:
        raise UnpricedError(label, f"catalog rate {rate!r}")
    total = Fraction(0)
    for quantity, price_kind, name in parts:
        amount = _exact(quantity)
        if not amount:
            continue
        entry = catalog.price(price_kind, *name, at=at)
        if entry is None or entry.ticks is None:
            raise UnpricedError(label, ":".join((price_kind, *(n or "?" for n in name))))
        total += entry.cost(amount)
    if usage.server_tool_calls:
        total += _tool_fees(usage, catalog, at)
    return int(total)  # non-negative: int() rounds down
