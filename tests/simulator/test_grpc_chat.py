"""The gRPC face's Chat and Sample services, driven by the real xai-sdk client (sync and async)
and a bare channel: the same answers, tokens, fingerprints and ticks as REST chat."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import grpc
import openai
import pytest
from xai_sdk import AsyncClient, Client
from xai_sdk.chat import system, user
from xai_sdk.proto import (
    chat_pb2,
    chat_pb2_grpc,
    deferred_pb2,
    sample_pb2,
    sample_pb2_grpc,
    usage_pb2,
)
from xai_sdk.tools import code_execution, web_search

from daemon import simulator
from daemon.simulator import GrpcSimulator

AUTH = (("authorization", "Bearer test"),)
FAST_POLL = timedelta(milliseconds=10)  # the SDK's poll interval (its default: 100 ms)
QUESTION = "What is the meaning of life?"
# grok-4.3 (1.25 / 0.20 / 2.50 $ per 1M: 12500 / 2000 / 25000 ticks per token) on QUESTION:
# 13 prompt tokens, 14 completion, 84 reasoning (outside completion, inside total).
PROMPT, COMPLETION, REASONING = 13, 14, 84
FIRST_TICKS = PROMPT * 12500 + (COMPLETION + REASONING) * 25000  # 2_612_500
CACHED = 12  # the second time: 15/16 of the 13 tokens seen before
SECOND_TICKS = (PROMPT - CACHED) * 12500 + CACHED * 2000 + (COMPLETION + REASONING) * 25000


def _ask(client: Client, model: str = "grok-4.3", **settings: Any) -> Any:
    chat = client.chat.create(model=model, **settings)
    chat.append(user(QUESTION))
    return chat


async def test_sample_matches_rest_for_the_same_request(xai: Client) -> None:
    response = await asyncio.to_thread(lambda: _ask(xai).sample())
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens) == (13, 14, 84)
    assert usage.total_tokens == 111 and usage.prompt_text_tokens == 13
    assert usage.cached_prompt_text_tokens == 0 and usage.cost_in_usd_ticks == FIRST_TICKS
    assert FIRST_TICKS == 2_612_500
    assert response.proto.model == "grok-4.3" and response.system_fingerprint == "fp_43e4f5a604"
    assert response.proto.service_tier == usage_pb2.SERVICE_TIER_DEFAULT
    assert response.finish_reason == "REASON_STOP"

    # a fresh fake (no prompt cached yet) asked the same over REST
    async with (
        await simulator.start() as rest,
        openai.AsyncOpenAI(base_url=rest.url + "/v1", api_key="k") as oai,
    ):
        twin = await oai.chat.completions.create(
            model="grok-4.3", messages=[{"role": "user", "content": QUESTION}]
        )
    assert twin.choices[0].message.content == response.content
    assert twin.model == response.proto.model
    assert twin.system_fingerprint == response.system_fingerprint
    assert twin.usage is not None and twin.usage.completion_tokens_details is not None
    assert twin.usage.prompt_tokens == usage.prompt_tokens
    assert twin.usage.completion_tokens == usage.completion_tokens
    assert twin.usage.completion_tokens_details.reasoning_tokens == usage.reasoning_tokens
    assert twin.usage.total_tokens == usage.total_tokens
    assert twin.usage.model_extra is not None
    assert twin.usage.model_extra["cost_in_usd_ticks"] == usage.cost_in_usd_ticks


async def test_the_prompt_cache_is_shared_and_priced(xai: Client, axai: AsyncClient) -> None:
    await asyncio.to_thread(lambda: _ask(xai).sample())
    chat = axai.chat.create(model="grok-4.3")
    chat.append(user(QUESTION))
    again = await chat.sample()
    assert again.usage.cached_prompt_text_tokens == CACHED
    assert again.usage.cost_in_usd_ticks == SECOND_TICKS == 2_486_500


async def test_stream_usage_only_on_the_last_chunk(
    channel: grpc.aio.Channel, grpc_sim: GrpcSimulator
) -> None:
    stub = chat_pb2_grpc.ChatStub(channel)
    request = chat_pb2.GetCompletionsRequest(
        model="grok-4.3",
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.Content(text="hi")])],
    )
    chunks = [chunk async for chunk in stub.GetCompletionChunk(request, metadata=AUTH)]
    assert [c.HasField("usage") for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert not chunks[-1].outputs  # the usage chunk, as REST's choices: [] chunk
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.system_fingerprint for c in chunks} == {"fp_43e4f5a604"}
    deltas = [o.delta for c in chunks for o in c.outputs]
    assert {d.role for d in deltas} == {chat_pb2.ROLE_ASSISTANT}
    text = "".join(d.content for d in deltas)
    thoughts = "".join(d.reasoning_content for d in deltas)
    usage = chunks[-1].usage
    assert usage.completion_tokens == len(text.split()) and thoughts
    assert chunks[-2].outputs[0].finish_reason == sample_pb2.REASON_STOP
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens + (
        usage.reasoning_tokens
    )
    # state.sent: the answer's messages, framed as gRPC frames them (5-byte prefix each)
    sent = grpc_sim.state.sent[-1]
    assert len(sent) == sum(5 + c.ByteSize() for c in chunks)


async def test_sdk_streams_sync_and_async_give_the_unary_answer(
    xai: Client, axai: AsyncClient
) -> None:
    def stream() -> Any:
        last = None
        for response, _ in _ask(xai, "grok-4.20-non-reasoning").stream():
            last = response
        return last

    streamed = await asyncio.to_thread(stream)
    chat = axai.chat.create(model="grok-4.20-non-reasoning")
    chat.append(user(QUESTION))
    pieces = [chunk.content async for _, chunk in chat.stream()]
    unary = axai.chat.create(model="grok-4.20-non-reasoning")
    unary.append(user(QUESTION))
    whole = await unary.sample()
    assert streamed.content == "".join(pieces) == whole.content
    assert streamed.usage.completion_tokens == whole.usage.completion_tokens
    assert streamed.usage.reasoning_tokens == 0 and streamed.usage.prompt_tokens == PROMPT
    assert whole.usage.cached_prompt_text_tokens == CACHED
    assert whole.proto.model == "grok-4.20-0309-non-reasoning"  # the alias resolved


async def test_deferred_pending_then_done_once(
    xai: Client, channel: grpc.aio.Channel, grpc_sim: GrpcSimulator
) -> None:
    grpc_sim.state.deferred_polls = 2
    response = await asyncio.to_thread(lambda: _ask(xai).defer(interval=FAST_POLL))
    assert response.usage.cost_in_usd_ticks == FIRST_TICKS and response.content
    polls = grpc_sim.state.requests_to("/xai_api.Chat/GetDeferredCompletion")
    assert len(polls) == 3  # PENDING, PENDING, DONE
    assert grpc_sim.state.deferred == {}
    stub = chat_pb2_grpc.ChatStub(channel)
    start = await stub.StartDeferredCompletion(
        chat_pb2.GetCompletionsRequest(
            model="grok-4.3",
            messages=[
                chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.Content(text="x")])
            ],
        ),
        metadata=AUTH,
    )
    statuses = []
    for _ in range(3):
        got = await stub.GetDeferredCompletion(
            deferred_pb2.GetDeferredRequest(request_id=start.request_id), metadata=AUTH
        )
        statuses.append(got.status)
    assert statuses == [3, 3, 1]  # PENDING, PENDING, DONE
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetDeferredCompletion(
            deferred_pb2.GetDeferredRequest(request_id=start.request_id), metadata=AUTH
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stored_completion_replayed_then_deleted(xai: Client) -> None:
    def run() -> tuple[Any, list[Any], str]:
        first = _ask(xai, store_messages=True).sample()
        stored = xai.chat.get_stored_completion(first.id)
        return first, list(stored), xai.chat.delete_stored_completion(first.id)

    first, stored, deleted = await asyncio.to_thread(run)
    assert deleted == first.id
    assert stored[0].content == first.content
    assert stored[0].usage == first.usage
    for call in (xai.chat.get_stored_completion, xai.chat.delete_stored_completion):
        with pytest.raises(grpc.RpcError) as gone:
            await asyncio.to_thread(call, first.id)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_server_side_tools_are_listed_and_billed(axai: AsyncClient) -> None:
    chat = axai.chat.create(model="grok-4.3", tools=[web_search(), code_execution()])
    chat.append(user(QUESTION))
    response = await chat.sample()
    used = list(response.usage.server_side_tools_used)
    searches = used.count(usage_pb2.SERVER_SIDE_TOOL_WEB_SEARCH)
    runs = used.count(usage_pb2.SERVER_SIDE_TOOL_CODE_EXECUTION)
    assert (searches, runs, len(used)) == (3, 2, 5)  # 1-3 calls each, chosen by the prompt
    fees = 5 * 50_000_000  # $5 per 1000 calls each
    assert response.usage.cost_in_usd_ticks == FIRST_TICKS + fees


async def test_priority_tier_bills_twice(axai: AsyncClient) -> None:
    chat = axai.chat.create(model="grok-4.3", service_tier="priority")
    chat.append(user(QUESTION))
    response = await chat.sample()
    assert response.proto.service_tier == usage_pb2.SERVICE_TIER_PRIORITY
    assert response.usage.cost_in_usd_ticks == 2 * FIRST_TICKS


async def test_compact_context_is_billed(xai: Client) -> None:
    messages = [system("You are terse."), user(QUESTION), user("And then?")]
    compact = await asyncio.to_thread(xai.chat.compact_context, "grok-4.3", messages)
    assert compact.dropped_message_count == 2 and compact.encrypted_content.startswith("enc_")
    usage = compact.usage
    # three messages: 3 priming + (3 + 4) + (6 + 4) + (2 + 4) = 26 tokens; a 12-word summary
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (26, 12, 38)
    assert usage.cost_in_usd_ticks == 26 * 12500 + 12 * 25000 == 625_000


async def test_sample_text_and_its_stream(channel: grpc.aio.Channel) -> None:
    stub = sample_pb2_grpc.SampleStub(channel)
    request = sample_pb2.SampleTextRequest(prompt=["Once", "upon a time"], model="grok-3", n=2)
    whole = await stub.SampleText(request, metadata=AUTH)
    assert [c.index for c in whole.choices] == [0, 1] and whole.model == "grok-3"
    assert whole.system_fingerprint == "fp_1d4f8b6a93"
    words = sum(len(c.text.split()) for c in whole.choices)
    # "Once upon a time": 4 words + 4 per message + 3 priming
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (11, words)
    assert whole.usage.cost_in_usd_ticks == 11 * 30000 + words * 150000
    parts = [m async for m in stub.SampleTextStreaming(request, metadata=AUTH)]
    assert [m.HasField("usage") for m in parts] == [False] * (len(parts) - 1) + [True]
    texts = ["".join(m.choices[0].text for m in parts if m.choices[0].index == i) for i in (0, 1)]
    assert texts == [c.text for c in whole.choices]
    assert parts[-1].usage.cached_prompt_text_tokens == 10  # seen once: 15/16 of 11


@pytest.mark.parametrize(
    ("outcome", "status"), [("failed", deferred_pb2.FAILED), ("expired", deferred_pb2.EXPIRED)]
)
async def test_a_deferred_completion_asked_to_fail_or_expire_ends_so_once(
    channel: grpc.aio.Channel, grpc_sim: GrpcSimulator, outcome: str, status: int
) -> None:
    grpc_sim.state.deferred_polls = 1
    stub = chat_pb2_grpc.ChatStub(channel)
    question = chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.Content(text="x")])
    start = await stub.StartDeferredCompletion(
        chat_pb2.GetCompletionsRequest(model="grok-4.3", messages=[question]),
        metadata=(*AUTH, ("x-sim-deferred-outcome", outcome)),
    )
    ask = deferred_pb2.GetDeferredRequest(request_id=start.request_id)
    answers = [await stub.GetDeferredCompletion(ask, metadata=AUTH) for _ in range(2)]
    assert [a.status for a in answers] == [deferred_pb2.PENDING, status]
    assert not answers[1].HasField("response")
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetDeferredCompletion(ask, metadata=AUTH)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
