"""The model catalog: the listings the simulator serves and the bill it derives from them.

An oracle, on purpose independent of `daemon.pricing`: it prices usage with its own reading of
xai-api.md ("Listings", "Pricing rules beyond the listing"), so tests that compare the relay's
cost with ``price_ticks`` compare two implementations, not one with itself. Prices are integer
ticks (1e-10 USD) per token, per image or per tool call, as xAI lists them.

It holds the default ``/v1/language-models`` and ``/v1/image-generation-models`` entries, how a
requested name resolves to a listed id (aliases, ``grok-3-mini-high``/``-low``), which models
reason, and the fees of server-side tools.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from daemon.simulator import billing

if TYPE_CHECKING:
    from daemon.simulator.state import SimulatorState


_EFFORTS = ("low", "high")
_EFFORT_VARIANT_MODELS = frozenset({"grok-3-mini"})  # reasoning_effort shows in the model id
TOOL_FEES: dict[str, tuple[str, int]] = {  # tool type -> (usage detail key, ticks per call)
    "web_search": ("web_search_calls", 50_000_000),
    "x_search": ("x_search_calls", 50_000_000),
    "code_interpreter": ("code_interpreter_calls", 50_000_000),
    "code_execution": ("code_interpreter_calls", 50_000_000),
    "file_search": ("file_search_calls", 25_000_000),
    "collections_search": ("file_search_calls", 25_000_000),
    "mcp": ("mcp_calls", 0),
    "document_search": ("document_search_calls", 100_000_000),
    "attachment_search": ("document_search_calls", 100_000_000),
}
TOOL_DETAIL_KEYS = (
    "web_search_calls",
    "x_search_calls",
    "code_interpreter_calls",
    "file_search_calls",
    "mcp_calls",
    "document_search_calls",
)


def default_fingerprints() -> dict[str, str]:
    """The system_fingerprint each listed model reports, keyed by its id."""
    return {
        "grok-4-0709": "fp_8f1c2d3e4a",
        "grok-4-fast-reasoning": "fp_3b7e9a1c05",
        "grok-4-fast-non-reasoning": "fp_c41d7f2e90",
        "grok-4.20-0309-reasoning": "fp_5e2a9b4d17",
        "grok-4.20-0309-non-reasoning": "fp_5e2a9b4d18",
        "grok-4.20-0309-multi-agent": "fp_5e2a9b4d19",
        "grok-4.7": "fp_47c0ffee01",
        "grok-4.6": "fp_46beadfe02",
        "grok-4.5": "fp_45d1a2b303",
        "grok-4.3": "fp_43e4f5a604",
        "grok-build-0.1": "fp_b01d0c0de5",
        "grok-code-fast-1": "fp_a09c6e3f28",
        "grok-3": "fp_1d4f8b6a93",
        "grok-3-mini": "fp_6b0e2c7d41",
        "grok-2-vision-1212": "fp_9e3a1f5c62",
        "grok-imagine-image": "fp_2c8d4e6f0a",
        "grok-imagine-image-2.0": "fp_2d0e5f7a1b",
        "grok-2-image-1212": "fp_7a5b3c1d9e",
    }


def _language_model(
    model_id: str,
    created: int,
    aliases: list[str],
    prices: tuple[int, int, int, int],
    *,
    image_input: bool = False,
    context_length: int | None = None,
    long_context: tuple[int, int, int, int] | None = None,
    search_price: int = 250_000_000,
) -> dict[str, Any]:
    """One LanguageModel object, field for field as xAI lists it (prices in 1e-10 USD/token)."""
    prompt, cached, image, completion = prices
    model: dict[str, Any] = {
        "id": model_id,
        "fingerprint": default_fingerprints()[model_id],
        "created": created,
        "object": "model",
        "owned_by": "xai",
        "version": "1.0",
        "input_modalities": ["text", "image"] if image_input else ["text"],
        "output_modalities": ["text"],
        "prompt_text_token_price": prompt,
        "cached_prompt_text_token_price": cached,
        "prompt_image_token_price": image,
        "completion_text_token_price": completion,
        "search_price": search_price,
        "aliases": aliases,
    }
    if context_length is not None:
        model["context_length"] = context_length
    if long_context is not None:
        threshold, lc_prompt, lc_cached, lc_completion = long_context
        model["long_context_threshold"] = threshold
        model["prompt_text_token_price_long_context"] = lc_prompt
        model["cached_prompt_text_token_price_long_context"] = lc_cached
        model["completion_text_token_price_long_context"] = lc_completion
    return model


def _current_model(
    model_id: str, created: int, aliases: list[str], prices: tuple[int, int, int]
) -> dict[str, Any]:
    """A 2026 text model (xai-api.md "Models (late 2026)"): prices in, cached, out (ticks per
    token), image tokens at the input price, every price 2x at or above 200k prompt tokens,
    ``search_price`` 0 (tool fees are not in the listing)."""
    prompt, cached, completion = prices
    return _language_model(
        model_id, created, aliases, (prompt, cached, prompt, completion), image_input=True,
        context_length=2_000_000, search_price=0,
        long_context=(LONG_CONTEXT_THRESHOLD, 2 * prompt, 2 * cached, 2 * completion),
    )  # fmt: skip


LONG_CONTEXT_THRESHOLD = 200_000  # prompt tokens, "at or above", for every 2026 model


def current_listing() -> list[dict[str, Any]]:
    """The 2026 text models, as xai-api.md "Models (late 2026)" prices them ($ per 1M tokens
    in / cached / out = ticks per token / 10,000)."""
    return [
        _current_model("grok-4.7", 1788220800, ["grok-4.7-latest"], (20000, 5000, 60000)),
        _current_model("grok-4.6", 1783036800, ["grok-4.6-latest"], (20000, 5000, 60000)),
        _current_model("grok-4.5", 1777593600, ["grok-4.5-latest"], (20000, 3000, 60000)),
        _current_model("grok-4.3", 1775001600, ["grok-4.3-latest"], (12500, 2000, 25000)),
        _current_model(
            "grok-4.20-0309-reasoning", 1773014400, ["grok-4.20", "grok-4.20-reasoning"],
            (12500, 2000, 25000),
        ),
        _current_model(
            "grok-4.20-0309-non-reasoning", 1773014400, ["grok-4.20-non-reasoning"],
            (12500, 2000, 25000),
        ),
        _current_model(
            "grok-4.20-0309-multi-agent", 1773014400, ["grok-4.20-multi-agent"],
            (12500, 2000, 25000),
        ),
        _current_model("grok-build-0.1", 1771200000, ["grok-build"], (10000, 2000, 20000)),
    ]  # fmt: skip


def legacy_listing() -> list[dict[str, Any]]:
    """The models xAI retired on 2026-05-15 (and grok-2-vision), as the 2025 listings priced
    them: still listed and served so old traffic (and the tests written for it) stays valid."""
    return [
        _language_model(
            "grok-4-0709", 1752019200, ["grok-4", "grok-4-latest"], (30000, 7500, 30000, 150000),
            image_input=True, context_length=256000, long_context=(128000, 60000, 15000, 300000),
        ),
        _language_model(
            "grok-4-fast-reasoning", 1758240000, ["grok-4-fast", "grok-4-fast-reasoning-latest"],
            (2000, 500, 2000, 5000), image_input=True, context_length=2000000,
            long_context=(128000, 4000, 1000, 10000),
        ),
        _language_model(
            "grok-4-fast-non-reasoning", 1758240000, ["grok-4-fast-non-reasoning-latest"],
            (2000, 500, 2000, 5000), image_input=True, context_length=2000000,
            long_context=(128000, 4000, 1000, 10000),
        ),
        _language_model(
            "grok-code-fast-1", 1756166400, ["grok-code-fast", "grok-code-fast-1-0825"],
            (2000, 200, 0, 15000), context_length=256000,
        ),
        _language_model(
            "grok-3", 1743724800, ["grok-3-latest", "grok-3-beta"], (30000, 7500, 0, 150000),
            context_length=131072,
        ),
        _language_model(
            "grok-3-mini", 1743724800, ["grok-3-mini-latest", "grok-3-mini-beta"],
            (3000, 750, 0, 5000), context_length=131072,
        ),
        _language_model(
            "grok-2-vision-1212", 1733961600, ["grok-2-vision", "grok-2-vision-latest"],
            (20000, 20000, 20000, 100000), image_input=True, context_length=32768,
        ),
    ]  # fmt: skip


def default_listing() -> list[dict[str, Any]]:
    """The `/v1/language-models` listing served by default: the legacy models first (so
    ``state.listing[0]`` stays what older tests expect), then the 2026 ones. A fresh copy each
    call, so tests may edit it."""
    return legacy_listing() + current_listing()


IMAGE_2_TIERS: dict[str, dict[str, int]] = {  # quality -> resolution -> ticks per image
    "low": {"1k": 300_000_000, "1.5k": 350_000_000, "2k": 400_000_000},
    "medium": {"1k": 400_000_000, "1.5k": 500_000_000, "2k": 600_000_000},
    "high": {"1k": 600_000_000, "1.5k": 700_000_000, "2k": 800_000_000},
}  # our own figures inside xai-api.md's "about $0.03-$0.08"
IMAGE_DEFAULT_QUALITY = "medium"  # what ``quality: "auto"`` (or none) bills as [guess]
IMAGE_DEFAULT_RESOLUTION = "1k"


def image_price_ticks(entry: Mapping[str, Any], quality: Any, resolution: Any) -> int | None:
    """Ticks per image for an image-model entry: its ``pricing[]`` tier for quality x
    resolution (``auto``/absent quality = `IMAGE_DEFAULT_QUALITY`, absent resolution =
    `IMAGE_DEFAULT_RESOLUTION`), else its flat ``image_price``; None when neither prices the
    request (the simulator then answers 422)."""
    tiers = entry.get("pricing")
    if isinstance(tiers, list) and tiers:
        want_quality = quality if quality not in (None, "auto") else IMAGE_DEFAULT_QUALITY
        want_resolution = resolution if resolution is not None else IMAGE_DEFAULT_RESOLUTION
        for tier in tiers:
            if tier.get("quality") == want_quality and tier.get("resolution") == want_resolution:
                return int(tier["price_per_image"])
        return None
    price = entry.get("image_price")
    return int(price) if isinstance(price, int) else 0


def default_image_models() -> list[dict[str, Any]]:
    """A realistic `/v1/image-generation-models` listing (image_price in ticks per image)."""
    fingerprints = default_fingerprints()
    return [
        {
            "id": "grok-imagine-image",
            "fingerprint": fingerprints["grok-imagine-image"],
            "max_prompt_length": 8000,
            "created": 1759276800,
            "object": "model",
            "owned_by": "xai",
            "version": "1.0",
            "input_modalities": ["text", "image"],
            "output_modalities": ["image"],
            "image_price": 200_000_000,
            "aliases": ["grok-imagine-image-latest"],
        },
        {
            "id": "grok-imagine-image-2.0",
            "fingerprint": fingerprints["grok-imagine-image-2.0"],
            "max_prompt_length": 8000,
            "created": 1780272000,
            "object": "model",
            "owned_by": "xai",
            "version": "2.0",
            "input_modalities": ["text", "image"],
            "output_modalities": ["image"],
            "pricing": [
                {"quality": quality, "resolution": resolution, "price_per_image": ticks}
                for quality, row in IMAGE_2_TIERS.items()
                for resolution, ticks in row.items()
            ],
            "aliases": ["grok-imagine-image-2", "grok-imagine-image-2.0-latest"],
        },
        {
            "id": "grok-2-image-1212",
            "fingerprint": fingerprints["grok-2-image-1212"],
            "max_prompt_length": 1024,
            "created": 1733961600,
            "object": "model",
            "owned_by": "xai",
            "version": "1.0",
            "input_modalities": ["text"],
            "output_modalities": ["image"],
            "image_price": 700_000_000,
            "aliases": ["grok-2-image", "grok-2-image-latest"],
        },
    ]


VIDEO_PRICES: dict[str, dict[str, int]] = {  # model -> resolution -> ticks per second of video
    "grok-imagine-video": {"480p": 500_000_000, "720p": 700_000_000},
    "grok-imagine-video-1.5": {
        "480p": 800_000_000,
        "720p": 1_400_000_000,
        "1080p": 2_500_000_000,
    },
}  # xai-api.md "Models (late 2026)": in no listing, so the catalog holds them
VIDEO_DEFAULT_MODEL = "grok-imagine-video"
VIDEO_DEFAULT_RESOLUTION = "480p"
VIDEO_DEFAULT_SECONDS = 8  # xai-api.md "Video": duration 1-15, default 8


def video_price_ticks(model: str, resolution: str, seconds: int) -> int | None:
    """Ticks for `seconds` of video from `model` at `resolution`; None when not offered."""
    per_second = VIDEO_PRICES.get(model, {}).get(resolution)
    return None if per_second is None else per_second * seconds


def find_model(models: Sequence[Mapping[str, Any]], name: str) -> dict[str, Any] | None:
    """The listing entry named `name`, by id first, then by alias (a copy); None if unlisted."""
    for model in models:
        if model.get("id") == name:
            return dict(model)
    for model in models:
        if name in (model.get("aliases") or ()):
            return dict(model)
    return None


def resolve_model(
    state: SimulatorState, name: str, effort: str | None = None
) -> tuple[str, dict[str, Any] | None]:
    """The id the response reports for a requested name, and the listing entry that prices it.

    ``state.redirects`` first (a retired name answered by its successor, as xAI does, e.g.
    grok-code-fast-1 -> grok-build-0.1; empty by default: a legacy name answers with itself);
    aliases resolve to their model's id; ``grok-3-mini`` with a reasoning effort becomes
    ``grok-3-mini-high``/``-low`` (priced as grok-3-mini). Unknown names come back as sent.
    """
    name = state.redirects.get(name, name)
    entry = find_model(state.listing, name)
    if entry is None:
        base, _, suffix = name.rpartition("-")
        if suffix in _EFFORTS and base:
            base_entry = find_model(state.listing, base)
            if base_entry is not None and base_entry["id"] in _EFFORT_VARIANT_MODELS:
                return f"{base_entry['id']}-{suffix}", base_entry
        return name, None
    resolved = str(entry["id"])
    if effort in _EFFORTS and resolved in _EFFORT_VARIANT_MODELS:
        resolved = f"{resolved}-{effort}"
    return resolved, entry


def is_reasoning(model_id: str) -> bool:
    """Whether a model id thinks (and so bills reasoning tokens) before it answers."""
    if "non-reasoning" in model_id:
        return False
    return model_id.startswith(
        ("grok-4", "grok-3-mini", "grok-code", "grok-build")
    ) or model_id.endswith("-reasoning")


def fingerprint_of(state: SimulatorState, resolved: str, entry: Mapping[str, Any] | None) -> str:
    """The system_fingerprint in force for a model: the state's, else a stable made-up one."""
    found = state.fingerprints.get(resolved)
    if found is None and entry is not None:
        found = state.fingerprints.get(str(entry["id"]))
    return found or "fp_" + hashlib.sha256(resolved.encode()).hexdigest()[:10]


