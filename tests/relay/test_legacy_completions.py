"""Legacy text completions through the daemon: OpenAI's `/v1/completions` with the openai SDK,
Anthropic's `/v1/complete` with plain aiohttp, both against the simulator, billed exactly.

Prices are the simulator's grok-3 listing (xai-api.md "Listings"): 30000 / 7500 / 150000 ticks
per input / cached / output token. Every prompt is forced to 40 tokens (8 of them cached where
the shape has a cache) and every reply cut to 5 tokens by the request's own limit, so:

- ``/v1/completions``: (40 - 8)·30000 + 8·7500 + 5·150000 = 1,770,000 ticks, reported by the
  upstream and computed by the daemon alike;
- ``/v1/complete``: 40·30000 + 5·150000 = 1,950,000 ticks, computed (no cost is reported).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import orjson
import pytest

from daemon import simulator
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon, sse_payloads, stream_cut_errors

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
FORCED = {"X-Sim-Prompt-Tokens": "40", "X-Sim-Cached-Tokens": "8"}
COMPLETIONS_TICKS = (40 - 8) * 30000 + 8 * 7500 + 5 * 150000
COMPLETE_TICKS = 40 * 30000 + 5 * 150000


@pytest.fixture
async def priced(sim: simulator.Simulator, start_priced: DaemonFactory) -> RunningDaemon:
    """A daemon with the simulator's listing in force."""
    return await start_priced(sim.url)


def billed_row(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["endpoint"],
        row["input_tokens"],
        row["cached_input_tokens"],
        row["output_tokens"],
        row["cost_ticks"],
        row["computed_cost_ticks"],
        row["metered"],
        row["unmetered_reason"],
    )


async def test_openai_sdk_completions_create(priced: RunningDaemon) -> None:
    assert COMPLETIONS_TICKS == 1_770_000
    client = openai.AsyncOpenAI(base_url=priced.base_url, api_key=TEST_KEY, max_retries=0)
    done = await client.completions.create(
        model="grok-3", prompt="Once upon a time", max_tokens=5, extra_headers=FORCED
    )
    assert done.usage is not None and done.usage.completion_tokens == 5
    [row] = await priced.rows(1)
    assert billed_row(row) == (
        "completions",
        40,
        8,
        5,
        1_770_000,
        1_770_000,
        1,
        None,
    )
    assert (row["reported_cost_ticks"], row["cost_source"]) == (1_770_000, "reported")
    assert (row["model"], row["response_id"]) == (done.model, done.id)
    assert row["fingerprint"] == done.system_fingerprint
    await client.close()


async def test_openai_sdk_completions_stream(priced: RunningDaemon) -> None:
    client = openai.AsyncOpenAI(base_url=priced.base_url, api_key=TEST_KEY, max_retries=0)
    stream = await client.completions.create(
        model="grok-3", prompt="Once upon a time", max_tokens=5, stream=True, extra_headers=FORCED
    )
    chunks = [chunk async for chunk in stream]
    # The usage chunk the relay asked for is not passed on: every chunk has its choice.
    assert chunks and all(len(c.choices) == 1 and c.usage is None for c in chunks)
    [row] = await priced.rows(1)
    assert billed_row(row) == ("completions", 40, 8, 5, 1_770_000, 1_770_000, 1, None)
    assert row["stream"] == 1 and 0 < row["ttft_ms"] <= row["duration_ms"]
    await client.close()


async def test_completions_stream_cut_before_done_is_incomplete(meter: RunningDaemon) -> None:
    """Nov 2024 style (cumulative usage on every chunk), cut after 3 chunks: the counts seen
    are provisional, so nothing is booked."""
    client = openai.AsyncOpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=0)
    with pytest.raises(stream_cut_errors()):
        stream = await client.completions.create(
            model="grok-3",
            prompt="Once upon a time",
            max_tokens=5,
            stream=True,
            extra_headers={**FORCED, "X-Sim-Usage": "every", "X-Sim-Cut-After": "3"},
        )
        async for _ in stream:
            pass
    [row] = await meter.rows(1)
    assert billed_row(row) == ("completions", None, None, None, None, None, 0, "incomplete")
    await client.close()


async def complete(meter: RunningDaemon, stream: bool, **headers: str) -> tuple[int, bytes]:
    body = {
        "model": "grok-3",
        "prompt": "\n\nHuman: Tell me a story\n\nAssistant:",
        "max_tokens_to_sample": 5,
        "stream": stream,
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{meter.base_url}/complete",
            json=body,
            headers={**AUTH, "X-Sim-Prompt-Tokens": "40", **headers},
        ) as r,
    ):
        return r.status, await r.read()


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_complete_is_billed(priced: RunningDaemon, stream: bool) -> None:
    assert COMPLETE_TICKS == 1_950_000
    status, raw = await complete(priced, stream)
    assert status == 200
    if stream:
        last = orjson.loads(sse_payloads(raw)[-1])
        assert last["stop_reason"] == "max_tokens"
    else:
        last = orjson.loads(raw)
    assert last["usage"] == {"input_tokens": 40, "output_tokens": 5}
    [row] = await priced.rows(1)
    assert billed_row(row) == ("complete", 40, 0, 5, 1_950_000, 1_950_000, 1, None)
    assert (row["cost_source"], row["stream"], row["response_id"]) == (
        "computed",
        int(stream),
        last["id"],
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_complete_without_usage_is_unmetered(
    meter: RunningDaemon, stream: bool
) -> None:
    status, _ = await complete(meter, stream, **{"X-Sim-Usage": "none"})
    assert status == 200
    [row] = await meter.rows(1)
    assert billed_row(row) == ("complete", None, None, None, None, None, 0, "no_usage")


async def test_anthropic_complete_stream_cut_is_incomplete(meter: RunningDaemon) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        await complete(meter, True, **{"X-Sim-Cut-After": "2"})
    [row] = await meter.rows(1)
    assert billed_row(row) == ("complete", None, None, None, None, None, 0, "incomplete")
    assert row["error"] == "upstream_stream_cut"
