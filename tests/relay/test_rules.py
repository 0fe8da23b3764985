"""Pricing rules through the daemon with the openai SDK, against the simulator: the priority
tier and the upstream's ``price_multiplier``, the listing's long-context tier, image price
units, ``pricing[]`` tiers and the model of an image row (xai-api.md "Pricing rules beyond the
listing", "Listings", "Units", "Images"). The simulator's cost reports are off, so each row's
cost is the daemon's computed one; every expected value is xai-api.md's formula on the usage
the client received, with prices of our own."""

from __future__ import annotations

from typing import Any

import openai

from daemon import simulator
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon, cost_by_hand

PROMPT: list[Any] = [{"role": "user", "content": "Count the ticks."}]
PINNED = {"X-Sim-Prompt-Tokens": "1000", "X-Sim-Cached-Tokens": "400"}


def oai(meter: RunningDaemon, prefix: str = "") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{meter.url}{prefix}/v1", api_key=TEST_KEY, max_retries=0)


def token_ticks(usage: Any, p_in: int, p_cached: int, p_out: int) -> int:
    """xai-api.md's chat formula on the usage the client got (reasoning outside completion)."""
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    details = usage.completion_tokens_details
    output = usage.completion_tokens + ((details.reasoning_tokens or 0) if details else 0)
    return cost_by_hand(p_in, p_cached, p_out, usage.prompt_tokens, cached or 0, output)


# --- kind 4: multipliers -------------------------------------------------------------------


