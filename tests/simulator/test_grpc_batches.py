"""The gRPC face's BatchMgmt through the real xai-sdk: REST's batches from the same state, each
result the same message over gRPC as its JSON over REST, at the same discounted cost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from xai_sdk import AsyncClient
from xai_sdk.chat import user
from xai_sdk.proto import batch_pb2, batch_pb2_grpc, image_pb2, video_pb2

from daemon.simulator import GrpcSimulator, Simulator, price_ticks

AUTH = (("authorization", "Bearer test"),)
PINNED = (("x-sim-prompt-tokens", "100"), ("x-sim-cached-tokens", "0"))
# "Name a prime." on grok-4.3 with a 100-token prompt: 45 output tokens (15 + 30 reasoning), at
# the listing's $1.25 / $2.50 per 1M tokens, halved (state.batch_ratio)
CHAT_COST = (100 * 12_500 + 45 * 25_000) // 2


def lines(sdk: AsyncClient) -> list[Any]:
    """Two SDK chats, an image, a video, an extension (not run: an error result)."""
    chats = []
    for index in range(2):
        chat = sdk.chat.create(model="grok-4.3", batch_request_id=f"c{index}")
        chat.append(user("Name a prime."))
        chats.append(chat)
    image = image_pb2.GenerateImageRequest(prompt="p", model="grok-imagine-image-2.0", n=1)
    image.quality = image_pb2.IMG_QUALITY_LOW
    return [
        *chats,
        batch_pb2.BatchRequest(batch_request_id="i", image_request=image),
        batch_pb2.BatchRequest(
            batch_request_id="v",
            video_request=video_pb2.GenerateVideoRequest(prompt="p", duration=2),
        ),
        batch_pb2.BatchRequest(
            batch_request_id="x",
            video_extension_request=video_pb2.ExtendVideoRequest(prompt="p"),
        ),
    ]


@pytest_asyncio.fixture
async def pinned(grpc_sim: GrpcSimulator) -> AsyncIterator[AsyncClient]:
    """The async xai-sdk client on the gRPC face, every chat's prompt pinned (`PINNED`)."""
    target = grpc_sim.target
    async with AsyncClient(
        api_key="test", api_host=target, use_insecure_channel=True, metadata=PINNED
    ) as client:
        yield client


async def test_a_batch_over_grpc_is_the_same_batch_over_rest(
    pinned: AsyncClient, sim: Simulator, http: aiohttp.ClientSession, channel: grpc.aio.Channel
) -> None:
    axai = pinned
    made = await axai.batch.create("nightly")
    assert (made.name, made.state.num_requests) == ("nightly", 0)
    await axai.batch.add(made.batch_id, lines(axai))
    batch = await axai.batch.get(made.batch_id)
    assert (batch.state.num_requests, batch.state.num_success, batch.state.num_error) == (5, 4, 1)

    pages = [await axai.batch.list_batch_results(made.batch_id, limit=2)]
    while pages[-1].pagination_token is not None:
        token = pages[-1].pagination_token
        pages.append(await axai.batch.list_batch_results(made.batch_id, 2, token))
    assert [p.pagination_token for p in pages] == ["2", "4", None]
    results = [r for p in pages for r in p.results]
    assert [r.batch_request_id for r in results] == ["c0", "c1", "i", "v", "x"]
    chat = results[0].response
    assert chat.usage.prompt_tokens == 100 and chat.usage.cost_in_usd_ticks == CHAT_COST
    assert chat.proto.service_tier == 1  # SERVICE_TIER_DEFAULT, as REST's "default"
    image = results[2].proto.response.image_response
    assert (image.model, image.usage.cost_in_usd_ticks) == ("grok-imagine-image-2.0", 150_000_000)
    video = results[3].proto.response.video_response
    assert (video.video.duration, video.usage.cost_in_usd_ticks) == (2, 500_000_000)
    assert results[4].has_error
    assert (results[4].proto.error.code, results[4].error_message) == (
        3,
        "Unknown batch request kind 'video_extension_request'",
    )

    # The same results over REST: ids, answers and costs.
    async with http.get(f"/v1/batches/{made.batch_id}/results") as resp:
        rest = (await resp.json())["results"]
    assert [r["batch_request_id"] for r in rest] == ["c0", "c1", "i", "v", "x"]
    body = rest[0]["batch_result"]["response"]["chat_get_completion"]
    assert (body["id"], body["model"], body["usage"]["cost_in_usd_ticks"]) == (
        chat.id, "grok-4.3", CHAT_COST,
    )  # fmt: skip
    assert price_ticks(sim.state, "grok-4.3", body["usage"]) // 2 == CHAT_COST
    assert body["choices"][0]["message"]["content"] == chat.content
    assert rest[4]["batch_result"]["error"]["code"] == 3

    stub = batch_pb2_grpc.BatchMgmtStub(channel)
    one = await stub.GetBatchRequestResult(
        batch_pb2.GetBatchRequestResultRequest(batch_id=made.batch_id, batch_request_id="i"),
        metadata=AUTH,
    )
    assert one.result == results[2].proto
    assert one.request.image_request.prompt == "p" and one.request.batch_request_id == "i"
    meta = await axai.batch.list_batch_requests(made.batch_id)
    assert [m.state for m in meta.batch_request_metadata] == [
        batch_pb2.BatchRequestMetadata.STATE_SUCCEEDED
    ] * 4 + [batch_pb2.BatchRequestMetadata.STATE_FAILED]
    listed = await axai.batch.list()
    assert [b.batch_id for b in listed.batches] == [made.batch_id]
    assert listed.batches[0].cost_breakdown.total_cost_usd_ticks == (
        2 * CHAT_COST + 150_000_000 + 500_000_000
    )

    cancelled = await axai.batch.cancel(made.batch_id)
    assert cancelled.HasField("cancel_time")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await axai.batch.add(made.batch_id, [lines(axai)[2]])
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_rest_batch_read_over_grpc(
    axai: AsyncClient, channel: grpc.aio.Channel, http: aiohttp.ClientSession
) -> None:
    async with http.post("/v1/batches", json={"name": "rest"}) as resp:
        batch_id = (await resp.json())["batch_id"]
    line = {"batch_request_id": "r1", "batch_request": {"image_generation": {"prompt": "p"}}}
    async with http.post(f"/v1/batches/{batch_id}/requests", json={"batch_requests": [line]}):
        pass
    one = await batch_pb2_grpc.BatchMgmtStub(channel).GetBatchRequestResult(
        batch_pb2.GetBatchRequestResultRequest(batch_id=batch_id, batch_request_id="r1"),
        metadata=AUTH,
    )
    assert one.request == batch_pb2.BatchRequest(batch_request_id="r1")  # its id: no message
    assert one.result.response.image_response.usage.cost_in_usd_ticks == 100_000_000
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await axai.batch.get("batch_nope")
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
