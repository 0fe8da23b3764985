"""The 2026 catalog: current models and prices, long context from the listing, redirects, the
service tier multiplier, image tiers and `cost_in_nano_usd`, each to the tick by hand.

Prices are xai-api.md "Models (late 2026)" in ticks per token ($ per 1M x 10,000).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from daemon.simulator import Simulator, SimulatorState, price_ticks
from daemon.testing import USER_MESSAGES, cost_by_hand

USER: Any = USER_MESSAGES

CURRENT = {  # id -> (in, cached, out) ticks per token
    "grok-4.7": (20000, 5000, 60000),
    "grok-4.6": (20000, 5000, 60000),
    "grok-4.5": (20000, 3000, 60000),
    "grok-4.3": (12500, 2000, 25000),
    "grok-4.20-0309-reasoning": (12500, 2000, 25000),
    "grok-4.20-0309-non-reasoning": (12500, 2000, 25000),
    "grok-4.20-0309-multi-agent": (12500, 2000, 25000),
    "grok-build-0.1": (10000, 2000, 20000),
}


@pytest.mark.asyncio
async def test_listing_has_the_2026_models_beside_the_legacy_ones(
    http: aiohttp.ClientSession,
) -> None:
    async with http.get("/v1/language-models") as resp:
        models = {m["id"]: m for m in (await resp.json())["models"]}
    for model_id, (p_in, p_cached, p_out) in CURRENT.items():
        m = models[model_id]
        assert (
            m["prompt_text_token_price"],
            m["cached_prompt_text_token_price"],
            m["completion_text_token_price"],
            m["long_context_threshold"],
            m["prompt_text_token_price_long_context"],
            m["cached_prompt_text_token_price_long_context"],
            m["completion_text_token_price_long_context"],
            m["search_price"],
        ) == (p_in, p_cached, p_out, 200_000, 2 * p_in, 2 * p_cached, 2 * p_out, 0)
    legacy = {"grok-3", "grok-3-mini", "grok-4-0709", "grok-4-fast-reasoning", "grok-code-fast-1"}
    assert legacy <= set(models)


@pytest.mark.asyncio
async def test_current_model_long_context_at_or_above_200k(oai: openai.AsyncOpenAI) -> None:
    cases = [(199_999, (20000, 5000, 60000)), (200_000, (40000, 10000, 120000))]
    for prompt, (p_in, p_cached, p_out) in cases:
        reply = await oai.chat.completions.create(
            model="grok-4.7",
            messages=USER,
            extra_headers={"X-Sim-Prompt-Tokens": str(prompt), "X-Sim-Cached-Tokens": "1000"},
        )
        u = reply.usage
        assert u is not None and u.completion_tokens_details and u.prompt_tokens == prompt
        output = u.completion_tokens + (u.completion_tokens_details.reasoning_tokens or 0)
        assert reply.model == "grok-4.7" and reply.service_tier == "default"
        assert u.model_dump()["cost_in_usd_ticks"] == cost_by_hand(
            p_in, p_cached, p_out, prompt, 1000, output
        )


@pytest.mark.asyncio
async def test_aliases_and_redirect_of_a_retired_name(
    oai: openai.AsyncOpenAI, sim: Simulator
) -> None:
    family = await oai.chat.completions.create(model="grok-4.20", messages=USER)
    assert family.model == "grok-4.20-0309-reasoning"
    assert family.system_fingerprint == sim.state.fingerprints["grok-4.20-0309-reasoning"]

    legacy = await oai.chat.completions.create(model="grok-code-fast-1", messages=USER)
    assert legacy.model == "grok-code-fast-1"  # by default a legacy name answers with itself

    sim.state.redirects["grok-code-fast-1"] = "grok-build-0.1"
    moved = await oai.chat.completions.create(
        model="grok-code-fast-1", messages=USER, extra_headers={"X-Sim-Cached-Tokens": "0"}
    )
    u = moved.usage
    assert moved.model == "grok-build-0.1" and u is not None and u.completion_tokens_details
    output = u.completion_tokens + (u.completion_tokens_details.reasoning_tokens or 0)
    assert u.model_dump()["cost_in_usd_ticks"] == cost_by_hand(
        10000, 2000, 20000, u.prompt_tokens, 0, output
    )


@pytest.mark.asyncio
async def test_priority_and_fast_bill_twice_the_tokens(oai: openai.AsyncOpenAI) -> None:
    for tier in ("priority", "fast"):
        reply = await oai.chat.completions.create(
            model="grok-4.5",
            messages=USER,
            extra_body={"service_tier": tier},
            extra_headers={"X-Sim-Prompt-Tokens": "1000", "X-Sim-Cached-Tokens": "400"},
        )
        u = reply.usage
        assert reply.model_dump()["service_tier"] == tier
        assert u is not None and u.completion_tokens_details
        output = u.completion_tokens + (u.completion_tokens_details.reasoning_tokens or 0)
        # cache discount first, then x2: (600 * 20000 + 400 * 3000 + out * 60000) * 2
        assert u.model_dump()["cost_in_usd_ticks"] == 2 * (
            600 * 20000 + 400 * 3000 + output * 60000
        )
    plain = await oai.chat.completions.create(
        model="grok-4.5", messages=USER, extra_body={"service_tier": "auto"}
    )
    assert plain.service_tier == "default"


def test_listing_rules_threshold_zero_and_long_price_zero() -> None:
    state = SimulatorState()
    entry = next(m for m in state.listing if m["id"] == "grok-4.3")
    usage = {"prompt_tokens": 300_000, "completion_tokens": 10}
    assert price_ticks(state, "grok-4.3", usage) == 300_000 * 25000 + 10 * 50000
    entry["completion_text_token_price_long_context"] = 0  # 0: the normal price
    assert price_ticks(state, "grok-4.3", usage) == 300_000 * 25000 + 10 * 25000
    entry["long_context_threshold"] = 0  # 0: no long-context tier at all
    assert price_ticks(state, "grok-4.3", usage) == 300_000 * 12500 + 10 * 25000
    assert price_ticks(state, "grok-4.3", usage, "priority") == 2 * (300_000 * 12500 + 10 * 25000)


@pytest.mark.asyncio
async def test_image_tiers_by_quality_and_resolution(
    oai: openai.AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    cases = [  # (quality, resolution, ticks per image)
        ("low", "1.5k", 350_000_000),
        ("medium", "2k", 600_000_000),
        ("auto", "1k", 400_000_000),  # auto bills as medium
        (None, None, 400_000_000),  # default: auto at 1k
    ]
    for quality, resolution, ticks in cases:
        body = {k: v for k, v in (("quality", quality), ("resolution", resolution)) if v}
        raw = await oai.images.with_raw_response.generate(
            prompt="a gauge", model="grok-imagine-image-2.0", n=2, extra_body=body
        )
        assert raw.parse().data is not None
        result = raw.http_response.json()
        assert result["usage"] == {"cost_in_usd_ticks": 2 * ticks}
        assert raw.headers["x-request-id"]  # the only id an image answer has
        assert set(result) == {"data", "usage"}  # no id, no model
        assert [set(d) for d in result["data"]] == [{"url", "mime_type"}] * 2
    flat = await oai.images.with_raw_response.generate(prompt="a dial", model="grok-imagine-image")
    assert flat.http_response.json()["usage"] == {"cost_in_usd_ticks": 200_000_000}  # $0.02
    body2 = {"prompt": "x", "model": "grok-imagine-image-2.0", "resolution": "4k"}
    async with http.post("/v1/images/generations", json=body2) as resp:
        assert resp.status == 422


@pytest.mark.asyncio
async def test_cost_in_nano_usd_instead_of_ticks(oai: openai.AsyncOpenAI, sim: Simulator) -> None:
    sim.state.cost_unit = "nano_usd"
    reply = await oai.chat.completions.create(
        model="grok-4.3",
        messages=USER,
        extra_headers={"X-Sim-Prompt-Tokens": "2000", "X-Sim-Cached-Tokens": "500"},
    )
    u = reply.usage
    assert u is not None and u.completion_tokens_details
    output = u.completion_tokens + (u.completion_tokens_details.reasoning_tokens or 0)
    extra = u.model_dump()
    assert "cost_in_usd_ticks" not in extra
    ticks = 1500 * 12500 + 500 * 2000 + output * 25000
    assert extra["cost_in_nano_usd"] == ticks // 10
    image = await oai.images.with_raw_response.generate(prompt="a dial", model="grok-imagine-image")
    assert image.http_response.json()["usage"] == {"cost_in_nano_usd": 20_000_000}  # $0.02