async def test_priority_tier_and_regional_multiplier(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    sim.state.accept_unknown_models = True
    sim.state.report_cost = False
    meter = await start_daemon(
        sim.url,
        upstream__price_multiplier=1.1,  # the default upstream plays https://us.api.x.ai
        upstreams={"plain": {"base_url": sim.url, "prefix": "/plain"}},
        # $2.00 / $0.50 / $6.00 per 1M: 20000 / 5000 / 60000 ticks per token
        pricing__overrides={"rules-model": {"input": 2.0, "cached_input": 0.5, "output": 6.0}},
    )
    calls = [("", "priority"), ("", None), ("/plain", "priority"), ("/plain", None)]
    expected = []
    for prefix, tier in calls:
        client = oai(meter, prefix)
        extra = {"service_tier": tier} if tier else {}
        resp = await client.chat.completions.create(
            model="rules-model", messages=PROMPT, extra_headers=PINNED, **extra
        )
        await client.close()
        assert resp.usage is not None and resp.usage.prompt_tokens == 1000
        # the answer's tier is what bills; a 2026 answer always names one ("default")
        assert resp.service_tier == (tier or "default")
        tokens = token_ticks(resp.usage, 20000, 5000, 60000)
        times = 2 if tier else 1
        expected.append(tokens * times * 11 // 10 if not prefix else tokens * times)
    rows = await meter.rows(4)
    assert [r["computed_cost_ticks"] for r in rows] == expected
    assert [r["cost_ticks"] for r in rows] == expected
    assert {r["cost_source"] for r in rows} == {"computed"}
    assert [r["price_multiplier"] for r in rows] == [1.1, 1.1, None, None]
    assert [r["service_tier"] for r in rows] == ["priority", "default", "priority", "default"]
    # 600 uncached, 400 cached: the cache discount comes first, then x2, then x1.1
    out = rows[1]["output_tokens"]
    assert expected[1] == (600 * 20000 + 400 * 5000 + out * 60000) * 11 // 10
    assert expected[0] == (600 * 20000 + 400 * 5000 + out * 60000) * 22 // 10


# --- kind 5: the long-context tier is the listing's ------------------------------------------


def lc_entry(model_id: str, threshold: int, long_output: int) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "owned_by": "xai",
        "prompt_text_token_price": 20000,
        "cached_prompt_text_token_price": 5000,
        "completion_text_token_price": 60000,
        "long_context_threshold": threshold,
        "prompt_text_token_price_long_context": 40000,
        "cached_prompt_text_token_price_long_context": 10000,
        "completion_text_token_price_long_context": long_output,
        "aliases": [],
    }


async def test_long_context_tier_from_the_listing(
    sim: simulator.Simulator, start_priced: DaemonFactory
) -> None:
    sim.state.report_cost = False
    sim.state.listing = [
        lc_entry("lc-model", 1000, 120000),
        lc_entry("lc-none", 0, 120000),  # threshold 0: no long-context tier
        lc_entry("lc-zero-out", 1000, 0),  # long output price 0: the normal output price
    ]
    meter = await start_priced(sim.url)
    client = oai(meter)
    calls = [
        ("lc-model", 999),
        ("lc-model", 1000),
        ("lc-model", 1001),
        ("lc-none", 5000),
        ("lc-zero-out", 1000),
    ]
    expected = []
    for model, prompt in calls:
        resp = await client.chat.completions.create(
            model=model,
            messages=PROMPT,
            extra_headers={"X-Sim-Prompt-Tokens": str(prompt), "X-Sim-Cached-Tokens": "100"},
        )
        assert resp.usage is not None and resp.usage.prompt_tokens == prompt
        long = model != "lc-none" and prompt >= 1000
        p_out = 120000 if long and model == "lc-model" else 60000
        expected.append(
            token_ticks(resp.usage, 40000, 10000, p_out)
            if long
            else token_ticks(resp.usage, 20000, 5000, 60000)
        )
    await client.close()
    rows = await meter.rows(len(calls))
    assert [r["cost_ticks"] for r in rows] == expected
    o = [r["output_tokens"] for r in rows]
    assert expected[0] == 899 * 20000 + 100 * 5000 + o[0] * 60000  # threshold - 1: normal
    assert expected[1] == 900 * 40000 + 100 * 10000 + o[1] * 120000  # at: all long
    assert expected[2] == 901 * 40000 + 100 * 10000 + o[2] * 120000
    assert expected[3] == 4900 * 20000 + 100 * 5000 + o[3] * 60000
    assert expected[4] == 900 * 40000 + 100 * 10000 + o[4] * 60000


# --- kind 11: image price units and tiers; the model of an image row ------------------------

IMAGE_MODELS: list[dict[str, Any]] = [
    {"id": "grok-imagine-image", "image_price": 200_000_000, "aliases": ["grok-imagine"]},
    {"id": "grok-2-image-1212", "image_price": 700, "aliases": ["grok-2-image"]},  # 1e-4 USD
    {
        "id": "grok-imagine-image-2.0",
        "pricing": [
            {"quality": "low", "resolution": "1k", "price_per_image": 300_000_000},
            {"quality": "low", "resolution": "2k", "price_per_image": 500_000_000},
            {"quality": "medium", "resolution": "1k", "price_per_image": 400_000_000},
            {"quality": "medium", "resolution": "2k", "price_per_image": 800_000_000},
        ],
    },
]


async def test_image_units_tiers_and_models(
    sim: simulator.Simulator, start_priced: DaemonFactory
) -> None:
    sim.state.report_cost = False
    sim.state.image_models = [dict(m) for m in IMAGE_MODELS]
    meter = await start_priced(sim.url)
    client = oai(meter)
    await client.images.generate(model="grok-2-image", prompt="a", n=3)
    await client.images.generate(
        model="grok-imagine-image-2.0",
        prompt="b",
        n=2,
        quality="low",
        extra_body={"resolution": "2k"},
    )
    await client.images.generate(model="grok-imagine-image-2.0", prompt="c", n=1)
    await client.images.generate(prompt="d", n=2)  # no model: the default bills
    await client.images.generate(model="grok-imagine", prompt="e", n=1)
    await client.close()
    rows = await meter.rows(5)
    assert [(r["requested_model"], r["model"], r["image_tier"], r["cost_ticks"]) for r in rows] == [
        ("grok-2-image", "grok-2-image-1212", None, 2_100_000_000),  # 3 x $0.07
        ("grok-imagine-image-2.0", "grok-imagine-image-2.0", "low/2k", 1_000_000_000),  # 2 x $0.05
        ("grok-imagine-image-2.0", "grok-imagine-image-2.0", None, 400_000_000),  # medium, 1k
        (None, "grok-imagine-image", None, 400_000_000),  # 2 x $0.02
        ("grok-imagine", "grok-imagine-image", None, 200_000_000),
    ]
    assert {r["cost_source"] for r in rows} == {"computed"}

    def requests(model: str) -> float | None:
        return meter.metric(
            "xai_meter_requests_total",
            provider="xai",
            endpoint="images.generations",
            model=model,
            code="200",
        )

    assert (requests("grok-2-image-1212"), requests("grok-imagine-image")) == (1, 2)
    assert requests("grok-2-image") is None and requests("grok-imagine") is None
