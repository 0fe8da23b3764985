"""xAI's own SDK (xai-sdk, sync and async) through the daemon's gRPC listener to the simulator's
gRPC face: what the app gets is what the simulator sent, and every call is one exact row."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import grpc
import pytest
from xai_sdk import AsyncClient, Client
from xai_sdk.chat import user
from xai_sdk.proto import chat_pb2, image_pb2

from daemon import simulator
from daemon.testing import TEST_KEY, RunningDaemon

PROMPT = "How many tokens does a metering relay count?"
# What the simulator answers PROMPT with on grok-4.3 (a fresh prompt cache): the oracle.
TOKENS = {"input_tokens": 15, "cached_input_tokens": 0, "output_tokens": 84, "reasoning_tokens": 75}
TICKS = 2287500
FINGERPRINT = "fp_43e4f5a604"


def client(target: str) -> AsyncClient:
    return AsyncClient(api_key=TEST_KEY, api_host=target, use_insecure_channel=True)


def sync_client(target: str) -> Client:
    return Client(api_key=TEST_KEY, api_host=target, use_insecure_channel=True)


def sent_message(sim_state: Any, index: int = -1) -> bytes:
    """The one message the simulator sent for a unary call (its 5-byte gRPC prefix dropped)."""
    framed: bytes = sim_state.sent[index]
    assert int.from_bytes(framed[1:5], "big") == len(framed) - 5
    return framed[5:]


def pick(row: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: row[name] for name in names}


async def test_async_sample_is_what_the_simulator_sent_and_one_exact_row(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator
) -> None:
    direct_chat = client(grpc_sim.target).chat.create(model="grok-4.3")
    direct_chat.append(user(PROMPT))
    direct = await direct_chat.sample()
    grpc_sim.state.prompt_cache.clear()  # the relayed call meets the same cold cache

    chat = client(grpc_meter.grpc_address).chat.create(model="grok-4.3")
    chat.append(user(PROMPT))
    relayed = await chat.sample()

    # byte for byte what the simulator sent, and the same answer as calling it directly
    assert relayed.proto.SerializeToString() == sent_message(grpc_sim.state)
    sent = chat_pb2.GetChatCompletionResponse.FromString(sent_message(grpc_sim.state))
    assert sent == relayed.proto
    assert (relayed.content, relayed.usage, relayed.system_fingerprint) == (
        direct.content,
        direct.usage,
        direct.system_fingerprint,
    )
    # metadata crossed: the key and the SDK's own, not the daemon's user-agent
    seen = grpc_sim.state.requests[-1].headers
    assert seen["authorization"] == f"Bearer {TEST_KEY}"
    assert "xai-sdk-version" in seen
    assert "xai-meter" not in seen.get("user-agent", "")

    [row] = await grpc_meter.rows(1)
    assert pick(row, *TOKENS) == TOKENS
    assert pick(
        row,
        "transport",
        "path",
        "endpoint",
        "method",
        "status",
        "stream",
        "model",
        "requested_model",
        "fingerprint",
        "service_tier",
        "response_id",
        "reported_cost_ticks",
        "cost_ticks",
        "cost_source",
        "error",
        "metered",
    ) == {
        "transport": "grpc",
        "path": "/xai_api.Chat/GetCompletion",
        "endpoint": "chat.completions",
        "method": "POST",
        "status": 200,
        "stream": 0,
        "model": "grok-4.3",
        "requested_model": "grok-4.3",
        "fingerprint": FINGERPRINT,
        "service_tier": "default",
        "response_id": relayed.id,
        "reported_cost_ticks": TICKS,
        "cost_ticks": TICKS,
        "cost_source": "reported",
        "error": None,
        "metered": 1,
    }
    assert row["key_id"] == grpc_meter.daemon.keys.key_id(TEST_KEY)
    assert row["key_id"].startswith("k_") and TEST_KEY not in str(row)


async def test_async_stream_bills_the_last_chunk_once(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator
) -> None:
    chat = client(grpc_meter.grpc_address).chat.create(model="grok-4.3")
    chat.append(user(PROMPT))
    responses = [response async for response, _chunk in chat.stream()]
    chunks = len(responses)
    assert chunks > 2
    assert responses[-1].usage.prompt_tokens == 15 and responses[-1].usage.reasoning_tokens == 75
    [row] = await grpc_meter.rows(1)
    assert pick(row, *TOKENS) == TOKENS
    columns = ("path", "stream", "reported_cost_ticks", "fingerprint", "error", "metered")
    assert pick(row, *columns) == {
        "path": "/xai_api.Chat/GetCompletionChunk",
        "stream": 1,
        "reported_cost_ticks": TICKS,
        "fingerprint": FINGERPRINT,
        "error": None,
        "metered": 1,
    }
    assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["duration_ms"]
    # every chunk passed untouched: the simulator's frames, as the SDK parsed them
    assert len(grpc_sim.state.sent[-1]) > 5 * chunks


async def test_sync_client_sample_and_stream(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator
) -> None:
    def run() -> tuple[Any, Any]:
        sdk = sync_client(grpc_meter.grpc_address)
        chat = sdk.chat.create(model="grok-4.3")
        chat.append(user(PROMPT))
        sampled = chat.sample()
        grpc_sim.state.prompt_cache.clear()
        streamed = [response for response, _chunk in chat.stream()]
        return sampled, streamed[-1]

    sampled, streamed = await asyncio.to_thread(run)
    assert sampled.usage == streamed.usage and sampled.content == streamed.content
    rows = await grpc_meter.rows(2)
    assert [(r["path"], r["stream"]) for r in rows] == [
        ("/xai_api.Chat/GetCompletion", 0),
        ("/xai_api.Chat/GetCompletionChunk", 1),
    ]
    for row in rows:
        assert pick(row, *TOKENS) == TOKENS
        assert (row["reported_cost_ticks"], row["transport"], row["metered"]) == (TICKS, "grpc", 1)


async def test_deferred_is_billed_once_at_done_and_linked(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator
) -> None:
    grpc_sim.state.deferred_polls = 2
    chat = client(grpc_meter.grpc_address).chat.create(model="grok-4.3")
    chat.append(user(PROMPT))
    answer = await chat.defer(interval=datetime.timedelta(milliseconds=1))
    assert answer.usage.prompt_tokens == 15
    rows = await grpc_meter.rows(4)
    start, *polls, done = rows
    assert pick(start, "path", "endpoint", "deferred", "input_tokens", "metered") == {
        "path": "/xai_api.Chat/StartDeferredCompletion",
        "endpoint": "chat.completions",
        "deferred": 1,
        "input_tokens": None,
        "metered": 1,
    }
    assert [(p["endpoint"], p["input_tokens"], p["metered"]) for p in polls] == [
        ("chat.deferred", None, 1),
        ("chat.deferred", None, 1),
    ]
    assert pick(done, "path", "deferred_state", "linked_id", "reported_cost_ticks") == {
        "path": "/xai_api.Chat/GetDeferredCompletion",
        "deferred_state": "result",
        "linked_id": start["id"],
        "reported_cost_ticks": TICKS,
    }
    assert pick(done, *TOKENS) == TOKENS
    await grpc_meter.daemon.ledger.drained()
    final = {r["id"]: r for r in await grpc_meter.rows(4)}
    assert final[start["id"]]["deferred_state"] == "completed"


async def test_stored_completion_is_never_billed(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator
) -> None:
    sdk = client(grpc_meter.grpc_address)
    chat = sdk.chat.create(model="grok-4.3", store_messages=True)
    chat.append(user(PROMPT))
    first = await chat.sample()
    [stored] = await sdk.chat.get_stored_completion(first.id)
    assert stored.content == first.content
    _, replay = await grpc_meter.rows(2)
    assert pick(replay, "path", "endpoint", "status", "input_tokens", "cost_ticks", "metered") == {
        "path": "/xai_api.Chat/GetStoredCompletion",
        "endpoint": "responses",
        "status": 200,
        "input_tokens": None,
        "cost_ticks": None,
        "metered": 1,
    }


async def test_image_is_billed_per_image_at_its_reported_cost(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator
) -> None:
    image = await client(grpc_meter.grpc_address).image.sample(
        "a relay counting tokens", "grok-imagine-image"
    )
    assert image.url.startswith("https://")
    sent = image_pb2.ImageResponse.FromString(sent_message(grpc_sim.state))
    assert sent.images[0].url == image.url
    [row] = await grpc_meter.rows(1)
    assert pick(
        row, "path", "endpoint", "model", "images", "input_tokens", "reported_cost_ticks"
    ) == {
        "path": "/xai_api.Image/GenerateImage",
        "endpoint": "images.generations",
        "model": "grok-imagine-image",
        "images": 1,
        "input_tokens": 0,
        "reported_cost_ticks": 200_000_000,
    }


@pytest.mark.parametrize(
    ("status", "code", "http"),
    [
        ("429", grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        ("404", grpc.StatusCode.NOT_FOUND, 404),
        ("503", grpc.StatusCode.UNAVAILABLE, 503),
    ],
)
async def test_status_errors_come_back_with_their_code_and_details(
    grpc_meter: RunningDaemon,
    grpc_sim: simulator.GrpcSimulator,
    status: str,
    code: grpc.StatusCode,
    http: int,
) -> None:
    sdk = AsyncClient(
        api_key=TEST_KEY,
        api_host=grpc_meter.grpc_address,
        use_insecure_channel=True,
        metadata=(("x-sim-status", status),),
        channel_options=[("grpc.enable_retries", 0)],
    )
    chat = sdk.chat.create(model="grok-4.3")
    chat.append(user(PROMPT))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.sample()
    assert caught.value.code() is code
    assert caught.value.details() == f"Simulated failure (X-Sim-Status: {status})"
    [row] = await grpc_meter.rows(1)
    assert pick(row, "status", "error", "upstream_error", "metered", "input_tokens") == {
        "status": http,
        "error": "http_error",
        "upstream_error": code.name,
        "metered": 1,  # an error answer carries no charge
        "input_tokens": None,
    }
