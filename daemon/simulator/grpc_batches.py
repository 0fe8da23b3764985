"""gRPC ``xai_api.BatchMgmt``: REST's batches, from the same state, in xAI's messages.

Follows xai-api.md "Batch API" and xAI's ``batch.proto`` (``xai_sdk.proto.batch_pb2``). The
logic is REST's (`daemon.simulator.batches`) on the one ``state.batches``: a batch made over
gRPC is read over REST and the other way round, each result answered the same, at the same
discounted cost. What this module adds is the translation, both ways:

* ``CreateBatch {name, input_file_id?}``, ``GetBatch``, ``CancelBatch`` → ``Batch`` (its
  ``state`` counts, and a ``cost_breakdown`` whose ``total_cost_usd_ticks`` sums the results'
  reported costs: xai-api.md, "gRPC adds cost_breakdown"); ``ListBatches`` → every batch on one
  page.
* ``AddBatchRequests {batch_id, batch_requests}`` → ``Empty``. Each ``BatchRequest`` becomes
  REST's line: ``completion_request`` a ``chat_get_completion`` (`grpc_chat.request_json`),
  ``image_request`` an ``image_generation`` (`grpc_media.image_request_json`), ``video_request``
  a ``video_generation`` (``prompt``, ``model``, ``duration``, ``resolution``); any other (a
  ``video_extension_request``, none) an error result, as REST answers a kind it cannot run. The
  request metadata steers chat as REST's headers do (``x-sim-prompt-tokens`` ...).
* ``ListBatchRequestMetadata`` → each request's id and state (SUCCEEDED or FAILED), one page.
* ``ListBatchResults {batch_id, limit, pagination_token}`` → REST's pages (`results_page`;
  ``limit`` 0 is the default), ``pagination_token`` unset on the last one;
  ``GetBatchRequestResult {batch_id, batch_request_id}`` → ``{request, result}`` (the
  ``BatchRequest`` as sent over gRPC; for a line added over REST, its id alone).

A result converts as ``BatchResult {batch_request_id, response | error}``: a chat answer as
``GetChatCompletionResponse`` (`grpc_wire.completion_response`: its ``service_tier``, and its
usage as ``SamplingUsage`` with the body's own, already discounted, ``cost_in_usd_ticks``), an
image answer as ``ImageResponse``, a video one as ``VideoResponse``, an error as
``google.rpc.Status {code, message}``. A cost the body has only in nano-USD (``state.cost_unit``)
is given in ticks (x10): the proto has no nano-USD field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2
from xai_sdk.proto import batch_pb2, usage_pb2, video_pb2

from daemon.simulator.batches import (
    add_requests,
    batch_object,
    find_batch,
    new_batch,
    one_result,
    results_page,
)
from daemon.simulator.grpc_chat import request_json
from daemon.simulator.grpc_media import image_request_json, image_response
from daemon.simulator.grpc_wire import (
    Call,
    Method,
    completion_response,
    iso_timestamp,
    sampling_usage,
    service_tier,
)
from daemon.simulator.state import Batch

_RESOLUTIONS = {
    video_pb2.VIDEO_RESOLUTION_480P: "480p",
    video_pb2.VIDEO_RESOLUTION_720P: "720p",
    video_pb2.VIDEO_RESOLUTION_1080P: "1080p",
}
_SUCCEEDED = batch_pb2.BatchRequestMetadata.STATE_SUCCEEDED
_FAILED = batch_pb2.BatchRequestMetadata.STATE_FAILED


def _cost(usage: Any) -> int | None:
    """A REST usage object's cost in ticks: ``cost_in_usd_ticks``, else ``cost_in_nano_usd``
    x 10; None when it has neither."""
    if not isinstance(usage, Mapping):
        return None
    ticks = usage.get("cost_in_usd_ticks")
    if isinstance(ticks, int):
        return ticks
    nano = usage.get("cost_in_nano_usd")
    return nano * 10 if isinstance(nano, int) else None


def _answer_cost(result: Mapping[str, Any]) -> int:
    response = result.get("response")
    answers = response.values() if isinstance(response, Mapping) else ()
    return sum(_cost(a.get("usage")) or 0 for a in answers if isinstance(a, Mapping))


def batch_message(batch: Batch) -> batch_pb2.Batch:
    """The batch as gRPC's ``Batch`` (REST's `batch_object`, plus its cost so far)."""
    obj = batch_object(batch)
    out = batch_pb2.Batch(
        batch_id=obj["batch_id"],
        name=obj["name"],
        create_time=iso_timestamp(obj["create_time"]),
        state=batch_pb2.BatchState(**obj["state"]),
        cost_breakdown=batch_pb2.BatchCostBreakdown(
            total_cost_usd_ticks=sum(_answer_cost(r) for r in batch.results.values())
        ),
    )
    if obj["cancel_time"]:
        out.cancel_time.CopyFrom(iso_timestamp(obj["cancel_time"]))
    return out


def _video_request_json(req: Any) -> dict[str, Any]:
    asked: dict[str, Any] = {"prompt": req.prompt}
    if req.model:
        asked["model"] = req.model
    if req.HasField("duration"):
        asked["duration"] = req.duration
    if req.HasField("resolution") and req.resolution in _RESOLUTIONS:
        asked["resolution"] = _RESOLUTIONS[req.resolution]
    return asked


def request_line(request: batch_pb2.BatchRequest) -> dict[str, Any]:
    """A ``BatchRequest`` as REST's batch request line (see the module docstring)."""
    kind = request.WhichOneof("request")
    line: dict[str, Any] = {}
    if request.HasField("batch_request_id"):
        line["batch_request_id"] = request.batch_request_id
    if kind == "completion_request":
        line["batch_request"] = {"chat_get_completion": request_json(request.completion_request)}
    elif kind == "image_request":
        line["batch_request"] = {"image_generation": image_request_json(request.image_request)}
    elif kind == "video_request":
        line["batch_request"] = {"video_generation": _video_request_json(request.video_request)}
    elif kind is not None:
        line["batch_request"] = {kind: {}}  # a kind the simulator does not run: an error result
    return line


