"""The model listings: xAI's with prices and fingerprints, OpenAI's `/v1/models`."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from daemon.simulator import Simulator
from daemon.testing import USER_MESSAGES

USER: Any = USER_MESSAGES


@pytest.mark.asyncio
async def test_listings(
    http: aiohttp.ClientSession, oai: openai.AsyncOpenAI, sim: Simulator
) -> None:
    async with http.get("/v1/language-models") as resp:
        models = {m["id"]: m for m in (await resp.json())["models"]}
    assert {"grok-4-0709", "grok-4-fast-reasoning", "grok-3", "grok-3-mini"} <= set(models)
    grok3 = models["grok-3"]
    assert (
        grok3["prompt_text_token_price"],
        grok3["cached_prompt_text_token_price"],
        grok3["completion_text_token_price"],
        grok3["search_price"],
    ) == (30000, 7500, 150000, 250000000)
    assert "grok-4-fast" in models["grok-4-fast-reasoning"]["aliases"]
    assert models["grok-4-0709"]["long_context_threshold"] == 128000
    assert models["grok-4-0709"]["fingerprint"] == sim.state.fingerprints["grok-4-0709"]

    sim.state.fingerprints["grok-3"] = "fp_0000000001"
    async with http.get("/v1/language-models/grok-3-latest") as resp:
        one = await resp.json()
    assert one["id"] == "grok-3" and one["fingerprint"] == "fp_0000000001"
    reply = await oai.chat.completions.create(model="grok-3", messages=USER)
    assert reply.system_fingerprint == "fp_0000000001"
    async with http.get("/v1/language-models/grok-99") as resp:
        assert resp.status == 404 and set(await resp.json()) == {"code", "error"}

    async with http.get("/v1/image-generation-models") as resp:
        image_models = {m["id"]: m for m in (await resp.json())["models"]}
    images = {k: m.get("image_price") for k, m in image_models.items()}
    assert images == {
        "grok-imagine-image": 200000000,
        "grok-imagine-image-2.0": None,  # priced by pricing[] tiers only
        "grok-2-image-1212": 700000000,
    }
    tiers = image_models["grok-imagine-image-2.0"]["pricing"]
    assert (
        len(tiers) == 9
        and {
            "quality": "medium",
            "resolution": "1.5k",
            "price_per_image": 500_000_000,
        }
        in tiers
    )
    listed = [m.id async for m in oai.models.list()]
    assert "grok-4-0709" in listed and "grok-imagine-image" in listed

    sim.state.listing_status = 503
    for path in ("/v1/language-models", "/v1/image-generation-models", "/v1/models"):
        async with http.get(path) as resp:
            assert resp.status == 503