def _price(entry: Mapping[str, Any], key: str, long_context: bool, default: int = 0) -> int:
    long_price = entry.get(f"{key}_long_context")
    if long_context and isinstance(long_price, int) and long_price > 0:  # 0: the normal price
        return long_price
    value = entry.get(key)
    return int(value) if isinstance(value, int) else default


def _detail(usage: Mapping[str, Any], section: str, key: str) -> int:
    part = usage.get(section)
    value = part.get(key) if isinstance(part, Mapping) else None
    return int(value) if isinstance(value, int) else 0


TIER_MULTIPLIERS = {"priority": 2, "fast": 2}  # xai-api.md "Pricing rules beyond the listing"


def service_tier_of(requested: Any) -> str:
    """The ``service_tier`` an answer reports for the one a request asked: ``priority`` and
    ``fast`` are granted; anything else (absent, ``auto``, ``default``, ...) is ``default``."""
    return requested if isinstance(requested, str) and requested in TIER_MULTIPLIERS else "default"


def price_ticks(
    state: SimulatorState, model: str, usage: Mapping[str, Any], service_tier: str = "default"
) -> int:
    """The cost in ticks (1e-10 USD) that the listing implies for a usage dict: the sum of
    `price_units`."""
    return sum(price_units(state, model, usage, service_tier).values())