def _video_response(answer: Mapping[str, Any]) -> video_pb2.VideoResponse:
    video = answer.get("video") or {}
    out = video_pb2.VideoResponse(
        video=video_pb2.GeneratedVideo(
            url=str(video.get("url") or ""),
            duration=int(video.get("duration") or 0),
            respect_moderation=bool(video.get("respect_moderation")),
        ),
        model=str(answer.get("model") or ""),
        progress=int(answer.get("progress") or 100),
    )
    cost = _cost(answer.get("usage"))
    if cost is not None:
        out.usage.CopyFrom(usage_pb2.SamplingUsage(cost_in_usd_ticks=cost))
    return out


def result_message(request_id: str, result: Mapping[str, Any]) -> batch_pb2.BatchResult:
    """One ``batch_result`` of `daemon.simulator.batches` as a ``BatchResult``."""
    out = batch_pb2.BatchResult(batch_request_id=request_id)
    error = result.get("error")
    if isinstance(error, Mapping):
        out.error.CopyFrom(
            status_pb2.Status(code=int(error["code"]), message=str(error.get("message") or ""))
        )
        return out
    [(kind, answer)] = result["response"].items()
    data = out.response
    if kind == "chat_get_completion":
        usage = answer.get("usage")
        sampled = None if usage is None else sampling_usage(usage, _cost(usage))
        data.completion_response.CopyFrom(
            completion_response(answer, service_tier(answer.get("service_tier")), sampled)
        )
    elif kind == "image_generation":
        model = str(answer.get("model") or "")
        data.image_response.CopyFrom(image_response(answer, model, _cost(answer.get("usage"))))
    else:
        data.video_response.CopyFrom(_video_response(answer))
    return out


async def create_batch(call: Call, req: batch_pb2.CreateBatchRequest) -> Message:
    """``BatchMgmt/CreateBatch``: a new, empty batch."""
    return batch_message(new_batch(call.state, req.name))


