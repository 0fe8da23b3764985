"""The cost of one call: one `Usage` at one `ModelPrice` → integer ticks (pure, no I/O).

The formula, checked exactly against real bills (tests/pricing/test_real_bills.py)::

    (input - cached - image_input)·P_in + cached·P_cached + image_input·P_image_in
    + output·P_out + sources·P_search + Σ tool calls·fee + images·P_image
    + writes_5m·P_write_5m + writes_1h·P_write_1h      (prompt-cache writes, Anthropic)

with ``input - cached - image_input`` read as also less the cache writes, which are a part of
``input`` too. Cache writes (xai-api.md, "Anthropic-compatible"): a 5-minute write bills 1.25x the
input price, a 1-hour write 2x, unless an override sets ``cache_write``/``cache_write_1h``; a
write count without its split is all 5-minute writes (xAI's always 0).

``output`` already includes reasoning; cached and image-input tokens are parts of ``input``
(xAI bills "prompt text, audio and image tokens" at the prompt price, and its chat usage reports
``text_tokens`` = ``prompt_tokens`` when no image is sent), so each input token is billed once.
Long context: when ``input >= long_context_threshold`` and the listing has long-context prices,
*all* tokens use them. The priority service tier is **not priced**: xAI publishes no multiplier,
so a priority call's computed cost is the standard one (its reported cost, when present, is the
truth and wins anyway).

Sources: /work/shared/xai-api.md, "Units", "Listings" (long context "at or above" the
threshold), "Chat completions" and "Responses" (what the usage counts hold) and "Pricing rules
beyond the listing"; the tool fees are xAI's published per-call prices (`TOOL_FEES_TICKS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from daemon.pricing.model import ModelPrice
from daemon.record import Usage

#: Server-side tool fees in ticks per call, keyed like xAI's ``server_side_tool_usage_details``
#: without ``_calls``. Web/X search and code execution: $5 per 1,000 calls; collections search
#: (``file_search``): $2.50 per 1,000; attachment search (``document_search``): $10 per 1,000.
#: Remote MCP has no published per-call fee (its tokens are billed as tokens): 0. A tool not
#: listed here adds nothing (the reported cost, when present, still includes it).
TOOL_FEES_TICKS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "web_search": 50_000_000,
        "x_search": 50_000_000,
        "code_interpreter": 50_000_000,
        "code_execution": 50_000_000,
        "file_search": 25_000_000,
        "collections_search": 25_000_000,
        "document_search": 100_000_000,
        "attachment_search": 100_000_000,
        "mcp": 0,
    }
)


class UnpricedError(LookupError):
    """A usage has a nonzero quantity for which the model has no price."""

    def __init__(self, model: str, price_field: str) -> None:
        super().__init__(f"model {model!r} has no {price_field} price")
        self.model = model
        self.field = price_field


def _tool_fee(name: str) -> int:
    fee = TOOL_FEES_TICKS.get(name)
    if fee is not None:
        return fee
    key = name.strip().lower().removeprefix("server_side_tool_").removesuffix("_calls")
    return TOOL_FEES_TICKS.get(key, 0)


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


def compute_cost(usage: Usage, price: ModelPrice, service_tier: str | None = None) -> int:
    """The cost of one call in ticks (see the module docstring for the formula).

    Counts are clamped: negative counts count as 0, image-input tokens as at most the input and
    cached tokens as at most the rest (xAI does not say whether cached tokens can be image
    tokens; this order keeps "caching never costs more" true), so the result is never negative
    and no token is billed twice. A cached token without a cached price costs the input price;
    an image-input token without an image price costs the input price. `UnpricedError` when a
    nonzero quantity has no price at all (never a silent zero). ``service_tier`` is accepted but
    not priced: xAI publishes no priority multiplier.
    """
    del service_tier  # priority: not priced (no published multiplier); see the module docstring
    inp = max(usage.input_tokens, 0)
    image_in = min(max(usage.image_input_tokens, 0), inp)
    cached = min(max(usage.cached_input_tokens, 0), inp - image_in)
    write = min(max(usage.cache_creation_input_tokens, 0), inp - image_in - cached)
    write_1h = min(max(usage.cache_creation_1h_input_tokens, 0), write)
    text = inp - cached - image_in - write
    out = max(usage.output_tokens, 0)

    p_in, p_cached, p_out = price.input, price.cached_input, price.output
    threshold = price.long_context_threshold
    if threshold is not None and inp >= threshold and price.has_long_context:
        # Every component takes its long-context price when listed, else keeps its own price.
        p_in = price.input_long if price.input_long is not None else p_in
        p_cached = price.cached_input_long if price.cached_input_long is not None else p_cached
        p_out = price.output_long if price.output_long is not None else p_out
    if p_cached is None:
        p_cached = p_in
    p_image_in = price.image_input if price.image_input is not None else p_in

    total = 0
    for count, unit, name in (
        (text, p_in, "input"),
        (cached, p_cached, "cached_input"),
        (image_in, p_image_in, "image_input"),
        (out, p_out, "output"),
        (max(usage.sources, 0), price.search, "search"),
        (max(usage.images, 0), price.image, "image"),
    ):
        if count:
            if unit is None:
                raise UnpricedError(price.model, name)
            total += count * unit
    if write:
        total += _cache_write_ticks(write - write_1h, write_1h, price, p_in)
    for tool, calls in usage.server_tool_calls.items():
        if calls > 0:
            total += calls * _tool_fee(tool)
    return total
