"""Streams whose bytes differ from the plain case, through the daemon with the openai SDK.

- An upstream that compresses a stream although the relay asked for ``identity``: the usage
  chunk the relay injected is still removed (the stream reaches the client decoded, without
  Content-Encoding), and the ledger has the exact usage.
- CR, CRLF and mixed line endings, split small: the exact usage, on the rewritten (usage
  injected) path and the untouched one."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from daemon import simulator
from daemon.testing import TEST_KEY, RunningDaemon, sse_payloads

MESSAGES: list[Any] = [{"role": "user", "content": "Count to five, slowly."}]
PINNED = {"X-Sim-Prompt-Tokens": "1234", "X-Sim-Cached-Tokens": "200"}


async def direct_output_tokens(sim: simulator.Simulator) -> int:
    """The simulator's completion tokens for MESSAGES, asked without the relay."""
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key=TEST_KEY, max_retries=0)
    resp = await client.chat.completions.create(
        model="grok-4-fast", messages=MESSAGES, extra_headers=PINNED
    )
    await client.close()
    assert resp.usage is not None
    return resp.usage.total_tokens - resp.usage.prompt_tokens


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd", "deflate"])
async def test_sdk_stream_never_sees_the_injected_usage_chunk(
    meter: RunningDaemon, sim: simulator.Simulator, coding: str
) -> None:
    client = openai.AsyncOpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=0)
    stream = await client.chat.completions.create(
        model="grok-4-fast",
        messages=MESSAGES,
        stream=True,
        extra_headers={**PINNED, "X-Sim-Encoding": coding, "X-Sim-Split": "5"},
    )
    chunks = [chunk async for chunk in stream]
    await client.close()
    assert sim.state.requests[-1].headers["Accept-Encoding"] == "identity"
    # The common loop `chunk.choices[0]` works: no chunk without choices, none with usage.
    assert chunks and all(len(c.choices) == 1 and c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    [row] = await meter.rows(1)
    assert (row["input_tokens"], row["cached_input_tokens"]) == (1234, 200)
    assert row["output_tokens"] == await direct_output_tokens(sim)
    assert (row["metered"], row["unmetered_reason"], row["stream"]) == (1, None, 1)


async def test_decoded_stream_is_the_upstreams_minus_the_usage_chunk(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(
            f"{meter.base_url}/chat/completions",
            json={"model": "grok-4-fast", "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {TEST_KEY}", "X-Sim-Encoding": "br", **PINNED},
        ) as resp,
    ):
        assert "Content-Encoding" not in resp.headers and "Content-Length" not in resp.headers
        body = await resp.read()
    sent = sse_payloads(sim.state.sent[-1])  # what the simulator sent, before compressing
    assert sse_payloads(body) == [p for p in sent if '"choices":[]' not in p]
    assert len(sent) == len(sse_payloads(body)) + 1


@pytest.mark.parametrize("newline", ["cr", "crlf", "mixed"])
@pytest.mark.parametrize("include_usage", [False, True])
async def test_sdk_stream_with_any_line_endings_is_metered_exactly(
    meter: RunningDaemon, sim: simulator.Simulator, newline: str, include_usage: bool
) -> None:
    """CR, CRLF and mixed endings, split in 3-byte pieces: the relay's rewritten path (usage
    injected, then removed) and the untouched path both read the exact usage."""
    client = openai.AsyncOpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=0)
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = await client.chat.completions.create(
        model="grok-4-fast",
        messages=MESSAGES,
        stream=True,
        extra_headers={**PINNED, "X-Sim-Newline": newline, "X-Sim-Split": "3"},
        **extra,
    )
    chunks = [chunk async for chunk in stream]
    await client.close()
    usage_chunks = [c for c in chunks if not c.choices]
    assert len(usage_chunks) == int(include_usage)
    [row] = await meter.rows(1)
    assert (row["input_tokens"], row["cached_input_tokens"]) == (1234, 200)
    assert row["output_tokens"] == await direct_output_tokens(sim)
    assert (row["metered"], row["unmetered_reason"]) == (1, None)
    assert row["model"] and row["response_id"] == chunks[0].id


@pytest.mark.parametrize("newline", ["cr", "mixed"])
async def test_responses_stream_with_cr_endings_is_metered_exactly(
    meter: RunningDaemon, sim: simulator.Simulator, newline: str
) -> None:
    """Responses streams are never rewritten: their events are skipped unread until the terminal
    one. CR-ended events used to stay glued there, and the usage was read as malformed."""
    client = openai.AsyncOpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=0)
    stream = await client.responses.create(
        model="grok-4-fast",
        input="Count to five, slowly.",
        stream=True,
        extra_headers={**PINNED, "X-Sim-Newline": newline, "X-Sim-Split": "4"},
    )
    events = [event async for event in stream]
    await client.close()
    final = events[-1]
    assert final.type == "response.completed" and final.response.usage is not None
    [row] = await meter.rows(1)
    assert (row["input_tokens"], row["cached_input_tokens"]) == (1234, 200)
    assert row["output_tokens"] == final.response.usage.output_tokens
    assert (row["metered"], row["unmetered_reason"]) == (1, None)
    assert row["response_id"] == final.response.id
