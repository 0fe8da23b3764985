"""gRPC ``xai_api.Image`` and ``xai_api.Video``: images now, videos deferred.

Follows xai-api.md "Images", "Video" and "gRPC API".

* ``Image/GenerateImage``: REST's image answer (`images.image_answer`: the same model
  resolution, ``n``, tier prices and ``cost_in_usd_ticks``), as an ``ImageResponse`` that, unlike
  REST, names its ``model``. ``IMG_FORMAT_BASE64`` images come as ``data:image/png;base64,...``
  (the SDK strips the prefix); a request with input images is an edit.
* ``Video/GenerateVideo`` and ``ExtendVideo``: a request id (``StartDeferredResponse``);
  ``Video/GetDeferredVideo``: PENDING with a growing ``progress`` for ``state.deferred_polls``
  polls, then DONE with the video and its usage, again on every later poll (a finished video
  stays fetchable, unlike a deferred chat completion: a relay must bill it once itself);
  NOT_FOUND for an unknown id. Priced per second by model and resolution
  (`catalog.VIDEO_PRICES`); duration 1-15 s, 8 by default; 480p by default. REST's
  ``x-sim-video-outcome: failed|expired`` on the start ends the job so instead: FAILED with
  the response's ``error`` (``moderation_blocked``), or EXPIRED, on every poll after the
  pending ones.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message
from xai_sdk.proto import deferred_pb2, image_pb2, usage_pb2, video_pb2

from daemon.simulator import billing
from daemon.simulator.billing import IMAGE_GENERATION, VIDEO_GENERATION
from daemon.simulator.catalog import (
    VIDEO_DEFAULT_MODEL,
    VIDEO_DEFAULT_RESOLUTION,
    VIDEO_DEFAULT_SECONDS,
    video_price_ticks,
)
from daemon.simulator.faults import header_choice
from daemon.simulator.grpc_wire import Call, Method, grpc_cost
from daemon.simulator.images import image_answer
from daemon.simulator.state import GrpcVideoJob
from daemon.simulator.videos import HEADER_VIDEO_OUTCOME
from daemon.simulator.wire import ApiError

_QUALITIES = {
    image_pb2.IMG_QUALITY_LOW: "low",
    image_pb2.IMG_QUALITY_MEDIUM: "medium",
    image_pb2.IMG_QUALITY_HIGH: "high",
}
_RESOLUTIONS = {image_pb2.IMG_RESOLUTION_1K: "1k", image_pb2.IMG_RESOLUTION_2K: "2k"}
_VIDEO_RESOLUTIONS = {
    video_pb2.VIDEO_RESOLUTION_480P: "480p",
    video_pb2.VIDEO_RESOLUTION_720P: "720p",
    video_pb2.VIDEO_RESOLUTION_1080P: "1080p",
}
_MAX_SECONDS = 15
_OUTCOMES = ("done", "failed", "expired")
FAILED_CODE = "moderation_blocked"  # a failed video's error code (REST's, `videos._create`)


def image_request_json(req: image_pb2.GenerateImageRequest) -> dict[str, Any]:
    """A ``GenerateImageRequest`` as the REST images request asking the same (``prompt``,
    ``model``, ``n``, ``response_format``, ``quality``, ``resolution``; unset fields left
    out)."""
    asked: dict[str, Any] = {"prompt": req.prompt}
    if req.model:
        asked["model"] = req.model
    if req.HasField("n"):
        asked["n"] = req.n
    base64 = req.format == image_pb2.IMG_FORMAT_BASE64
    asked["response_format"] = "b64_json" if base64 else "url"
    if req.HasField("quality") and req.quality in _QUALITIES:
        asked["quality"] = _QUALITIES[req.quality]
    if req.HasField("resolution") and req.resolution in _RESOLUTIONS:
        asked["resolution"] = _RESOLUTIONS[req.resolution]
    return asked


def image_response(
    body: Mapping[str, Any], model: str, cost: int | None
) -> image_pb2.ImageResponse:
    """REST's images answer ``{data: [{url | b64_json, mime_type?}]}`` as ``ImageResponse``,
    naming ``model``, with ``cost`` ticks as its usage (None: no usage)."""
    out = image_pb2.ImageResponse(model=model)
    for item in body["data"]:
        image = image_pb2.GeneratedImage(respect_moderation=True)
        if "b64_json" in item:
            image.base64 = f"data:{item.get('mime_type', 'image/png')};base64,{item['b64_json']}"
        else:
            image.url = item["url"]
        out.images.append(image)
    if cost is not None:
        out.usage.CopyFrom(usage_pb2.SamplingUsage(cost_in_usd_ticks=cost))
    return out


async def generate_image(call: Call, req: image_pb2.GenerateImageRequest) -> Message:
    """``Image/GenerateImage``: ``n`` images as URLs or base64, billed per image."""
    edit = req.HasField("image") or len(req.images) > 0
    body, model, ticks = image_answer(call.state, image_request_json(req), call.inj, edit)
    cost = grpc_cost(call.state, {IMAGE_GENERATION: ticks})
    return image_response(body, model, cost if call.inj.usage != "none" else None)


def _video_job(call: Call, model: str, seconds: int | None, resolution: int | None) -> Message:
    model = model or VIDEO_DEFAULT_MODEL
    length = VIDEO_DEFAULT_SECONDS if seconds is None else seconds
    if not 1 <= length <= _MAX_SECONDS:
        raise ApiError(422, f"`duration` must be from 1 to {_MAX_SECONDS} seconds, got {length}")
    size = _VIDEO_RESOLUTIONS.get(resolution or 0, VIDEO_DEFAULT_RESOLUTION)
    ticks = video_price_ticks(model, size, length)
    if ticks is None:
        if video_price_ticks(model, VIDEO_DEFAULT_RESOLUTION, 1) is None:
            raise ApiError(
                404, f"The model {model} does not exist or your team does not have access to it."
            )
        raise ApiError(422, f"The model {model} does not render {size}")
    request_id = str(uuid.uuid4())
    polls = max(0, call.state.deferred_polls)
    outcome = header_choice(call.metadata, HEADER_VIDEO_OUTCOME, _OUTCOMES) or "done"
    job = GrpcVideoJob(model, length, size, ticks, polls, outcome=outcome)
    call.state.grpc_videos[request_id] = job
    return deferred_pb2.StartDeferredResponse(request_id=request_id)


async def generate_video(call: Call, req: video_pb2.GenerateVideoRequest) -> Message:
    """``Video/GenerateVideo``: the request id of a deferred video."""
    if not req.prompt:
        raise ApiError(422, "`prompt` must be a non-empty string")
    seconds = req.duration if req.HasField("duration") else None
    resolution = req.resolution if req.HasField("resolution") else None
    return _video_job(call, req.model, seconds, resolution)


async def extend_video(call: Call, req: video_pb2.ExtendVideoRequest) -> Message:
    """``Video/ExtendVideo``: the request id of a deferred extension of a given video."""
    if not req.prompt:
        raise ApiError(422, "`prompt` must be a non-empty string")
    if not (req.video.url or req.video.file_id):
        raise ApiError(422, "`video` must name the video to extend (url or file_id)")
    seconds = req.duration if req.HasField("duration") else None
    return _video_job(call, req.model, seconds, None)


async def get_deferred_video(call: Call, req: video_pb2.GetDeferredVideoRequest) -> Message:
    """``Video/GetDeferredVideo``: PENDING with progress, then its end (DONE, or FAILED or
    EXPIRED as its start asked) on every poll."""
    job = call.state.grpc_videos.get(req.request_id)
    if job is None:
        raise ApiError(404, f"No video request {req.request_id}")
    job.polls += 1
    if job.polls_left > 0:
        job.polls_left -= 1
        progress = min(99, 100 * job.polls // (job.polls + job.polls_left + 1))
        return video_pb2.GetDeferredVideoResponse(
            status=deferred_pb2.PENDING,
            response=video_pb2.VideoResponse(model=job.model, progress=progress),
        )
    if job.outcome == "failed":
        error = video_pb2.VideoError(code=FAILED_CODE, message="The video was not generated.")
        return video_pb2.GetDeferredVideoResponse(
            status=deferred_pb2.FAILED,
            response=video_pb2.VideoResponse(model=job.model, error=error),
        )
    if job.outcome == "expired":
        return video_pb2.GetDeferredVideoResponse(status=deferred_pb2.EXPIRED)
    digest = hashlib.sha256(req.request_id.encode()).hexdigest()[:32]
    response = video_pb2.VideoResponse(
        video=video_pb2.GeneratedVideo(
            url=f"https://vidgen.x.ai/xai-vidgen/xai-tmp-vidgen-{digest}.mp4",
            duration=job.duration,
            respect_moderation=True,
        ),
        model=job.model,
        progress=100,
    )
    cost = grpc_cost(call.state, {VIDEO_GENERATION: job.ticks})
    if job.booked:
        billing.note({})  # a repeated DONE poll: billed once
    job.booked = True
    if call.inj.usage != "none" and cost is not None:
        response.usage.CopyFrom(usage_pb2.SamplingUsage(cost_in_usd_ticks=cost))
    return video_pb2.GetDeferredVideoResponse(status=deferred_pb2.DONE, response=response)


METHODS: dict[str, Method] = {
    "/xai_api.Image/GenerateImage": Method(image_pb2.GenerateImageRequest, unary=generate_image),
    "/xai_api.Video/GenerateVideo": Method(video_pb2.GenerateVideoRequest, unary=generate_video),
    "/xai_api.Video/ExtendVideo": Method(video_pb2.ExtendVideoRequest, unary=extend_video),
    "/xai_api.Video/GetDeferredVideo": Method(
        video_pb2.GetDeferredVideoRequest, unary=get_deferred_video
    ),
}
"""The methods this module serves, by full method name."""