def price_units(
    state: SimulatorState, model: str, usage: Mapping[str, Any], service_tier: str = "default"
) -> dict[str, int]:
    """The listing cost in ticks (1e-10 USD) of a usage dict, per billing unit type
    (`daemon.simulator.billing`'s names).

    The xai-api.md formula: ((prompt - cached - image) * P_in + cached * P_cached
    + image * P_image + (completion + reasoning) * P_out) * tier + sources * search_price, with
    the *_long_context prices for every token once prompt >= long_context_threshold (0 or
    absent: no tier; a long-context price of 0: the normal price), and tier 2 for
    ``priority``/``fast`` (`TIER_MULTIPLIERS`, after the cache discount). Image tokens
    are part of prompt_tokens, so each prompt token is billed once (as `daemon.pricing` does);
    without the image price listed they cost P_in; without a cached price, P_in.
    Chat usage (reasoning outside completion) and Responses usage (output includes reasoning)
    are both understood. Unknown models cost 0. Tool fees are separate (`tool_fee_ticks`).
    """
    entry = resolve_model(state, model)[1]
    if entry is None:
        return {}
    if "prompt_tokens" in usage:
        prompt = int(usage.get("prompt_tokens") or 0)
        cached = _detail(usage, "prompt_tokens_details", "cached_tokens")
        images = _detail(usage, "prompt_tokens_details", "image_tokens")
        output = int(usage.get("completion_tokens") or 0)
        output += _detail(usage, "completion_tokens_details", "reasoning_tokens")
    else:
        prompt = int(usage.get("input_tokens") or 0)
        cached = _detail(usage, "input_tokens_details", "cached_tokens")
        if "cache_read_input_tokens" in usage:
            cached = int(usage.get("cache_read_input_tokens") or 0)
        images = 0
        output = int(usage.get("output_tokens") or 0)
    sources = int(usage.get("num_sources_used") or 0)
    threshold = entry.get("long_context_threshold")
    long_context = isinstance(threshold, int) and 0 < threshold <= prompt
    p_in = _price(entry, "prompt_text_token_price", long_context)
    p_cached = _price(entry, "cached_prompt_text_token_price", long_context, default=p_in)
    p_out = _price(entry, "completion_text_token_price", long_context)
    p_image = _price(entry, "prompt_image_token_price", long_context, default=p_in)
    search = _price(entry, "search_price", False)
    tier = TIER_MULTIPLIERS.get(service_tier, 1)
    return {
        billing.PROMPT_TEXT: (prompt - cached - images) * p_in * tier,
        billing.CACHED_PROMPT_TEXT: cached * p_cached * tier,
        billing.PROMPT_IMAGE: images * p_image * tier,
        billing.COMPLETION_TEXT: output * p_out * tier,
        billing.SEARCH_SOURCES: sources * search,
    }


