"""Every way a gRPC call can end badly still ends in exactly one row that says how; the client
gets what the upstream (or its own deadline) said."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpc
import pytest
from xai_sdk import AsyncClient
from xai_sdk.chat import user
from xai_sdk.proto import chat_pb2

from daemon import simulator
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

PROMPT = "How many tokens does a metering relay count?"
NO_RETRY = [("grpc.enable_retries", 0)]


def client(target: str, **metadata: str) -> AsyncClient:
    return AsyncClient(
        api_key=TEST_KEY,
        api_host=target,
        use_insecure_channel=True,
        metadata=tuple((k.replace("_", "-"), v) for k, v in metadata.items()),
        channel_options=NO_RETRY,
    )


def ending(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["status"], row["error"], row["metered"], row["unmetered_reason"])


def chat_of(sdk: AsyncClient) -> Any:
    chat = sdk.chat.create(model="grok-4.3")
    chat.append(user(PROMPT))
    return chat


async def test_a_stream_cut_before_its_last_chunk_is_unmetered(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator
) -> None:
    chat = chat_of(client(grpc_meter.grpc_address, x_sim_cut_after="2"))
    seen = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _response, _chunk in chat.stream():
            seen += 1
    assert (caught.value.code(), seen) == (grpc.StatusCode.INTERNAL, 2)
    assert "Simulated reset" in (caught.value.details() or "")
    [row] = await grpc_meter.rows(1)
    assert ending(row) == (500, "upstream_stream_cut", 0, "incomplete")
    assert (row["upstream_error"], row["input_tokens"], row["stream"]) == ("INTERNAL", None, 1)


async def test_a_cancelled_stream_leaves_one_unmetered_row_and_cancels_upstream(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator
) -> None:
    chat = chat_of(client(grpc_meter.grpc_address, x_sim_stall="body"))

    got_one = asyncio.Event()

    async def first_chunk() -> None:
        async for _response, _chunk in chat.stream():
            got_one.set()  # and on to read the next chunk, which stalls: cancelled in there

    reader = asyncio.ensure_future(first_chunk())
    async with asyncio.timeout(5):
        await got_one.wait()  # the first chunk came through; the rest stalls
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    async with asyncio.timeout(5):
        await grpc_sim.state.abandoned.wait()  # the upstream call was cancelled too
    [row] = await grpc_meter.rows(1)
    # The client has CANCELLED: its HTTP status, 499 (nginx's "client closed request").
    assert ending(row) == (499, "client_disconnect", 0, "incomplete")
    assert row["stream"] == 1 and row["ttft_ms"] is not None


async def test_the_deadline_crosses_the_hop(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator
) -> None:
    sdk = AsyncClient(
        api_key=TEST_KEY,
        api_host=grpc_meter.grpc_address,
        use_insecure_channel=True,
        metadata=(("x-sim-stall", "headers"),),
        channel_options=NO_RETRY,
        timeout=0.3,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat_of(sdk).sample()
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    async with asyncio.timeout(5):
        await grpc_sim.state.abandoned.wait()  # the upstream call ended at the same deadline
    [row] = await grpc_meter.rows(1)
    assert ending(row) == (504, "upstream_timeout", 0, "no_response")
    assert row["error_detail"] == "deadline exceeded"


async def test_an_answer_that_does_not_parse_is_relayed_and_unmetered(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator
) -> None:
    request = chat_pb2.GetCompletionsRequest(model="grok-4.3")
    request.messages.add(role=chat_pb2.ROLE_USER).content.add(text=PROMPT)
    async with grpc.aio.insecure_channel(grpc_meter.grpc_address) as channel:
        answer = await channel.unary_unary("/xai_api.Chat/GetCompletion")(
            request.SerializeToString(),
            metadata=(("authorization", f"Bearer {TEST_KEY}"), ("x-sim-malformed", "1")),
        )
    assert answer == grpc_sim.state.sent[-1][5:] == simulator.grpc_server.MALFORMED
    [row] = await grpc_meter.rows(1)
    assert ending(row) == (200, None, 0, "parser_error")


async def test_an_answer_without_usage_is_unmetered(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator
) -> None:
    answer = await chat_of(client(grpc_meter.grpc_address, x_sim_usage="none")).sample()
    assert answer.content
    [row] = await grpc_meter.rows(1)
    assert ending(row) == (200, None, 0, "no_usage")
    assert (row["model"], row["fingerprint"]) == ("grok-4.3", "fp_43e4f5a604")


async def test_an_unreachable_upstream_is_unavailable_and_recorded(
    start_grpc_daemon: DaemonFactory,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        meter = await start_grpc_daemon(grpc__upstream=f"http://127.0.0.1:{port}")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await chat_of(client(meter.grpc_address)).sample()
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    [row] = await meter.rows(1)
    assert ending(row) == (503, "upstream_unreachable", 1, None)
    assert row["upstream_error"] is None


async def test_shutdown_drains_calls_in_flight_within_the_grace_period(
    start_grpc_daemon: DaemonFactory, grpc_sim: simulator.GrpcSimulator
) -> None:
    meter = await start_grpc_daemon(shutdown__grace_period=5)
    call = asyncio.ensure_future(
        chat_of(client(meter.grpc_address, x_sim_stall="headers")).sample()
    )
    async with asyncio.timeout(5):
        await grpc_sim.state.stalled.wait()
    stopping = asyncio.ensure_future(meter.daemon.stop())
    grpc_relay = meter.daemon.grpc
    assert grpc_relay is not None
    for _ in range(1000):  # a few loop iterations: the drain has begun
        await asyncio.sleep(0)
        if grpc_relay.draining:
            break
    assert grpc_relay.draining and not call.done()
    grpc_sim.state.release.set()  # the call in flight finishes during the grace period
    answer = await call
    await stopping
    [row] = await meter.rows(1)
    assert ending(row) == (200, None, 1, None)
    assert row["input_tokens"] == answer.usage.prompt_tokens == 15


@pytest.mark.parametrize(
    ("stall", "unmetered"), [("body", "incomplete"), ("headers", "no_response")]
)
async def test_shutdown_cancels_what_the_grace_period_did_not_finish(
    start_grpc_daemon: DaemonFactory,
    grpc_sim: simulator.GrpcSimulator,
    stall: str,
    unmetered: str | None,
) -> None:
    """At the end of the grace period the relay ends its calls itself with CANCELLED, which
    xai-sdk (its own channel options: retries on) does not retry, rather than leave them to
    grpc's stop, whose UNAVAILABLE it would retry on the next daemon (a billed call run
    twice). A stream stalled mid-answer, and a unary call stalled before its headers."""
    meter = await start_grpc_daemon(shutdown__grace_period=0.05)
    sdk = AsyncClient(
        api_key=TEST_KEY,
        api_host=meter.grpc_address,
        use_insecure_channel=True,
        metadata=(("x-sim-stall", stall),),
    )
    chat = chat_of(sdk)

    async def read() -> None:
        if stall == "headers":
            await chat.sample()
            return
        async for _response, _chunk in chat.stream():
            pass

    reader = asyncio.ensure_future(read())
    async with asyncio.timeout(5):
        await grpc_sim.state.stalled.wait()
    await meter.daemon.stop()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await reader
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.CANCELLED,
        "xai-meter is shutting down",
    )
    [row] = await meter.rows(1)
    assert ending(row) == (499, "shutdown", 0, unmetered)
    grpc_sim.state.release.set()
