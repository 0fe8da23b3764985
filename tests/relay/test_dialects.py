"""Responses, deferred, Messages, images and other upstreams, through the daemon, with the real
openai and anthropic SDKs against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from daemon import simulator
from daemon.simulator.wire import error_reply
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def oai(meter: RunningDaemon, prefix: str = "") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{meter.url}{prefix}/v1", api_key=TEST_KEY, max_retries=0)


def ant(meter: RunningDaemon, prefix: str = "") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=f"{meter.url}{prefix}", api_key=TEST_KEY, max_retries=0
    )


def token_metric(meter: RunningDaemon, model: str, kind: str, provider: str = "xai") -> float:
    return meter.metric("xai_meter_tokens_total", provider=provider, model=model, type=kind) or 0


# --- Responses ----------------------------------------------------------------------------


async def test_responses_create_and_follow_up(meter: RunningDaemon) -> None:
    client = oai(meter)
    first = await client.responses.create(
        model="grok-4-fast", input="What is 2+2?", tools=[{"type": "web_search"}]
    )
    second = await client.responses.create(
        model="grok-4-fast", input="And 3+3?", previous_response_id=first.id
    )
    rows = await meter.rows(2)
    for resp, row in zip((first, second), rows, strict=True):
        u = resp.usage
        assert u is not None
        assert (row["endpoint"], row["model"], row["response_id"]) == (
            "responses",
            resp.model,
            resp.id,
        )
        assert row["input_tokens"] == u.input_tokens
        assert row["cached_input_tokens"] == u.input_tokens_details.cached_tokens
        assert row["output_tokens"] == u.output_tokens  # already includes reasoning
        assert row["reasoning_tokens"] == u.output_tokens_details.reasoning_tokens > 0
        assert row["reported_cost_ticks"] == u.model_extra["cost_in_usd_ticks"]
        assert row["metered"] == 1
    details = first.usage.model_extra["server_side_tool_usage_details"]
    assert rows[0]["server_tool_calls"] == details["web_search_calls"] > 0
    assert rows[1]["previous_response_id"] == first.id
    assert rows[1]["input_tokens"] > rows[0]["input_tokens"]  # the replayed history is billed
    await client.close()


async def test_responses_stream(meter: RunningDaemon) -> None:
    client = oai(meter)
    final = None
    async with client.responses.stream(model="grok-4-fast", input="Count to three.") as stream:
        async for event in stream:
            if event.type == "response.completed":
                final = event.response
    assert final is not None and final.usage is not None
    [row] = await meter.rows(1)
    assert (row["stream"], row["input_tokens"], row["output_tokens"]) == (
        1,
        final.usage.input_tokens,
        final.usage.output_tokens,
    )
    assert 0 < row["ttft_ms"] <= row["duration_ms"]
    await client.close()


@pytest.mark.parametrize("status", ["incomplete", "failed"])
async def test_responses_incomplete_and_failed_are_metered(
    meter: RunningDaemon, status: str
) -> None:
    client = oai(meter)
    final = None
    async with client.responses.stream(
        model="grok-3", input="hi", extra_headers={"X-Sim-Response-Status": status}
    ) as stream:
        async for event in stream:
            if event.type == f"response.{status}":
                final = event.response
    assert final is not None and final.usage is not None
    [row] = await meter.rows(1)
    assert row["input_tokens"] == final.usage.input_tokens and row["metered"] == 1
    await client.close()


async def test_stored_response_fetched_twice_costs_nothing(meter: RunningDaemon) -> None:
    client = oai(meter)
    created = await client.responses.create(model="grok-3", input="Remember me.")
    await meter.rows(1)
    tokens = token_metric(meter, "grok-3", "input")
    for _ in range(2):
        again = await client.responses.retrieve(created.id)
        assert again.usage is not None and again.usage.input_tokens == created.usage.input_tokens
    await client.responses.delete(created.id)
    rows = await meter.rows(4)
    for row in rows[1:]:
        assert row["endpoint"] == "responses" and row["status"] == 200
        assert row["input_tokens"] is None and row["cost_ticks"] is None
        assert row["metered"] == 1
    assert [r["method"] for r in rows[1:]] == ["GET", "GET", "DELETE"]
    assert token_metric(meter, "grok-3", "input") == tokens  # nothing added by the fetches
    await client.close()


# --- deferred -----------------------------------------------------------------------------


async def test_deferred_round_trip_is_billed_once(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    sim.state.deferred_polls = 2
    client = oai(meter)
    posted = await client.chat.completions.create(
        model="grok-3",
        messages=[{"role": "user", "content": "later"}],
        extra_body={"deferred": True},
    )
    request_id = posted.model_extra["request_id"]
    statuses = []
    result: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(5):  # bounded: 202, 202, 200, then 404 (available once)
            async with http.get(
                f"{meter.base_url}/chat/deferred-completion/{request_id}", headers=AUTH
            ) as r:
                statuses.append(r.status)
                if r.status == 200:
                    result = await r.json()
    assert statuses == [202, 202, 200, 404, 404]
    rows = await meter.rows(6)
    await meter.daemon.ledger.drained()
    post, *polls = rows
    assert (post["deferred"], post["response_id"], post["input_tokens"]) == (1, request_id, None)
    billed = [r for r in polls if r["input_tokens"] is not None]
    assert len(billed) == 1
    [got] = billed
    assert got["input_tokens"] == result["usage"]["prompt_tokens"]
    assert got["linked_id"] == post["id"] and got["deferred_ms"] > 0
    assert got["model"] == result["model"] and got["fingerprint"] == result["system_fingerprint"]
    state = await meter.daemon.ledger.run_in_writer(
        lambda: (
            meter.daemon.ledger.db()
            .execute("select deferred_state from calls where id = ?", [post["id"]])
            .fetchone()[0]
        )
    )
    assert state == "completed"
    assert token_metric(meter, "grok-3", "input") == result["usage"]["prompt_tokens"]
    await client.close()


# --- Anthropic Messages ------------------------------------------------------------------


async def test_anthropic_sdk_messages_create(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    client = ant(meter)
    msg = await client.messages.create(
        model="grok-3", max_tokens=100, messages=[{"role": "user", "content": "Hello, Claude"}]
    )
    sent = sim.state.requests[-1].headers  # the SDK's own auth header, whichever it uses
    assert sent.get("x-api-key") == TEST_KEY or sent.get("Authorization") == f"Bearer {TEST_KEY}"
    [row] = await meter.rows(1)
    u = msg.usage
    assert (row["endpoint"], row["model"], row["response_id"]) == ("messages", msg.model, msg.id)
    assert row["input_tokens"] == u.input_tokens  # xAI counts cache reads inside input
    assert row["cached_input_tokens"] == (u.cache_read_input_tokens or 0)
    assert row["output_tokens"] == u.output_tokens and row["metered"] == 1
    assert row["key_id"].startswith("k_")
    await client.close()


async def test_anthropic_sdk_messages_stream(meter: RunningDaemon) -> None:
    client = ant(meter)
    async with client.messages.stream(
        model="grok-3", max_tokens=100, messages=[{"role": "user", "content": "Stream, please"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text
    [row] = await meter.rows(1)
    assert (row["stream"], row["input_tokens"], row["output_tokens"]) == (
        1,
        final.usage.input_tokens,
        final.usage.output_tokens,
    )
    assert row["ttft_ms"] is not None and row["metered"] == 1
    await client.close()


def sim_code(status: int) -> str:
    """The ``code`` the simulator's xAI-shaped error body carries for `status`."""
    body: dict[str, str] = orjson.loads(error_reply(status, "").body)
    return body["code"]


