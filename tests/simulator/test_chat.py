"""Chat completions and deferred completions, driven by the openai SDK and raw HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import orjson
import pytest

from daemon.simulator import Simulator
from daemon.testing import USER_MESSAGES, cost_by_hand, sse_payloads

USER: Any = USER_MESSAGES


@pytest.mark.asyncio
async def test_chat_reasoning_usage_cached_subset_and_exact_ticks(
    oai: openai.AsyncOpenAI, sim: Simulator
) -> None:
    raw = await oai.chat.completions.with_raw_response.create(model="grok-4-fast", messages=USER)
    assert raw.headers["x-request-id"]
    first = raw.parse()
    assert first.model == "grok-4-fast-reasoning"
    assert first.system_fingerprint == sim.state.fingerprints["grok-4-fast-reasoning"]
    text = first.choices[0].message.content or ""
    usage = first.usage
    assert usage is not None and usage.completion_tokens_details and usage.prompt_tokens_details
    reasoning = usage.completion_tokens_details.reasoning_tokens or 0
    assert 8 <= usage.completion_tokens == len(text.split()) <= 20
    assert reasoning > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens + reasoning
    assert usage.prompt_tokens_details.cached_tokens == 0
    extra = usage.model_dump()
    assert extra["num_sources_used"] == 0
    assert extra["cost_in_usd_ticks"] == cost_by_hand(
        2000, 500, 5000, usage.prompt_tokens, 0, usage.completion_tokens + reasoning
    )

    again = await oai.chat.completions.create(model="grok-4-fast", messages=USER)
    assert again.choices[0].message.content == text  # deterministic
    assert again.usage is not None and again.usage.prompt_tokens_details
    cached = again.usage.prompt_tokens_details.cached_tokens or 0
    assert 0 < cached < again.usage.prompt_tokens == usage.prompt_tokens
    assert again.usage.model_dump()["cost_in_usd_ticks"] == cost_by_hand(
        2000, 500, 5000, usage.prompt_tokens, cached, usage.completion_tokens + reasoning
    )

    forced = await oai.chat.completions.create(
        model="grok-4-fast", messages=USER, extra_headers={"X-Sim-Cached-Tokens": "3"}
    )
    assert forced.usage is not None and forced.usage.prompt_tokens_details
    assert forced.usage.prompt_tokens_details.cached_tokens == 3


@pytest.mark.asyncio
async def test_chat_resolution_effort_variants_and_non_reasoning(
    oai: openai.AsyncOpenAI, sim: Simulator
) -> None:
    plain = await oai.chat.completions.create(model="grok-3-latest", messages=USER)
    assert plain.model == "grok-3"
    assert plain.usage is not None and plain.usage.completion_tokens_details
    assert plain.usage.completion_tokens_details.reasoning_tokens == 0
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    assert plain.usage.model_dump()["cost_in_usd_ticks"] == cost_by_hand(
        30000, 7500, 150000, plain.usage.prompt_tokens, 0, plain.usage.completion_tokens
    )
    fast = await oai.chat.completions.create(model="grok-4-fast-non-reasoning", messages=USER)
    assert fast.usage is not None and fast.usage.completion_tokens_details
    assert fast.usage.completion_tokens_details.reasoning_tokens == 0

    efforts = {}
    effort: Any
    for effort in ("low", "high"):
        reply = await oai.chat.completions.create(
            model="grok-3-mini",
            messages=[{"role": "user", "content": f"effort {effort}"}],
            reasoning_effort=effort,
        )
        assert reply.model == f"grok-3-mini-{effort}"
        assert reply.system_fingerprint == sim.state.fingerprints["grok-3-mini"]
        u = reply.usage
        assert u is not None and u.completion_tokens_details and u.prompt_tokens_details
        efforts[effort] = r = u.completion_tokens_details.reasoning_tokens or 0
        assert u.model_dump()["cost_in_usd_ticks"] == cost_by_hand(
            3000, 750, 5000, u.prompt_tokens, u.prompt_tokens_details.cached_tokens or 0,
            u.completion_tokens + r,
        )  # fmt: skip
    assert 0 < efforts["low"] < efforts["high"]


@pytest.mark.asyncio
async def test_chat_n_long_context_ratio_priority_and_no_cost(
    oai: openai.AsyncOpenAI, sim: Simulator
) -> None:
    two = await oai.chat.completions.create(model="grok-3", messages=USER, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.usage is not None
    words = sum(len((c.message.content or "").split()) for c in two.choices)
    assert two.usage.completion_tokens == words

    sim.state.billing_ratio = (3, 2)
    long = await oai.chat.completions.create(
        model="grok-4",
        messages=[{"role": "user", "content": "long"}],
        service_tier="priority",
        extra_headers={"X-Sim-Prompt-Tokens": "130000"},
    )
    assert long.model == "grok-4-0709" and long.service_tier == "priority"
    u = long.usage
    assert u is not None and u.prompt_tokens == 130000 and u.completion_tokens_details
    output = u.completion_tokens + (u.completion_tokens_details.reasoning_tokens or 0)
    listed = cost_by_hand(60000, 15000, 300000, 130000, 0, output)
    assert u.model_dump()["cost_in_usd_ticks"] == listed * 2 * 3 // 2  # priority bills x2

    picture = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with_image: Any = [{"role": "user", "content": [{"type": "text", "text": "what?"}, picture]}]
    seen = await oai.chat.completions.create(model="grok-2-vision", messages=with_image)
    u = seen.usage
    assert u is not None and u.prompt_tokens_details and u.prompt_tokens_details.image_tokens
    image = u.prompt_tokens_details.image_tokens
    assert u.prompt_tokens_details.text_tokens == u.prompt_tokens - image
    text_cost = cost_by_hand(20000, 20000, 100000, u.prompt_tokens - image, 0, u.completion_tokens)
    assert u.model_dump()["cost_in_usd_ticks"] == (text_cost + image * 20000) * 3 // 2

    sim.state.report_cost = False
    bare = await oai.chat.completions.create(model="grok-3", messages=USER)
    assert bare.usage is not None and "cost_in_usd_ticks" not in bare.usage.model_dump()

    with pytest.raises(openai.NotFoundError):
        await oai.chat.completions.create(model="grok-99", messages=USER)


@pytest.mark.asyncio
async def test_chat_stream_usage_only_when_asked(
    oai: openai.AsyncOpenAI, http: aiohttp.ClientSession, sim: Simulator
) -> None:
    stream = await oai.chat.completions.create(
        model="grok-4-fast",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert len({c.id for c in chunks}) == 1
    assert {c.system_fingerprint for c in chunks} == {
        sim.state.fingerprints["grok-4-fast-reasoning"]
    }
    assert {c.model for c in chunks} == {"grok-4-fast-reasoning"}
    assert chunks[0].choices[0].delta.role == "assistant"
    kinds = [
        "reasoning" if c.choices[0].delta.model_dump().get("reasoning_content") else "content"
        for c in chunks
        if c.choices and c.choices[0].finish_reason is None
    ]
    assert kinds[0] == "reasoning" and "content" in kinds
    assert kinds == sorted(kinds, key=lambda k: k == "content")  # reasoning first, then content
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.usage is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert chunks[-2].choices[0].finish_reason == "stop"
    u = last.usage
    assert u.completion_tokens_details and u.prompt_tokens_details
    reasoning = u.completion_tokens_details.reasoning_tokens or 0
    assert u.completion_tokens == len(text.split()) and reasoning > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens + reasoning
    assert u.model_dump()["cost_in_usd_ticks"] == cost_by_hand(
        2000, 500, 5000, u.prompt_tokens, u.prompt_tokens_details.cached_tokens or 0,
        u.completion_tokens + reasoning,
    )  # fmt: skip
    same = await oai.chat.completions.create(model="grok-4-fast", messages=USER)
    assert same.choices[0].message.content == text

    body = {"model": "grok-3", "messages": USER, "stream": True}
    async with http.post("/v1/chat/completions", json=body) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        payloads = sse_payloads(await resp.read())
    assert payloads[-1] == "[DONE]"
    assert all("usage" not in orjson.loads(p) for p in payloads[:-1])  # omitted, not null

    async with http.post(
        "/v1/chat/completions", json=body, headers={"X-Sim-Usage": "every"}
    ) as resp:
        objs = [orjson.loads(p) for p in sse_payloads(await resp.read())[:-1]]
    completions = [o["usage"]["completion_tokens"] for o in objs]
    assert completions == sorted(completions) and completions[-1] > 0


@pytest.mark.asyncio
async def test_deferred_round_trip(http: aiohttp.ClientSession, sim: Simulator) -> None:
    sim.state.deferred_polls = 2
    body = {"model": "grok-4-fast", "messages": USER, "deferred": True}
    async with http.post("/v1/chat/completions", json=body) as resp:
        posted = await resp.json()
    assert list(posted) == ["request_id"]
    path = f"/v1/chat/deferred-completion/{posted['request_id']}"
    for _ in range(2):
        async with http.get(path) as resp:
            assert resp.status == 202 and await resp.read() == b""
    async with http.get(path) as resp:
        assert resp.status == 200
        done = await resp.json()
    assert done["id"] == posted["request_id"] and done["object"] == "chat.completion"
    assert done["model"] == "grok-4-fast-reasoning" and done["system_fingerprint"]
    assert done["usage"]["cost_in_usd_ticks"] > 0
    async with http.get(path) as resp:
        assert resp.status == 404
