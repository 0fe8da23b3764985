"""The simulator, driven by the official SDKs and raw HTTP: xai-api.md's wire format, every fault.

No relay here: these tests pin down what the relay's own tests can rely on.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
import pytest_asyncio

from daemon import simulator
from daemon.simulator import Simulator, SimulatorState, price_ticks

BOUND = 3.0  # seconds: no wait in this file may take longer


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    running = await simulator.start()
    try:
        yield running
    finally:
        await running.close()


@pytest_asyncio.fixture
async def oai(sim: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="test", max_retries=0) as c:
        yield c


@pytest_asyncio.fixture
async def http(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": "Bearer test"}
    async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as session:
        yield session


def by_hand(p_in: int, p_cached: int, p_out: int, prompt: int, cached: int, output: int) -> int:
    """xai-api.md's formula, written out independently of the simulator's `price_ticks`."""
    return (prompt - cached) * p_in + cached * p_cached + output * p_out


USER: Any = [{"role": "user", "content": "How many tokens does a metering relay count?"}]


def sse_payloads(raw: bytes) -> list[str]:
    return [
        line[6:].decode()
        for frame in raw.split(b"\n\n")
        for line in frame.split(b"\n")
        if line.startswith(b"data: ")
    ]


# --- prices --------------------------------------------------------------------------------


def test_price_ticks_reproduces_the_real_bill() -> None:
    state = SimulatorState()
    real = {
        "prompt_tokens": 165,
        "completion_tokens": 2,
        "total_tokens": 292,
        "prompt_tokens_details": {"cached_tokens": 156, "image_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 125},
    }
    assert price_ticks(state, "grok-4-fast-reasoning", real) == 731000
    assert price_ticks(state, "grok-4-fast", real) == 731000  # alias
    responses = {"input_tokens": 680, "output_tokens": 484, "input_tokens_details": {}}
    assert price_ticks(state, "grok-4-fast", responses) == 680 * 2000 + 484 * 5000
    long = {"prompt_tokens": 128000, "completion_tokens": 10}
    assert price_ticks(state, "grok-4", long) == 128000 * 60000 + 10 * 300000
    assert price_ticks(state, "grok-4", {**long, "prompt_tokens": 127999}) == (
        127999 * 30000 + 10 * 150000
    )
    assert price_ticks(state, "no-such-model", real) == 0


# --- chat completions ----------------------------------------------------------------------


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
    assert extra["cost_in_usd_ticks"] == by_hand(
        2000, 500, 5000, usage.prompt_tokens, 0, usage.completion_tokens + reasoning
    )

    again = await oai.chat.completions.create(model="grok-4-fast", messages=USER)
    assert again.choices[0].message.content == text  # deterministic
    assert again.usage is not None and again.usage.prompt_tokens_details
    cached = again.usage.prompt_tokens_details.cached_tokens or 0
    assert 0 < cached < again.usage.prompt_tokens == usage.prompt_tokens
    assert again.usage.model_dump()["cost_in_usd_ticks"] == by_hand(
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
    assert plain.usage.model_dump()["cost_in_usd_ticks"] == by_hand(
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
        assert u.model_dump()["cost_in_usd_ticks"] == by_hand(
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
    listed = by_hand(60000, 15000, 300000, 130000, 0, output)
    assert u.model_dump()["cost_in_usd_ticks"] == listed * 3 // 2

    picture = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with_image: Any = [{"role": "user", "content": [{"type": "text", "text": "what?"}, picture]}]
    seen = await oai.chat.completions.create(model="grok-2-vision", messages=with_image)
    u = seen.usage
    assert u is not None and u.prompt_tokens_details and u.prompt_tokens_details.image_tokens
    image = u.prompt_tokens_details.image_tokens
    assert u.prompt_tokens_details.text_tokens == u.prompt_tokens - image
    text_cost = by_hand(20000, 20000, 100000, u.prompt_tokens - image, 0, u.completion_tokens)
    assert u.model_dump()["cost_in_usd_ticks"] == (text_cost + image * 20000) * 3 // 2

    sim.state.report_cost = False
    bare = await oai.chat.completions.create(model="grok-3", messages=USER)
    assert bare.usage is not None and "cost_in_usd_ticks" not in bare.usage.model_dump()

    with pytest.raises(openai.NotFoundError):
        await oai.chat.completions.create(model="grok-99", messages=USER)


@pytest.mark.asyncio
async def test_auth_missing_and_invalid_keys(sim: Simulator) -> None:
    async with aiohttp.ClientSession(base_url=sim.url) as bare:
        async with bare.get("/v1/language-models") as resp:
            assert resp.status == 401
            assert set(await resp.json()) == {"code", "error"}
        async with bare.get("/v1/models", headers={"x-api-key": "anything"}) as resp:
            assert resp.status == 200
    async with openai.AsyncOpenAI(
        base_url=sim.url + "/v1", api_key="invalid-key", max_retries=0
    ) as bad:
        with pytest.raises(openai.BadRequestError) as rejected:
            await bad.chat.completions.create(model="grok-3", messages=USER)
        assert "Incorrect API key provided" in rejected.value.response.text


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
    assert u.model_dump()["cost_in_usd_ticks"] == by_hand(
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


# --- listings ------------------------------------------------------------------------------


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
        images = {m["id"]: m["image_price"] for m in (await resp.json())["models"]}
    assert images == {"grok-imagine-image": 200000000, "grok-2-image-1212": 700000000}
    listed = [m.id async for m in oai.models.list()]
    assert "grok-4-0709" in listed and "grok-imagine-image" in listed

    sim.state.listing_status = 503
    for path in ("/v1/language-models", "/v1/image-generation-models", "/v1/models"):
        async with http.get(path) as resp:
            assert resp.status == 503


# --- responses -----------------------------------------------------------------------------


SERVER_TOOLS: Any = [{"type": "web_search"}, {"type": "x_search"}]  # xAI's, not in the SDK types


@pytest.mark.asyncio
async def test_responses_usage_tools_store_and_continuation(oai: openai.AsyncOpenAI) -> None:
    first = await oai.responses.create(
        model="grok-4-fast",
        input="Search the news about metering",
        tools=SERVER_TOOLS,
    )
    assert first.model == "grok-4-fast-reasoning" and first.status == "completed"
    u = first.usage
    assert u is not None
    reasoning = u.output_tokens_details.reasoning_tokens
    text = first.output_text
    assert reasoning > 0 and u.output_tokens == len(text.split()) + reasoning  # includes reasoning
    assert u.total_tokens == u.input_tokens + u.output_tokens
    extra = u.model_dump()
    calls = extra["server_side_tool_usage_details"]
    assert calls["web_search_calls"] >= 1 and calls["x_search_calls"] >= 1
    assert extra["num_server_side_tools_used"] == sum(calls.values())
    fees = (calls["web_search_calls"] + calls["x_search_calls"]) * 50_000_000
    assert extra["cost_in_usd_ticks"] == fees + by_hand(
        2000, 500, 5000, u.input_tokens, u.input_tokens_details.cached_tokens, u.output_tokens
    )

    fetched = await oai.responses.retrieve(first.id)
    assert fetched.usage == first.usage and fetched.output_text == text

    follow = await oai.responses.create(
        model="grok-4-fast", input="And then?", previous_response_id=first.id
    )
    assert follow.usage is not None
    history = u.input_tokens + len(text.split())
    assert follow.usage.input_tokens > history
    assert 0 < follow.usage.input_tokens_details.cached_tokens < follow.usage.input_tokens

    await oai.responses.delete(first.id)  # the SDK returns nothing; raw answer checked below
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve(first.id)
    raw = await oai.responses.with_raw_response.delete(follow.id)
    assert raw.http_response.json() == {"id": follow.id, "object": "response", "deleted": True}

    unstored = await oai.responses.create(model="grok-3", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve(unstored.id)


@pytest.mark.asyncio
async def test_responses_stream_events_and_terminal_status(oai: openai.AsyncOpenAI) -> None:
    async with oai.responses.stream(model="grok-4", input="Stream it please") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.output_text.delta" in types and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.usage is not None and final.model == "grok-4-0709"
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text

    for status in ("incomplete", "failed"):
        raw = await oai.responses.create(
            model="grok-3",
            input="Stop early",
            stream=True,
            extra_headers={"X-Sim-Response-Status": status},
        )
        last: Any = [event async for event in raw][-1]
        assert last.type == f"response.{status}"
        assert last.response.status == status and last.response.usage is not None


# --- anthropic-compatible messages ---------------------------------------------------------


@pytest.mark.asyncio
async def test_messages_create_stream_and_gone(sim: Simulator) -> None:
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="test", max_retries=0) as client:
        message = await client.messages.create(model="grok-3-latest", max_tokens=200, messages=USER)
        assert message.model == "grok-3" and message.stop_reason == "end_turn"
        block = message.content[0]
        assert isinstance(block, anthropic.types.TextBlock)
        text = block.text
        assert message.usage.output_tokens == len(text.split())
        assert message.usage.cache_read_input_tokens == 0
        assert message.usage.cache_creation_input_tokens == 0

        async with client.messages.stream(model="grok-3", max_tokens=200, messages=USER) as stream:
            streamed = "".join([chunk async for chunk in stream.text_stream])
            final = await stream.get_final_message()
        assert streamed == text
        assert final.usage.input_tokens == message.usage.input_tokens
        assert final.usage.output_tokens == message.usage.output_tokens
        assert 0 < (final.usage.cache_read_input_tokens or 0) < final.usage.input_tokens

        short = await client.messages.create(model="grok-3", max_tokens=2, messages=USER)
        assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2

        sim.state.messages_gone = True
        with pytest.raises(anthropic.APIStatusError) as gone:
            await client.messages.create(model="grok-3", max_tokens=20, messages=USER)
        assert gone.value.status_code == 410


# --- images and small endpoints ------------------------------------------------------------


@pytest.mark.asyncio
async def test_images_generate_and_edit(oai: openai.AsyncOpenAI, sim: Simulator) -> None:
    urls = await oai.images.generate(prompt="a meter", model="grok-imagine-image", n=3)
    assert urls.data is not None and len(urls.data) == 3
    assert all((d.url or "").startswith("https://") for d in urls.data)
    assert urls.model_dump()["usage"]["cost_in_usd_ticks"] == 3 * 200000000

    b64 = await oai.images.generate(
        prompt="a meter", model="grok-2-image", response_format="b64_json"
    )
    assert b64.data is not None
    assert base64.b64decode(b64.data[0].b64_json or "").startswith(b"\x89PNG")
    assert b64.model_dump()["usage"]["cost_in_usd_ticks"] == 700000000

    edited = await oai.images.edit(
        image=("in.png", base64.b64decode(simulator._PIXEL_PNG), "image/png"),
        prompt="make it blue",
        model="grok-imagine-image",
        n=2,
    )
    assert edited.data is not None and len(edited.data) == 2
    assert edited.model_dump()["usage"]["cost_in_usd_ticks"] == 2 * 200000000

    with pytest.raises(openai.UnprocessableEntityError):
        await oai.images.generate(prompt="too many", model="grok-imagine-image", n=11)


@pytest.mark.asyncio
async def test_tokenize_api_key_and_unknown_routes(sim: Simulator) -> None:
    secret = "xai-this-is-the-secret-key-0123456789"
    async with aiohttp.ClientSession(
        base_url=sim.url, headers={"Authorization": f"Bearer {secret}"}
    ) as http:
        body = {"text": "hello big world", "model": "grok-3"}
        async with http.post("/v1/tokenize-text", json=body) as resp:
            tokens = (await resp.json())["token_ids"]
        assert [t["string_token"] for t in tokens] == ["hello", " big", " world"]
        assert tokens[1]["token_bytes"] == list(b" big")

        async with http.get("/v1/api-key") as resp:
            raw = await resp.read()
        info = orjson.loads(raw)
        assert info["name"] == "sim-key" and info["team_id"] and info["api_key_id"]
        assert secret.encode() not in raw and secret[8:-4].encode() not in raw

        async with http.get("/v1/no-such-thing") as resp:
            assert resp.status == 404 and resp.headers["x-request-id"]
            assert set(await resp.json()) == {"code", "error"}
        async with http.get("/v1/chat/completions") as resp:
            assert resp.status == 405 and set(await resp.json()) == {"code", "error"}
        async with http.post("/v1/chat/completions", data=b"{}") as resp:
            assert resp.status == 415
        async with http.post("/v1/chat/completions", json={"messages": USER}) as resp:
            assert resp.status == 422


@pytest.mark.asyncio
async def test_requests_are_recorded(oai: openai.AsyncOpenAI, sim: Simulator) -> None:
    task = asyncio.create_task(oai.chat.completions.create(model="grok-3", messages=USER))
    recorded = await sim.state.wait_for_requests(1, within=BOUND)
    await task
    assert sim.port > 0 and sim.url.endswith(f":{sim.port}")
    first = recorded[0]
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["Authorization"] == "Bearer test"
    assert first.json()["messages"] == USER
    assert sim.state.requests_to("/v1/chat/completions") == [first]
    answer = await oai.chat.completions.with_raw_response.create(
        model="grok-3", messages=USER, extra_query={"limit": "5"}
    )
    assert sim.state.requests[-1].query == "limit=5"
    assert answer.http_response.content == sim.state.sent[-1]  # byte for byte


# --- failure injection ---------------------------------------------------------------------


CHAT = {"model": "grok-3", "messages": USER}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


@pytest.mark.asyncio
async def test_injected_status(oai: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        await oai.chat.completions.create(
            model="grok-3", messages=USER, extra_headers={"X-Sim-Status": "429"}
        )
    assert limited.value.response.headers["retry-after"] == "1"
    async with http.post("/v1/messages", json=CHAT, headers={"X-Sim-Status": "503"}) as resp:
        assert resp.status == 503 and set(await resp.json()) == {"code", "error"}
        assert resp.headers["x-request-id"]
    async with http.post("/v1/responses", json={}, headers={"X-Sim-Stall": "sideways"}) as resp:
        assert resp.status == 400


@pytest.mark.asyncio
async def test_stall_headers_until_released(http: aiohttp.ClientSession, sim: Simulator) -> None:
    async def call() -> int:
        async with http.post(
            "/v1/chat/completions", json=CHAT, headers={"X-Sim-Stall": "headers"}
        ) as resp:
            await resp.read()
            return resp.status

    task = asyncio.create_task(call())
    await asyncio.wait_for(sim.state.stalled.wait(), BOUND)
    assert not task.done()
    sim.state.release.set()
    assert await asyncio.wait_for(task, BOUND) == 200


@pytest.mark.asyncio
async def test_stall_body_sends_first_frame_then_waits(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    headers = {"X-Sim-Stall": "body"}
    async with http.post("/v1/chat/completions", json=STREAM, headers=headers) as resp:
        assert resp.status == 200  # headers came before the stall
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), BOUND)
        assert orjson.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        assert sim.state.stalled.is_set()
        sim.state.release.set()
        rest = await asyncio.wait_for(resp.read(), BOUND)
    assert sse_payloads(rest)[-1] == "[DONE]"


@pytest.mark.asyncio
async def test_stalled_response_ends_when_the_client_leaves(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    resp = await http.post("/v1/chat/completions", json=STREAM, headers={"X-Sim-Stall": "body"})
    await asyncio.wait_for(sim.state.stalled.wait(), BOUND)
    resp.close()  # drop the connection mid-stall
    await asyncio.wait_for(sim.state.abandoned.wait(), BOUND)
    assert sim.state.abandoned_count == 1

    sim.state.abandoned.clear()
    task = asyncio.create_task(
        http.post("/v1/chat/completions", json=CHAT, headers={"X-Sim-Stall": "headers"})
    )
    await sim.state.wait_for_requests(2, within=BOUND)
    task.cancel()
    await asyncio.wait_for(sim.state.abandoned.wait(), BOUND)
    assert sim.state.abandoned_count == 2


@pytest.mark.asyncio
async def test_close_does_not_wait_for_stalled_responses() -> None:
    running = await simulator.start()
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer t"}) as http:
        task = asyncio.create_task(
            http.post(
                running.url + "/v1/chat/completions", json=CHAT, headers={"X-Sim-Stall": "headers"}
            )
        )
        await asyncio.wait_for(running.state.stalled.wait(), BOUND)
        await asyncio.wait_for(running.close(), BOUND)
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(task, BOUND)


@pytest.mark.asyncio
async def test_cut_after_breaks_the_body(http: aiohttp.ClientSession) -> None:
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(
            "/v1/chat/completions", json=STREAM, headers={"X-Sim-Cut-After": "3"}
        ) as resp:
            async for piece in resp.content.iter_any():
                received += piece
    assert len(sse_payloads(received)) == 3

    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(
            "/v1/chat/completions", json=CHAT, headers={"X-Sim-Cut-After": "0"}
        ) as resp:
            assert resp.content_length and resp.content_length > 0
            await resp.read()


@pytest.mark.asyncio
async def test_split_writes_small_pieces(http: aiohttp.ClientSession) -> None:
    pieces: list[bytes] = []
    async with http.post("/v1/chat/completions", json=STREAM, headers={"X-Sim-Split": "7"}) as resp:
        async for data, _end in resp.content.iter_chunks():
            pieces.append(data)
    whole = b"".join(pieces)
    assert max(len(p) for p in pieces) <= 7 < len(whole)
    payloads = sse_payloads(whole)
    assert payloads[-1] == "[DONE]" and "usage" in orjson.loads(payloads[-2])

    async with http.post("/v1/chat/completions", json=CHAT, headers={"X-Sim-Split": "5"}) as resp:
        assert (await resp.json())["usage"]["prompt_tokens"] > 0


@pytest.mark.asyncio
async def test_gzip_json_and_sse(sim: Simulator, oai: openai.AsyncOpenAI) -> None:
    headers = {"Authorization": "Bearer t", "X-Sim-Gzip": "1"}
    async with aiohttp.ClientSession(
        base_url=sim.url, headers=headers, auto_decompress=False
    ) as raw:
        async with raw.post("/v1/chat/completions", json=CHAT) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            assert orjson.loads(gzip.decompress(await resp.read()))["usage"]
        async with raw.post("/v1/chat/completions", json=STREAM) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            assert sse_payloads(gzip.decompress(await resp.read()))[-1] == "[DONE]"
    stream = await oai.chat.completions.create(
        model="grok-3",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Sim-Gzip": "1"},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None


@pytest.mark.asyncio
async def test_malformed_bodies(http: aiohttp.ClientSession) -> None:
    headers = {"X-Sim-Malformed": "1"}
    async with http.post("/v1/chat/completions", json=CHAT, headers=headers) as resp:
        assert resp.status == 200
        body = await resp.read()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    async with http.post("/v1/chat/completions", json=STREAM, headers=headers) as resp:
        payloads = sse_payloads(await resp.read())
    assert payloads[-1] == "[DONE]"
    for payload in payloads[:-1]:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(payload)


@pytest.mark.asyncio
async def test_usage_none_everywhere(oai: openai.AsyncOpenAI, sim: Simulator) -> None:
    none = {"X-Sim-Usage": "none"}
    chat = await oai.chat.completions.create(model="grok-3", messages=USER, extra_headers=none)
    assert chat.usage is None
    stream = await oai.chat.completions.create(
        model="grok-3",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=none,
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.usage is None and c.choices for c in chunks)
    response = await oai.responses.create(model="grok-3", input="x", extra_headers=none)
    assert response.usage is None
    image = await oai.images.generate(prompt="x", model="grok-imagine-image", extra_headers=none)
    assert "usage" not in image.model_dump(exclude_none=True)
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="t", max_retries=0) as client:
        message = await client.messages.with_raw_response.create(
            model="grok-3", max_tokens=20, messages=USER, extra_headers=none
        )
        assert "usage" not in message.http_response.json()


@pytest.mark.asyncio
async def test_chunk_delay_paces_the_stream(http: aiohttp.ClientSession, sim: Simulator) -> None:
    sim.state.chunk_delay = 0.002
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.post("/v1/chat/completions", json=STREAM) as resp:
        frames = sse_payloads(await resp.read())
    assert loop.time() - started >= 0.002 * (len(frames) - 1)
