"""The gRPC face's front: keys, x-sim-* faults from metadata (REST's own parser), the recorded
calls, unknown methods; through the real xai-sdk where it shows what an app sees."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from xai_sdk import AsyncClient, Client
from xai_sdk.chat import user
from xai_sdk.proto import chat_pb2, chat_pb2_grpc

from daemon.simulator import INVALID_KEY, GrpcSimulator

AUTH = (("authorization", "Bearer test"),)
REQUEST = chat_pb2.GetCompletionsRequest(
    model="grok-4.3",
    messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.Content(text="hi")])],
)


def _client(grpc_sim: GrpcSimulator, *metadata: tuple[str, str], key: str = "test") -> Client:
    return Client(
        api_key=key, api_host=grpc_sim.target, use_insecure_channel=True, metadata=metadata
    )


def _sample(client: Client) -> object:
    try:
        chat = client.chat.create(model="grok-4.3")
        chat.append(user("hi"))
        return chat.sample()
    finally:
        client.close()


async def _status_of(
    stub: chat_pb2_grpc.ChatStub, *metadata: tuple[str, str]
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.GetCompletion(REQUEST, metadata=metadata)
    return failed.value


async def test_keys_missing_and_invalid(channel: grpc.aio.Channel, grpc_sim: GrpcSimulator) -> None:
    stub = chat_pb2_grpc.ChatStub(channel)
    missing = await _status_of(stub)
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
    assert missing.details() == "No API key provided. Send it as `Authorization: Bearer <key>`."
    with pytest.raises(grpc.RpcError) as invalid:
        await asyncio.to_thread(_sample, _client(grpc_sim, key=INVALID_KEY))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Incorrect API key provided" in invalid.value.details()


async def test_injected_status_reaches_the_sdk_with_its_code(grpc_sim: GrpcSimulator) -> None:
    with pytest.raises(grpc.RpcError) as limited:
        await asyncio.to_thread(_sample, _client(grpc_sim, ("x-sim-status", "429")))
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limited.value.details() == "Simulated failure (X-Sim-Status: 429)"
    assert len(grpc_sim.state.requests) == 1  # not retried: only UNAVAILABLE is


async def test_errors_of_the_request_itself(channel: grpc.aio.Channel) -> None:
    stub = chat_pb2_grpc.ChatStub(channel)
    unknown = chat_pb2.GetCompletionsRequest(model="grok-99", messages=REQUEST.messages)
    with pytest.raises(grpc.aio.AioRpcError) as missing_model:
        await stub.GetCompletion(unknown, metadata=AUTH)
    assert missing_model.value.code() == grpc.StatusCode.NOT_FOUND
    assert "grok-99 does not exist" in (missing_model.value.details() or "")
    bad = await _status_of(stub, *AUTH, ("x-sim-cut-after", "soon"))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.details() == "X-Sim-Cut-After must be a whole number, got 'soon'"
    empty = chat_pb2.GetCompletionsRequest(model="grok-4.3")
    with pytest.raises(grpc.aio.AioRpcError) as no_messages:
        await stub.GetCompletion(empty, metadata=AUTH)
    assert no_messages.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # REST's 422


async def test_overloaded_until_the_sdks_own_retries_get_through(grpc_sim: GrpcSimulator) -> None:
    response = await asyncio.to_thread(_sample, _client(grpc_sim, ("x-sim-overloaded", "2")))
    assert response.usage.completion_tokens > 0
    attempts = grpc_sim.state.requests_to("/xai_api.Chat/GetCompletion")
    assert [r.headers.get("grpc-previous-rpc-attempts") for r in attempts] == [None, "1", "2"]


async def test_a_cut_stream_ends_internal_after_n_messages(
    axai: AsyncClient, grpc_sim: GrpcSimulator, channel: grpc.aio.Channel
) -> None:
    stub = chat_pb2_grpc.ChatStub(channel)
    call = stub.GetCompletionChunk(REQUEST, metadata=(*AUTH, ("x-sim-cut-after", "3")))
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as cut:
        async for chunk in call:
            got.append(chunk)
    assert len(got) == 3 and not any(c.HasField("usage") for c in got)
    assert cut.value.code() == grpc.StatusCode.INTERNAL
    assert cut.value.details() == "Simulated reset (X-Sim-Cut-After: 3) after 3 messages"
    assert grpc_sim.state.sent[-1] == b"".join(
        b"\x00" + c.ByteSize().to_bytes(4, "big") + c.SerializeToString() for c in got
    )
    unary = await _status_of(stub, *AUTH, ("x-sim-cut-after", "0"))
    assert unary.code() == grpc.StatusCode.INTERNAL and grpc_sim.state.sent[-1] == b""


async def test_usage_absent_and_usage_on_every_chunk(channel: grpc.aio.Channel) -> None:
    stub = chat_pb2_grpc.ChatStub(channel)
    bare = await stub.GetCompletion(REQUEST, metadata=(*AUTH, ("x-sim-usage", "none")))
    assert not bare.HasField("usage") and bare.outputs[0].message.content
    chunks = [
        c async for c in stub.GetCompletionChunk(REQUEST, metadata=(*AUTH, ("x-sim-usage", "none")))
    ]
    assert not any(c.HasField("usage") for c in chunks)
    every = [
        c
        async for c in stub.GetCompletionChunk(REQUEST, metadata=(*AUTH, ("x-sim-usage", "every")))
    ]
    totals = [c.usage.total_tokens for c in every]
    assert all(c.HasField("usage") for c in every) and totals == sorted(totals)
    words = sum(1 for c in chunks for o in c.outputs if o.delta.content)
    last = every[-1].usage
    assert (words, last.prompt_tokens, last.completion_tokens, last.reasoning_tokens) == (
        9,
        8,
        9,
        42,
    )


async def test_stall_holds_until_release(
    channel: grpc.aio.Channel, grpc_sim: GrpcSimulator
) -> None:
    state = grpc_sim.state
    stub = chat_pb2_grpc.ChatStub(channel)
    call = stub.GetCompletionChunk(REQUEST, metadata=(*AUTH, ("x-sim-stall", "body")))
    first = await call.read()
    async with asyncio.timeout(5):
        await state.stalled.wait()
    state.release.set()
    rest = []
    while (message := await call.read()) is not grpc.aio.EOF:
        rest.append(message)
    assert first.outputs[0].delta.role == chat_pb2.ROLE_ASSISTANT and rest[-1].HasField("usage")
    assert state.abandoned_count == 0


async def test_a_client_leaving_a_stall_is_counted(
    channel: grpc.aio.Channel, grpc_sim: GrpcSimulator
) -> None:
    state = grpc_sim.state
    stub = chat_pb2_grpc.ChatStub(channel)
    call = stub.GetCompletion(REQUEST, metadata=(*AUTH, ("x-sim-stall", "headers")))
    async with asyncio.timeout(5):
        await state.stalled.wait()
    call.cancel()
    async with asyncio.timeout(5):
        await state.abandoned.wait()
    assert state.abandoned_count == 1


async def test_reply_headers_come_as_initial_metadata(channel: grpc.aio.Channel) -> None:
    stub = chat_pb2_grpc.ChatStub(channel)
    wanted = ("x-sim-reply-headers", "x-ratelimit-remaining-requests=7;x-metrics-ttft-ms=120")
    call = stub.GetCompletion(REQUEST, metadata=(*AUTH, wanted))
    await call
    initial = await call.initial_metadata()  # .get: its iteration differs across grpcio
    assert initial.get("x-ratelimit-remaining-requests") == "7"
    assert initial.get("x-metrics-ttft-ms") == "120"


async def test_malformed_answer_does_not_parse(grpc_sim: GrpcSimulator) -> None:
    with pytest.raises(grpc.RpcError) as broken:
        await asyncio.to_thread(_sample, _client(grpc_sim, ("x-sim-malformed", "1")))
    assert broken.value.code() == grpc.StatusCode.INTERNAL
    assert broken.value.details() == "Exception deserializing response!"


async def test_calls_are_recorded_and_unknown_methods_unimplemented(
    channel: grpc.aio.Channel, grpc_sim: GrpcSimulator
) -> None:
    stub = chat_pb2_grpc.ChatStub(channel)
    await stub.GetCompletion(REQUEST, metadata=(*AUTH, ("x-app", "demo")))
    seen = grpc_sim.state.requests[-1]
    assert seen.path == "/xai_api.Chat/GetCompletion" and seen.method == "POST"
    assert seen.headers["authorization"] == "Bearer test" and seen.headers["X-App"] == "demo"
    assert chat_pb2.GetCompletionsRequest.FromString(seen.body) == REQUEST
    unknown = channel.unary_unary("/xai_api.Nope/Nothing")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await unknown(b"", metadata=AUTH)
    assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