async def get_batch(call: Call, req: batch_pb2.GetBatchRequest) -> Message:
    """``BatchMgmt/GetBatch``."""
    return batch_message(find_batch(call.state, req.batch_id))


async def list_batches(call: Call, req: batch_pb2.ListBatchesRequest) -> Message:
    """``BatchMgmt/ListBatches``: every batch, on one page."""
    return batch_pb2.ListBatchesResponse(
        batches=[batch_message(b) for b in call.state.batches.values()]
    )


async def cancel_batch(call: Call, req: batch_pb2.CancelBatchRequest) -> Message:
    """``BatchMgmt/CancelBatch``: no request is added after it."""
    batch = find_batch(call.state, req.batch_id)
    batch.cancelled = True
    return batch_message(batch)


async def add_batch_requests(call: Call, req: batch_pb2.AddBatchRequestsRequest) -> Message:
    """``BatchMgmt/AddBatchRequests``: each request run at once, as over REST."""
    batch = find_batch(call.state, req.batch_id)
    requests = list(req.batch_requests)
    lines = [request_line(r) for r in requests]
    added = add_requests(call.state, batch, call.metadata, lines)
    for request_id, request in zip(added, requests, strict=True):
        kept = batch_pb2.BatchRequest()
        kept.CopyFrom(request)
        kept.batch_request_id = request_id
        batch.messages[request_id] = kept
    return empty_pb2.Empty()


async def list_request_metadata(
    call: Call, req: batch_pb2.ListBatchRequestMetadataRequest
) -> Message:
    """``BatchMgmt/ListBatchRequestMetadata``: each request's id and state, on one page."""
    batch = find_batch(call.state, req.batch_id)
    return batch_pb2.ListBatchRequestMetadataResponse(
        batch_request_metadata=[
            batch_pb2.BatchRequestMetadata(
                batch_request_id=rid, state=_FAILED if "error" in result else _SUCCEEDED
            )
            for rid, result in batch.results.items()
        ]
    )


async def list_batch_results(call: Call, req: batch_pb2.ListBatchResultsRequest) -> Message:
    """``BatchMgmt/ListBatchResults``: one page of results."""
    batch = find_batch(call.state, req.batch_id)
    results, following = results_page(batch, req.limit or None, req.pagination_token or None)
    out = batch_pb2.ListBatchResultsResponse(
        results=[result_message(rid, result) for rid, result in results]
    )
    if following is not None:
        out.pagination_token = following
    return out


async def get_batch_request_result(
    call: Call, req: batch_pb2.GetBatchRequestResultRequest
) -> Message:
    """``BatchMgmt/GetBatchRequestResult``: one result, beside its request."""
    batch = find_batch(call.state, req.batch_id)
    _, result = one_result(batch, req.batch_request_id)
    request = batch.messages.get(req.batch_request_id)
    return batch_pb2.GetBatchRequestResultResponse(
        request=request or batch_pb2.BatchRequest(batch_request_id=req.batch_request_id),
        result=result_message(req.batch_request_id, result),
    )


BATCH = "/xai_api.BatchMgmt/"

METHODS: dict[str, Method] = {
    BATCH + "CreateBatch": Method(batch_pb2.CreateBatchRequest, unary=create_batch),
    BATCH + "GetBatch": Method(batch_pb2.GetBatchRequest, unary=get_batch),
    BATCH + "ListBatches": Method(batch_pb2.ListBatchesRequest, unary=list_batches),
    BATCH + "CancelBatch": Method(batch_pb2.CancelBatchRequest, unary=cancel_batch),
    BATCH + "AddBatchRequests": Method(batch_pb2.AddBatchRequestsRequest, unary=add_batch_requests),
    BATCH + "ListBatchRequestMetadata": Method(
        batch_pb2.ListBatchRequestMetadataRequest, unary=list_request_metadata
    ),
    BATCH + "ListBatchResults": Method(batch_pb2.ListBatchResultsRequest, unary=list_batch_results),
    BATCH + "GetBatchRequestResult": Method(
        batch_pb2.GetBatchRequestResultRequest, unary=get_batch_request_result
    ),
}
"""The methods this module serves, by full method name."""