def tool_fee_ticks(details: Mapping[str, int]) -> int:
    """Server-side tool fees for `server_side_tool_usage_details` ($5 per 1000 web searches...)."""
    per_call = {key: fee for key, fee in TOOL_FEES.values()}
    return sum(int(count) * per_call.get(key, 0) for key, count in details.items())


def billed(state: SimulatorState, ticks: int) -> int:
    """What `usage.cost_in_usd_ticks` reports for a listing cost: scaled by `billing_ratio`."""
    num, den = state.billing_ratio
    return ticks * num // den


def charge(state: SimulatorState, units: Mapping[str, int]) -> int:
    """Bill the answer being served: its listing cost per unit type → the billed total
    (`billed`), noted for the billing book, spread over the units
    (`daemon.simulator.billing.note`). Booked whether or not the answer reports it."""
    total = billed(state, sum(units.values()))
    billing.note(billing.spread(total, units))
    return total


def cost_fields(state: SimulatorState, units: Mapping[str, int]) -> dict[str, int]:
    """The cost field(s) a usage object carries for a listing cost of ``sum(units)`` (ticks
    per unit type: the answer is billed, `charge`).

    ``{"cost_in_usd_ticks": billed}`` by default; ``{"cost_in_nano_usd": billed // 10}`` (1e-9
    USD, floored) when ``state.cost_unit == "nano_usd"``; nothing when ``state.report_cost`` is
    off or ``state.legacy_2025_shapes`` is on (2025 usage had no cost), xai-api.md "Units".
    """
    cost = charge(state, units)
    if not state.report_cost or state.legacy_2025_shapes:
        return {}
    if state.cost_unit == "nano_usd":
        return {"cost_in_nano_usd": cost // 10}
    return {"cost_in_usd_ticks": cost}
