"""The gRPC face's Image and Video services through the real xai-sdk: REST's image prices, and
deferred videos billed per second."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from xai_sdk import AsyncClient, Client
from xai_sdk.proto import deferred_pb2, video_pb2, video_pb2_grpc

from daemon.simulator import GrpcSimulator
from daemon.simulator.images import PIXEL_PNG

AUTH = (("authorization", "Bearer test"),)
FAST_POLL = timedelta(milliseconds=10)  # the SDK's poll interval (its default: a second)


async def test_images_as_urls_and_base64_priced_as_rest(axai: AsyncClient) -> None:
    flat = await axai.image.sample_batch("a quiet meter", "grok-imagine-image", 3)
    assert [i.url.startswith("https://imgen.x.ai/") for i in flat] == [True] * 3
    assert flat[0].proto.model == "grok-imagine-image"  # REST's answer names no model
    assert flat[0].usage.cost_in_usd_ticks == 3 * 200_000_000  # $0.02 each, for the batch
    drawn = await axai.image.sample(
        "a quiet meter", model="grok-imagine-image-2", image_format="base64", quality="low",
        resolution="2k",
    )  # fmt: skip
    assert drawn.base64 == f"data:image/png;base64,{PIXEL_PNG}"
    assert drawn.proto.model == "grok-imagine-image-2.0"  # the alias resolved
    assert drawn.usage.cost_in_usd_ticks == 400_000_000  # low quality at 2k: $0.04


async def test_an_unknown_image_model_is_not_found(axai: AsyncClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await axai.image.sample("x", model="grok-imagine-nothing")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_video_generated_and_extended_billed_per_second(
    xai: Client, grpc_sim: GrpcSimulator
) -> None:
    grpc_sim.state.deferred_polls = 2
    video = await asyncio.to_thread(
        lambda: xai.video.generate("a dog", "grok-imagine-video", interval=FAST_POLL)
    )
    assert (
        video.duration == 8 and video.url.endswith(".mp4") and video.model == ("grok-imagine-video")
    )
    assert video.usage.cost_in_usd_ticks == 4_000_000_000  # 8 s at 480p, $0.05/s (xai-api.md)
    polls = grpc_sim.state.requests_to("/xai_api.Video/GetDeferredVideo")
    assert len(polls) == 3  # PENDING, PENDING, DONE
    longer = await asyncio.to_thread(
        lambda: xai.video.extend(
            "and then",
            "grok-imagine-video-1.5",
            video_url=video.url,
            duration=5,
            interval=FAST_POLL,
        )
    )
    assert longer.duration == 5 and longer.usage.cost_in_usd_ticks == 5 * 800_000_000


async def test_a_done_video_stays_done_and_unknown_ids_are_not_found(
    channel: grpc.aio.Channel, grpc_sim: GrpcSimulator
) -> None:
    grpc_sim.state.deferred_polls = 1
    stub = video_pb2_grpc.VideoStub(channel)
    start = await stub.GenerateVideo(
        video_pb2.GenerateVideoRequest(
            prompt="waves", duration=4, resolution=video_pb2.VIDEO_RESOLUTION_720P
        ),
        metadata=AUTH,
    )
    ask = video_pb2.GetDeferredVideoRequest(request_id=start.request_id)
    answers = [await stub.GetDeferredVideo(ask, metadata=AUTH) for _ in range(3)]
    assert [a.status for a in answers] == [deferred_pb2.PENDING] + [deferred_pb2.DONE] * 2
    assert answers[0].response.progress == 50 and not answers[0].response.HasField("usage")
    assert answers[1] == answers[2] and answers[1].response.progress == 100
    assert answers[1].response.usage.cost_in_usd_ticks == 4 * 700_000_000  # 720p: $0.07/s
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetDeferredVideo(
            video_pb2.GetDeferredVideoRequest(request_id="nope"), metadata=AUTH
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as too_long:
        await stub.GenerateVideo(
            video_pb2.GenerateVideoRequest(prompt="waves", duration=16), metadata=AUTH
        )
    assert too_long.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_video_asked_to_fail_or_expire_says_so_on_every_poll(
    channel: grpc.aio.Channel, grpc_sim: GrpcSimulator
) -> None:
    grpc_sim.state.deferred_polls = 0
    stub = video_pb2_grpc.VideoStub(channel)
    ended = {}
    for outcome in ("failed", "expired"):
        start = await stub.GenerateVideo(
            video_pb2.GenerateVideoRequest(prompt="waves"),
            metadata=(*AUTH, ("x-sim-video-outcome", outcome)),
        )
        ask = video_pb2.GetDeferredVideoRequest(request_id=start.request_id)
        first, again = [await stub.GetDeferredVideo(ask, metadata=AUTH) for _ in range(2)]
        assert first == again
        ended[outcome] = first
    failed, expired = ended["failed"], ended["expired"]
    assert failed.status == deferred_pb2.FAILED
    assert (failed.response.error.code, failed.response.model) == (
        "moderation_blocked",
        "grok-imagine-video",
    )
    assert not failed.response.HasField("usage")
    assert expired == video_pb2.GetDeferredVideoResponse(status=deferred_pb2.EXPIRED)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.GenerateVideo(
            video_pb2.GenerateVideoRequest(prompt="waves"),
            metadata=(*AUTH, ("x-sim-video-outcome", "maybe")),
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
