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
the cached price first): ``tier`` is 2 when the *response's* ``service_tier`` is ``priority`` or
``fast`` (`TIER_MULTIPLIERS`), else 1; ``multiplier`` is the upstream's ``price_multiplier``
(1.1 for the US regional endpoint), an exact `Fraction` of the decimal configured. The product
is **rounded down to a whole tick** once per call (integer arithmetic: ``tokens · tier ·
numerator // denominator``), so the computed cost is never above the exact product and at most
one tick below it (a 5-minute cache write's 1.25x is itself rounded to the nearest tick
first). Per-source, per-image and tool fees are not multiplied (xai-api.md prices only tokens
by tier and region). The reported ``cost_in_usd_ticks``, when present, is the truth and
stays ``cost_ticks``; these rules change only ``computed_cost_ticks``.

Images: a model whose listing has ``pricing[]`` tiers is priced by the request's quality x
resolution (``image_tier``; the images dialect reads them, defaulting to `IMAGE_DEFAULTS`); a
pair with no tier falls back to ``image_price``, and without one the call is unpriced.

Sources: /work/shared/xai-api.md, "Units", "Listings" (long context "at or above" the
threshold), "Chat completions" and "Responses" (what the usage counts hold) and "Pricing rules
beyond the listing"; the tool fees are xAI's published prices (`TOOL_FEES_TICKS`), per call or
per item fetched, as in force when the call was made (`tool_fees_at`).
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from types import MappingProxyType
from typing import Final

from daemon.pricing.model import ModelPrice
from daemon.record import Usage

#: When X search's fee changed (2026-09-21, 00:00 UTC; the hour is our guess, xAI names the
#: day): from $5 per 1,000 calls to $5 per 1,000 posts and $10 per 1,000 profiles fetched.
X_SEARCH_REPRICED_AT: Final[float] = 1789948800.0

#: Server-side tool fees in force since `X_SEARCH_REPRICED_AT`, in ticks per unit, keyed like
#: xAI's ``server_side_tool_usage_details`` without ``_calls`` (xai-api.md, "Tool fees"). Web
#: search and code execution: $5 per 1,000 calls; collections search (``file_search``): $2.50
#: per 1,000; attachment search (``document_search``): $10 per 1,000; X search: $5 per 1,000
#: posts fetched (``x_posts_fetched``) and $10 per 1,000 profiles fetched (``x_users_fetched``),
#: nothing per call. Remote MCP, view_image, view_x_video and image search are token-only as far
#: as known: 0. A kind not listed here (``unknown`` included) adds nothing (the reported cost,
#: when present, still includes it).
TOOL_FEES_TICKS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "web_search": 50_000_000,
        "x_search": 0,
        "x_posts_fetched": 50_000_000,
        "x_users_fetched": 100_000_000,
        "code_interpreter": 50_000_000,
        "code_execution": 50_000_000,
        "file_search": 25_000_000,
        "collections_search": 25_000_000,
        "document_search": 100_000_000,
        "attachment_search": 100_000_000,
        "mcp": 0,
        "view_image": 0,
        "view_x_video": 0,
        "image_search": 0,
    }
)

#: The fees before `X_SEARCH_REPRICED_AT`: X search $5 per 1,000 calls, fetched items free.
TOOL_FEES_TICKS_BEFORE_X_REPRICE: Final[Mapping[str, int]] = MappingProxyType(
    {**TOOL_FEES_TICKS, "x_search": 50_000_000, "x_posts_fetched": 0, "x_users_fetched": 0}
)


def tool_fees_at(at: float | None) -> Mapping[str, int]:
    """The tool fee table in force at ``at`` (epoch seconds; None: the current one)."""
    if at is not None and at < X_SEARCH_REPRICED_AT:
        return TOOL_FEES_TICKS_BEFORE_X_REPRICE
    return TOOL_FEES_TICKS


#: Response ``service_tier`` values that bill token prices x2 (xai-api.md, "Pricing rules beyond
#: the listing"); any other tier (``default``, none) bills x1.
TIER_MULTIPLIERS: Final[Mapping[str, int]] = MappingProxyType({"priority": 2, "fast": 2})

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


def _tool_fee(fees: Mapping[str, int], name: str) -> int:
    fee = fees.get(name)
    if fee is not None:
        return fee
    key = name.strip().lower().removeprefix("server_side_tool_").removesuffix("_calls")
    return fees.get(key, 0)


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
) -> int:
    """The cost of one call in ticks (see the module docstring for the formula and rounding).

    Counts are clamped: negative counts count as 0, image-input tokens as at most the input and
    cached tokens as at most the rest (xAI does not say whether cached tokens can be image
    tokens; this order keeps "caching never costs more" true), so the result is never negative
    and no token is billed twice. A cached token without a cached price costs the input price;
    an image-input token without an image price costs the input price. `UnpricedError` when a
    nonzero quantity has no price at all (never a silent zero). ``service_tier`` is the
    response's (`TIER_MULTIPLIERS`); ``multiplier`` the upstream's (None: times 1); ``image_tier``
    the request's (quality, resolution), lower case (a None half: `IMAGE_DEFAULTS`). ``at`` is
    when the call was made (epoch seconds; None: now): tool fees are those in force then
    (`tool_fees_at`).
    """
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
    if service_tier is not None:
        tokens *= TIER_MULTIPLIERS.get(service_tier.lower(), 1)
    if multiplier is not None:  # exact, rounded down once: see the module docstring
        tokens = tokens * multiplier.numerator // multiplier.denominator
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
        fees = tool_fees_at(at)
        for tool, calls in usage.server_tool_calls.items():
            if calls > 0:
                total += calls * _tool_fee(fees, tool)
    return total
