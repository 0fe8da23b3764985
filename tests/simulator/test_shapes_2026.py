"""The 2026 answer shapes (xai-api.md), and the 2025 ones behind ``legacy_2025_shapes``.

Responses' ``metadata.system_fingerprint``, ``context_details``, ``service_tier``, UUID ids, no
``[DONE]``; the rate-limit and timing headers; a 529 overloaded answer.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from daemon.simulator import Simulator
from daemon.testing import USER_MESSAGES, sse_payloads

USER: Any = USER_MESSAGES
SERVER_TOOLS: Any = [{"type": "web_search"}]


def is_bare_uuid(value: str) -> bool:
    return str(uuid.UUID(value)) == value


@pytest.mark.asyncio
async def test_responses_2026_body(oai: openai.AsyncOpenAI, sim: Simulator) -> None:
    raw = await oai.responses.with_raw_response.create(
        model="grok-4.6",
        input="Tell me about meters",
        metadata={"team": "blue"},
        extra_headers={"X-Sim-Prompt-Tokens": "900", "X-Sim-Cached-Tokens": "300"},
    )
    body = raw.http_response.json()
    fingerprint = sim.state.fingerprints["grok-4.6"]
    assert body["metadata"] == {"team": "blue", "system_fingerprint": fingerprint}
    assert "system_fingerprint" not in body and body["service_tier"] == "default"
    assert is_bare_uuid(body["id"])
    u = body["usage"]
    reasoning = u["output_tokens_details"]["reasoning_tokens"]
    assert reasoning > 0
    assert u["context_details"] == {
        "input_tokens": 900,
        "output_tokens": u["output_tokens"] - reasoning,
    }
    # output_tokens includes reasoning: 600 * 20000 + 300 * 5000 + output * 60000
    assert u["cost_in_usd_ticks"] == 600 * 20000 + 300 * 5000 + u["output_tokens"] * 60000

    priority = await oai.responses.create(
        model="grok-4.6",
        input="Tell me about meters",
        tools=SERVER_TOOLS,
        extra_body={"service_tier": "priority"},
        extra_headers={"X-Sim-Prompt-Tokens": "900", "X-Sim-Cached-Tokens": "300"},
    )
    assert priority.model_dump()["service_tier"] == "priority" and priority.usage is not None
    extra = priority.usage.model_dump()
    calls = extra["server_side_tool_usage_details"]["web_search_calls"]
    tokens = 600 * 20000 + 300 * 5000 + priority.usage.output_tokens * 60000
    assert calls >= 1 and extra["cost_in_usd_ticks"] == 2 * tokens + calls * 50_000_000


@pytest.mark.asyncio
async def test_responses_2026_stream_every_event_and_no_done(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    request = {"model": "grok-4.3", "input": "Stream it", "stream": True}
    async with http.post("/v1/responses", json=request) as resp:
        raw = await resp.read()
    fingerprint = sim.state.fingerprints["grok-4.3"]
    events = [orjson.loads(p) for p in sse_payloads(raw)]  # [DONE] would not parse
    assert b"[DONE]" not in raw and events[-1]["type"] == "response.completed"
    assert all(e["metadata"] == {"system_fingerprint": fingerprint} for e in events)
    snapshots = [e["response"] for e in events if "response" in e]
    assert len(snapshots) == 3  # created, in_progress, completed
    assert all(s["metadata"]["system_fingerprint"] == fingerprint for s in snapshots)
    assert is_bare_uuid(snapshots[-1]["id"]) and "system_fingerprint" not in snapshots[-1]

    sim.state.responses_done_marker = True
    async with http.post("/v1/responses", json=request) as resp:
        assert (await resp.read()).endswith(b"data: [DONE]\n\n")


@pytest.mark.asyncio
async def test_legacy_2025_shapes_switch(
    oai: openai.AsyncOpenAI, http: aiohttp.ClientSession, sim: Simulator
) -> None:
    sim.state.legacy_2025_shapes = True
    fingerprint = sim.state.fingerprints["grok-3"]
    raw = await oai.responses.with_raw_response.create(
        model="grok-3", input="Old times", tools=SERVER_TOOLS
    )
    body = raw.http_response.json()
    assert body["system_fingerprint"] == fingerprint and body["metadata"] == {}
    assert "service_tier" not in body
    u = body["usage"]
    assert "context_details" not in u and "server_side_tool_usage_details" not in u
    assert "cost_in_usd_ticks" not in u and u["num_server_side_tools_used"] >= 1
    calls = [item for item in body["output"] if item["type"] == "web_search_call"]
    assert len(calls) == u["num_server_side_tools_used"]

    request = {"model": "grok-3", "input": "Old stream", "stream": True}
    async with http.post("/v1/responses", json=request) as resp:
        events = [orjson.loads(p) for p in sse_payloads(await resp.read())]
    assert all("metadata" not in e for e in events)
    assert events[-1]["response"]["system_fingerprint"] == fingerprint

    chat = await oai.chat.completions.with_raw_response.create(model="grok-3", messages=USER)
    chat_body = chat.http_response.json()
    assert "service_tier" not in chat_body and "cost_in_usd_ticks" not in chat_body["usage"]
    fast = await oai.chat.completions.create(
        model="grok-3", messages=USER, extra_body={"service_tier": "priority"}
    )
    assert fast.service_tier == "priority"

    image = await oai.images.with_raw_response.generate(prompt="a dial", model="grok-2-image")
    items = image.http_response.json()["data"]
    assert [set(i) for i in items] == [{"url", "revised_prompt"}]  # and no usage, no mime_type
    assert set(image.http_response.json()) == {"data"}
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="test", max_retries=0) as client:
        message = await client.messages.create(model="grok-3", max_tokens=50, messages=USER)
    assert message.id.startswith("msg_")


@pytest.mark.asyncio
async def test_chat_and_messages_2026_ids_and_service_tier(
    oai: openai.AsyncOpenAI, http: aiohttp.ClientSession, sim: Simulator
) -> None:
    reply = await oai.chat.completions.create(model="grok-4.7", messages=USER)
    assert is_bare_uuid(reply.id) and reply.service_tier == "default"
    stream = {"model": "grok-4.7", "messages": USER, "stream": True}
    async with http.post("/v1/chat/completions", json=stream) as resp:
        chunks = [orjson.loads(p) for p in sse_payloads(await resp.read())[:-1]]
    assert chunks and all(c["service_tier"] == "default" for c in chunks)
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="test", max_retries=0) as client:
        message = await client.messages.create(model="grok-4.7", max_tokens=50, messages=USER)
    assert is_bare_uuid(message.id)


@pytest.mark.asyncio
async def test_rate_limit_timing_and_request_id_headers(
    oai: openai.AsyncOpenAI, http: aiohttp.ClientSession, sim: Simulator
) -> None:
    spent = 0
    for served in (1, 2):
        raw = await oai.chat.completions.with_raw_response.create(
            model="grok-4.20",
            messages=USER,
            extra_headers={"X-Sim-Prompt-Tokens": "5000"},
        )
        u = raw.parse().usage
        assert u is not None and u.completion_tokens_details
        output = u.completion_tokens + (u.completion_tokens_details.reasoning_tokens or 0)
        spent += u.total_tokens
        h = raw.headers
        assert is_bare_uuid(h["x-request-id"])
        assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-limit-tokens"]) == (
            "1200",
            "4000000",
        )
        assert h["x-ratelimit-remaining-requests"] == str(1200 - served)
        assert h["x-ratelimit-remaining-tokens"] == str(4_000_000 - spent)
        ttft = 120 + 5000 // 50  # 220 ms
        assert (h["x-metrics-ttft-ms"], h["x-metrics-mean-itl-ms"]) == (str(ttft), "15")
        assert h["x-metrics-e2e-ms"] == str(ttft + 15 * (output - 1))

    sim.state.ratelimit_tokens = 10  # remaining never goes below 0
    async with http.post("/v1/chat/completions", json={"model": "grok-3", "messages": USER}) as r:
        assert r.headers["x-ratelimit-remaining-tokens"] == "0"
        assert r.headers["x-ratelimit-remaining-requests"] == str(1200 - 3)
    async with http.post("/v1/chat/completions", json={"model": "nope", "messages": USER}) as r:
        assert r.status == 404 and r.headers["x-request-id"]
        assert not [k for k in r.headers if k.lower().startswith("x-ratelimit")]


@pytest.mark.asyncio
async def test_529_overloaded(
    oai: openai.AsyncOpenAI, http: aiohttp.ClientSession, sim: Simulator
) -> None:
    with pytest.raises(openai.APIStatusError) as overloaded:
        await oai.chat.completions.create(
            model="grok-4.7", messages=USER, extra_headers={"X-Sim-Overloaded": "1"}
        )
    answer = overloaded.value.response
    assert answer.status_code == 529 and answer.headers["x-request-id"]
    assert answer.json()["code"] == "The service is overloaded"
    assert "x-ratelimit-remaining-requests" not in answer.headers

    chat = {"model": "grok-4.7", "messages": USER}
    statuses = []
    for attempt in range(4):  # what an SDK retrying sends: its retry number, from 0
        headers = {"X-Sim-Overloaded": "2", "x-stainless-retry-count": str(attempt)}
        async with http.post("/v1/chat/completions", json=chat, headers=headers) as resp:
            statuses.append(resp.status)
    assert statuses == [529, 529, 200, 200]
    async with http.post("/v1/responses", json={}, headers={"X-Sim-Status": "529"}) as resp:
        assert resp.status == 529
