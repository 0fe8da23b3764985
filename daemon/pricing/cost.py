"""The cost of one call: one `Usage` at one `ModelPrice` → integer ticks (pure, no I/O).

The formula, checked exactly against real bills (tests/pricing/test_real_bills.py)::

    (input - cached - image_input)·P_in + cached·P_cached + image_input·P_image_in
    + output·P_out + sources·P_search + Σ tool units·fee + images·P_image

``output`` already includes reasoning; cached and image-input tokens are parts of ``input``
(xAI bills "prompt text, audio and image tokens" at the prompt price, and its chat usage reports
``text_tokens`` = ``prompt_tokens`` when no image is sent), so each input token is billed once.
Long context: when ``input >= long_context_threshold`` and the listing has long-context prices,
*all* tokens use them. The priority service tier is **not priced**: xAI publishes no multiplier,
so a priority call's computed cost is the standard one (its reported cost, when present, is the
truth and wins anyway).

Sources: /work/shared/xai-api.md, "Units", "Listings" (long context "at or above" the
threshold), "Chat completions" and "Responses" (what the usage counts hold) and "Pricing rules
beyond the listing"; the tool fees are xAI's published prices (`TOOL_FEES_TICKS`), per call or
per item fetched, as in force when the call was made (`tool_fees_at`).
"""

from __future__ import annotations

from collections.abc import Mapping
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


def compute_cost(
    usage: Usage, price: ModelPrice, service_tier: str | None = None, at: float | None = None
) -> int:
    """The cost of one call in ticks (see the module docstring for the formula).

    Counts are clamped: negative counts count as 0, image-input tokens as at most the input and
    cached tokens as at most the rest (xAI does not say whether cached tokens can be image
    tokens; this order keeps "caching never costs more" true), so the result is never negative
    and no token is billed twice. A cached token without a cached price costs the input price;
    an image-input token without an image price costs the input price. `UnpricedError` when a
    nonzero quantity has no price at all (never a silent zero). ``service_tier`` is accepted but
    not priced: xAI publishes no priority multiplier. ``at`` is when the call was made (epoch
    seconds; None: now): tool fees are those in force then (`tool_fees_at`).
    """
    del service_tier  # priority: not priced (no published multiplier); see the module docstring
    inp = max(usage.input_tokens, 0)
    image_in = min(max(usage.image_input_tokens, 0), inp)
    cached = min(max(usage.cached_input_tokens, 0), inp - image_in)
    text = inp - cached - image_in
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
    if usage.server_tool_calls:
        fees = tool_fees_at(at)
        for tool, calls in usage.server_tool_calls.items():
            if calls > 0:
                total += calls * _tool_fee(fees, tool)
    return total
