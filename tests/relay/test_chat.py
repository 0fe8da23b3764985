"""Chat completions through the daemon to the simulator, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest

from daemon import simulator
from daemon.dialects.chat import chat_usage
from daemon.testing import TEST_KEY, RunningDaemon

MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name three prime numbers."},
]
PINNED = {"X-Sim-Cached-Tokens": "4"}  # the simulator's cache is stateful; pin it per request


def async_client(meter: RunningDaemon, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=0, **kw)


def sync_client(meter: RunningDaemon, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=0, **kw)


def expected_row(usage: dict[str, Any]) -> dict[str, Any]:
    u = chat_usage(usage)
    return {
        "input_tokens": u.input_tokens,
        "cached_input_tokens": u.cached_input_tokens,
        "output_tokens": u.output_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "image_input_tokens": u.image_input_tokens,
        "reported_cost_ticks": u.reported_cost_ticks,
    }


def pick(row: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in keys}


def assert_token_metrics(
    meter: RunningDaemon, model: str, usage: dict[str, Any], times: int = 1
) -> None:
    u = chat_usage(usage)
    for kind, value in (
        ("input", u.input_tokens),
        ("cached_input", u.cached_input_tokens),
        ("output", u.output_tokens),
        ("reasoning", u.reasoning_tokens),
    ):
        got = meter.metric("xai_meter_tokens_total", provider="xai", model=model, type=kind)
        assert (got or 0) == value * times, kind


async def direct_usage(sim: simulator.Simulator, model: str) -> dict[str, Any]:
    """What the simulator bills for MESSAGES, asked directly (not through the daemon)."""
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key=TEST_KEY, max_retries=0)
    resp = await client.chat.completions.create(
        model=model, messages=MESSAGES, extra_headers=PINNED
    )
    await client.close()
    assert resp.usage is not None
    return resp.usage.model_dump()


async def test_async_non_streaming(meter: RunningDaemon, sim: simulator.Simulator) -> None:
    client = async_client(meter)
    raw = await client.chat.completions.with_raw_response.create(
        model="grok-4-fast", messages=MESSAGES, extra_headers=PINNED
    )
    resp = raw.parse()
    assert resp.model == "grok-4-fast-reasoning"  # the resolved name, from the upstream
    usage = resp.usage.model_dump() if resp.usage else {}
    assert usage["completion_tokens_details"]["reasoning_tokens"] > 0
    assert raw.http_response.content == sim.state.sent[-1]  # byte for byte what it sent
    [row] = await meter.rows(1)
    assert pick(row, expected_row(usage)) == expected_row(usage)
    assert (
        row["output_tokens"]
        == usage["completion_tokens"] + usage["completion_tokens_details"]["reasoning_tokens"]
    )
    assert (row["requested_model"], row["model"], row["status"], row["stream"]) == (
        "grok-4-fast",
        "grok-4-fast-reasoning",
        200,
        0,
    )
    assert row["fingerprint"] == resp.system_fingerprint and row["response_id"] == resp.id
    assert row["metered"] == 1 and row["error"] is None and row["ttft_ms"] is None
    assert row["duration_ms"] >= row["upstream_ms"] > 0
    assert row["request_id"] == raw.http_response.headers["x-request-id"]
    assert (
        meter.metric(
            "xai_meter_requests_total",
            provider="xai",
            endpoint="chat.completions",
            model="grok-4-fast-reasoning",
            code="200",
        )
        == 1
    )
    assert_token_metrics(meter, "grok-4-fast-reasoning", usage)
    assert (
        meter.metric(
            "xai_meter_request_duration_seconds_count",
            provider="xai",
            model="grok-4-fast-reasoning",
        )
        == 1
    )
    assert (
        meter.metric(
            "gen_ai_client_token_usage_sum",
            gen_ai_provider_name="x_ai",
            gen_ai_operation_name="chat",
            gen_ai_response_model="grok-4-fast-reasoning",
            gen_ai_token_type="output",
        )
        == row["output_tokens"]
    )
    await client.close()


async def test_sync_client_non_streaming(meter: RunningDaemon) -> None:
    def call() -> Any:
        with sync_client(meter) as client:
            return client.chat.completions.create(
                model="grok-3", messages=MESSAGES, extra_headers=PINNED
            )

    resp = await asyncio.to_thread(call)
    [row] = await meter.rows(1)
    assert resp.usage is not None
    assert pick(row, expected_row(resp.usage.model_dump())) == expected_row(resp.usage.model_dump())
    assert row["model"] == "grok-3" and row["reasoning_tokens"] == 0


@pytest.mark.parametrize("include_usage", [True, False])
async def test_async_streaming(
    meter: RunningDaemon, sim: simulator.Simulator, include_usage: bool
) -> None:
    client = async_client(meter)
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = []
    raw_stream = await client.chat.completions.with_raw_response.create(
        model="grok-4-fast", messages=MESSAGES, stream=True, extra_headers=PINNED, **extra
    )
    body = b""
    async for part in raw_stream.http_response.aiter_bytes():
        body += part
    sent = sim.state.sent[-1]
    upstream_body = sim.state.requests[-1].body
    assert b'"include_usage":true' in upstream_body  # the daemon always asks for usage
    if include_usage:
        assert body == sent
    else:
        # Exactly the stream the app asked for: the simulator's, minus its usage-only chunk.
        frames = [f for f in sent.split(b"\n\n") if f]
        assert [f for f in body.split(b"\n\n") if f] == [
            f for f in frames if b'"choices":[]' not in f
        ]
        assert b'"usage"' not in body
    stream = await client.chat.completions.create(
        model="grok-4-fast", messages=MESSAGES, stream=True, extra_headers=PINNED, **extra
    )
    async for chunk in stream:
        chunks.append(chunk)
    rows = await meter.rows(2)
    usage = await direct_usage(sim, "grok-4-fast")
    for row in rows:
        assert pick(row, expected_row(usage)) == expected_row(usage)
        assert row["stream"] == 1 and row["model"] == "grok-4-fast-reasoning"
        assert row["fingerprint"] and row["metered"] == 1
        assert 0 < row["ttft_ms"] <= row["duration_ms"]
    assert (chunks[-1].usage is not None) == include_usage
    assert_token_metrics(meter, "grok-4-fast-reasoning", usage, times=2)
    assert (
        meter.metric(
            "xai_meter_time_to_first_token_seconds_count",
            provider="xai",
            model="grok-4-fast-reasoning",
        )
        == 2
    )
    await client.close()


@pytest.mark.parametrize("include_usage", [True, False])
async def test_sync_client_streaming(
    meter: RunningDaemon, sim: simulator.Simulator, include_usage: bool
) -> None:
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}

    def call() -> list[Any]:
        with sync_client(meter) as client:
            return list(
                client.chat.completions.create(
                    model="grok-3", messages=MESSAGES, stream=True, extra_headers=PINNED, **extra
                )
            )

    chunks = await asyncio.to_thread(call)
    [row] = await meter.rows(1)
    usage = await direct_usage(sim, "grok-3")
    assert pick(row, expected_row(usage)) == expected_row(usage)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (chunks[-1].usage is not None) == include_usage


@pytest.mark.parametrize("split", [1, 7, 64])
async def test_stream_split_at_awkward_boundaries(
    meter: RunningDaemon, sim: simulator.Simulator, split: int
) -> None:
    client = async_client(meter)
    stream = await client.chat.completions.create(
        model="grok-3-mini",
        messages=MESSAGES,
        stream=True,
        reasoning_effort="high",
        extra_headers={**PINNED, "X-Sim-Split": str(split)},
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text
    [row] = await meter.rows(1)
    direct = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key=TEST_KEY, max_retries=0)
    resp = await direct.chat.completions.create(
        model="grok-3-mini", messages=MESSAGES, reasoning_effort="high", extra_headers=PINNED
    )
    assert resp.usage is not None
    assert pick(row, expected_row(resp.usage.model_dump())) == expected_row(resp.usage.model_dump())
    assert row["model"] == resp.model
    await client.close()
    await direct.close()


async def test_gzip_response_reaches_the_client_intact(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{meter.base_url}/chat/completions",
            json={"model": "grok-3", "messages": MESSAGES},
            headers={
                "Authorization": f"Bearer {TEST_KEY}",
                "Accept-Encoding": "gzip",
                "X-Sim-Gzip": "1",
                **PINNED,
            },
        ) as resp,
    ):
        assert resp.headers["content-encoding"] == "gzip" and resp.status == 200
        body = await resp.json()  # aiohttp decoded the gzip we relayed untouched
    assert body["usage"]["prompt_tokens"] > 0
    assert json.dumps(body).encode() == json.dumps(json.loads(sim.state.sent[-1])).encode()
    [row] = await meter.rows(1)
    assert row["metered"] == 1 and row["input_tokens"] == body["usage"]["prompt_tokens"]


async def test_gzip_stream_is_metered(meter: RunningDaemon) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{meter.base_url}/chat/completions",
            json={
                "model": "grok-3",
                "messages": MESSAGES,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            headers={
                "Authorization": f"Bearer {TEST_KEY}",
                "Accept-Encoding": "gzip",
                "X-Sim-Gzip": "1",
                **PINNED,
            },
        ) as resp,
    ):
        assert resp.headers.get("content-encoding") == "gzip"
        assert b"[DONE]" in await resp.read()
    [row] = await meter.rows(1)
    assert row["metered"] == 1 and row["input_tokens"] > 0


async def test_headers_pass_through_and_ours_are_stripped(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    client = async_client(meter, default_headers={"X-Meter-App": "checkout", "X-Custom": "1"})
    await client.chat.completions.create(model="grok-3", messages=MESSAGES)
    got = sim.state.requests[-1]
    assert got.headers["Authorization"] == f"Bearer {TEST_KEY}"
    assert got.headers["X-Custom"] == "1" and "X-Meter-App" not in got.headers
    assert got.path == "/v1/chat/completions"
    [row] = await meter.rows(1)
    assert row["app"] == "checkout" and row["key_id"].startswith("k_")
    assert TEST_KEY not in str(row)
    await client.close()


async def test_query_string_and_other_endpoints_are_relayed(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    client = async_client(meter)
    models = await client.models.list(extra_query={"limit": "5"})
    assert any(m.id.startswith("grok") for m in models.data)
    assert sim.state.requests[-1].query == "limit=5"
    [row] = await meter.rows(1)
    assert (row["endpoint"], row["status"], row["metered"], row["input_tokens"]) == (
        "models",
        200,
        1,
        None,
    )
    assert (
        meter.metric(
            "xai_meter_requests_total", provider="xai", endpoint="models", model="none", code="200"
        )
        == 1
    )
    await client.close()


async def test_forced_key_is_added_only_when_the_client_sent_none(
    sim: simulator.Simulator, start_daemon: Any
) -> None:
    meter = await start_daemon(sim.url, api_key="xai-daemon-key")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{meter.base_url}/chat/completions", json={"model": "grok-3", "messages": MESSAGES}
        ) as r1:
            assert r1.status == 200
        assert sim.state.requests[-1].headers["Authorization"] == "Bearer xai-daemon-key"
        async with http.post(
            f"{meter.base_url}/chat/completions",
            json={"model": "grok-3", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {TEST_KEY}"},
        ) as r2:
            assert r2.status == 200
        assert sim.state.requests[-1].headers["Authorization"] == f"Bearer {TEST_KEY}"
    rows = await meter.rows(2)
    assert rows[0]["key_id"] != rows[1]["key_id"]


async def test_paths_outside_v1_get_a_clear_404(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    before = len(sim.state.requests)
    async with aiohttp.ClientSession() as http, http.get(f"{meter.url}/admin/secrets") as resp:
        assert resp.status == 404 and "/v1/" in (await resp.json())["error"]
    assert len(sim.state.requests) == before