async def test_messages_410_is_recorded_as_an_error(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    sim.state.messages_gone = True
    client = ant(meter)
    with pytest.raises(anthropic.APIStatusError) as err:
        await client.messages.create(
            model="grok-3", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 410
    [row] = await meter.rows(1)
    assert (row["status"], row["error"], row["metered"]) == (410, "http_error", 1)
    # the upstream's own code has its column; error_detail is only the relay's words
    assert (row["upstream_error"], row["error_detail"]) == (sim_code(410), None)
    await client.close()


# --- images -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
async def test_images_counted_and_priced_per_image(
    sim: simulator.Simulator, start_priced: DaemonFactory, n: int
) -> None:
    meter = await start_priced(sim.url)
    client = oai(meter)
    resp = await client.images.generate(model="grok-imagine-image", prompt="a meter", n=n)
    assert len(resp.data) == n
    [row] = await meter.rows(1)
    price = next(
        m["image_price"] for m in sim.state.image_models if m["id"] == "grok-imagine-image"
    )
    assert (row["endpoint"], row["images"], row["requested_model"]) == (
        "images.generations",
        n,
        "grok-imagine-image",
    )
    assert row["reported_cost_ticks"] == row["computed_cost_ticks"] == price * n
    assert row["cost_ticks"] == price * n == n * 200_000_000  # $0.02 per image
    await client.close()


# --- other endpoints and upstreams ------------------------------------------------------


async def test_unbilled_endpoints_are_relayed_and_recorded(meter: RunningDaemon) -> None:
    async with aiohttp.ClientSession() as http:
        for method, path, body in (
            ("GET", "/language-models", None),
            ("GET", "/image-generation-models", None),
            ("POST", "/tokenize-text", {"text": "hi", "model": "grok-3"}),
            ("GET", "/api-key", None),
            ("GET", "/brand-new-endpoint", None),
        ):
            async with http.request(
                method, f"{meter.base_url}{path}", json=body, headers=AUTH
            ) as r:
                await r.read()
    rows = await meter.rows(5)
    assert [r["endpoint"] for r in rows] == [
        "language-models",
        "image-generation-models",
        "tokenize-text",
        "api-key",
        "other",
    ]
    assert all(r["cost_ticks"] is None and r["input_tokens"] is None for r in rows)
    assert [r["status"] for r in rows][:4] == [200, 200, 200, 200]
    await meter.daemon.ledger.drained()
    named = await meter.daemon.ledger.run_in_writer(
        lambda: meter.daemon.ledger.db().execute("select key_id, name from api_keys").fetchall()
    )
    assert [tuple(r) for r in named] == [(rows[3]["key_id"], "sim-key")]


@pytest.fixture
async def second_sim() -> AsyncIterator[simulator.Simulator]:
    s = await simulator.start()
    s.state.messages_input_includes_cache = False  # Anthropic's own convention
    try:
        yield s
    finally:
        await s.close()


async def test_other_upstreams_by_prefix(
    sim: simulator.Simulator, second_sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(
        sim.url,
        upstreams={
            "openai": {"base_url": second_sim.url, "prefix": "/openai"},
            "anthropic": {
                "base_url": second_sim.url,
                "prefix": "/anthropic",
                "provider": "anthropic",
            },
        },
    )
    chat = await oai(meter, "/openai").chat.completions.create(
        model="grok-3", messages=[{"role": "user", "content": "via openai"}]
    )
    msg = await ant(meter, "/anthropic").messages.create(
        model="grok-3",
        max_tokens=50,
        extra_headers={"X-Sim-Cached-Tokens": "4"},
        messages=[{"role": "user", "content": "via anthropic with a longer prompt"}],
    )
    assert [r.path for r in second_sim.state.requests] == ["/v1/chat/completions", "/v1/messages"]
    assert sim.state.requests == []
    rows = await meter.rows(2)
    assert [(r["provider"], r["path"]) for r in rows] == [
        ("openai", "/v1/chat/completions"),
        ("anthropic", "/v1/messages"),
    ]
    assert rows[0]["input_tokens"] == chat.usage.prompt_tokens
    u = msg.usage
    cache_read = u.cache_read_input_tokens or 0
    assert cache_read > 0
    assert rows[1]["input_tokens"] == u.input_tokens + cache_read + (
        u.cache_creation_input_tokens or 0
    )  # normalized: input includes cache reads
    assert rows[1]["cached_input_tokens"] == cache_read
    assert (
        meter.metric(
            "xai_meter_requests_total",
            provider="openai",
            endpoint="chat.completions",
            model=chat.model,
            code="200",
        )
        == 1
    )


async def raw_http(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    await writer.wait_closed()
    return head


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /evil/v1/models HTTP/1.1",  # a prefix no upstream has
        b"GET //evil.example/v1/models HTTP/1.1",  # a host smuggled into the path
        b"GET /http://evil.example/v1/models HTTP/1.1",  # a full URL in the path
        b"GET /v1/../../evil/v1/models HTTP/1.1",  # dot segments
        b"GET /v1/%2e%2e/evil HTTP/1.1",
        b"GET http://evil.example/v1/models HTTP/1.1",  # absolute-form target
    ],
)
async def test_paths_outside_configured_upstreams_never_leave(
    meter: RunningDaemon, sim: simulator.Simulator, request_line: bytes
) -> None:
    head = await raw_http(
        meter.url,
        request_line + b"\r\nHost: evil.example\r\n"
        b"Authorization: Bearer " + TEST_KEY.encode() + b"\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 404")
    assert sim.state.requests == []


async def test_spoofed_host_header_goes_to_the_configured_upstream(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    head = await raw_http(
        meter.url,
        b"GET /v1/models HTTP/1.1\r\nHost: evil.example\r\n"
        b"Authorization: Bearer " + TEST_KEY.encode() + b"\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 200")
    [got] = sim.state.requests  # it reached the configured upstream, and nothing else did
    assert got.path == "/v1/models"
    assert got.headers["Host"] != "evil.example"
