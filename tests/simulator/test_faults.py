"""Fault injection: every X-Sim-* header, stalls and their release, chunk pacing."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from daemon import simulator
from daemon.simulator import Simulator
from daemon.testing import USER_MESSAGES, sse_payloads

BOUND = 3.0  # seconds: no wait in this file may take longer

USER: Any = USER_MESSAGES


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
