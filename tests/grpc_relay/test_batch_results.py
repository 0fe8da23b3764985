"""gRPC batch results read by the method table, on hand-built messages: the same derived
records as REST's JSON pages make of the same results (one function builds both), and the
edges: no batch id, no result id, no answer, one result bare."""

from __future__ import annotations

from typing import Any

import orjson
from google.rpc import status_pb2
from xai_sdk.proto import batch_pb2, chat_pb2, image_pb2, usage_pb2, video_pb2

from daemon.dialects.batches import BatchResultsDialect
from daemon.grpc_relay.methods import method, shapes
from daemon.record import CallRecord, Transport, Unmetered
from daemon.testing import XAI_CHAT_USAGE, make_record

LIST = "/xai_api.BatchMgmt/ListBatchResults"
ONE = "/xai_api.BatchMgmt/GetBatchRequestResult"
# xai-api.md's real chat usage (as in XAI_CHAT_USAGE), sent as gRPC sends it
CHAT_USAGE = usage_pb2.SamplingUsage(
    prompt_tokens=165,
    completion_tokens=2,
    reasoning_tokens=125,
    total_tokens=292,
    prompt_text_tokens=165,
    cached_prompt_text_tokens=156,
    cost_in_usd_ticks=731000,
)


def read(name: str, request: Any, answer: Any) -> CallRecord:
    """A gRPC call's record, its request and answer read as the relay reads them."""
    spec = method(name)
    record = make_record(
        endpoint=spec.endpoint, path=name, status=200, billable=spec.billable, usage=None,
        transport=Transport.GRPC, key_id="k_1", app="nightly", started_at=1000.0,
    )  # fmt: skip
    assert spec.read_request is not None and spec.read_last is not None
    spec.read_request(record, request.SerializeToString())
    spec.read_last(record, answer.SerializeToString())
    return record


def rest(results: list[dict[str, Any]]) -> CallRecord:
    record = make_record(
        endpoint="batches", method="GET", path="/v1/batches/b1/results", status=200,
        billable=False, key_id="k_1", app="nightly", started_at=1000.0,
    )  # fmt: skip
    tap = BatchResultsDialect().tap(record, "application/json", lambda: 0.0)
    assert tap.feed(orjson.dumps({"results": results})) is None
    tap.finish(True)
    return record


def row(record: CallRecord) -> dict[str, Any]:
    """What the ledger keeps of a derived record, but where it was read (path, method,
    transport, id)."""
    found = record.as_row()
    for name in ("id", "path", "method", "transport"):
        del found[name]
    return found


def test_a_grpc_page_makes_the_rows_a_rest_page_makes() -> None:
    chat = chat_pb2.GetChatCompletionResponse(
        id="cmpl-1",
        model="grok-4-fast-reasoning",
        system_fingerprint="fp_1",
        service_tier=usage_pb2.SERVICE_TIER_DEFAULT,
        usage=CHAT_USAGE,
    )
    image = image_pb2.ImageResponse(
        images=[image_pb2.GeneratedImage(url="u")] * 3,
        model="grok-imagine-image",
        usage=usage_pb2.SamplingUsage(cost_in_usd_ticks=300),
    )
    video = video_pb2.VideoResponse(
        video=video_pb2.GeneratedVideo(url="u", duration=6),
        model="grok-imagine-video",
        usage=usage_pb2.SamplingUsage(cost_in_usd_ticks=1_500_000_000),
    )
    page = batch_pb2.ListBatchResultsResponse(
        results=[
            batch_pb2.BatchResult(
                batch_request_id="a",
                response=batch_pb2.BatchResultData(completion_response=chat),
            ),
            batch_pb2.BatchResult(
                batch_request_id="b", response=batch_pb2.BatchResultData(image_response=image)
            ),
            batch_pb2.BatchResult(
                batch_request_id="c", response=batch_pb2.BatchResultData(video_response=video)
            ),
            batch_pb2.BatchResult(
                batch_request_id="d", error=status_pb2.Status(code=3, message="bad")
            ),
            batch_pb2.BatchResult(batch_request_id="e"),  # no answer: unmetered
            batch_pb2.BatchResult(response=batch_pb2.BatchResultData(image_response=image)),
        ],
        pagination_token="x",
    )
    got = read(LIST, batch_pb2.ListBatchResultsRequest(batch_id="b1", limit=5), page)
    assert got.usage is None and got.metered and got.endpoint == "batches" and not got.billable
    json_chat = {"id": "cmpl-1", "model": "grok-4-fast-reasoning", "system_fingerprint": "fp_1",
                 "service_tier": "default", "usage": XAI_CHAT_USAGE}  # fmt: skip
    expected = rest([
        {"batch_request_id": "a", "batch_result": {"response": {"chat_get_completion": json_chat}}},
        {"batch_request_id": "b", "batch_result": {"response": {"image_generation": {
            "data": [{"url": "u"}] * 3, "model": "grok-imagine-image",
            "usage": {"cost_in_usd_ticks": 300}}}}},
        {"batch_request_id": "c", "batch_result": {"response": {"video_generation": {
            "video": {"url": "u", "duration": 6}, "model": "grok-imagine-video",
            "usage": {"cost_in_usd_ticks": 1_500_000_000}}}}},
        {"batch_request_id": "d", "batch_result": {"error": {"code": 3, "message": "bad"}}},
        {"batch_request_id": "e", "batch_result": {}},
    ])  # fmt: skip
    derived, twins = got.derived or [], expected.derived or []
    assert [d.response_id for d in derived] == ["a", "b", "c", "d", "e"]
    assert [row(d) for d in derived] == [row(t) for t in twins]
    assert {(d.path, d.method, d.transport, d.linked_id) for d in derived} == {
        (LIST, "POST", Transport.GRPC, "b1")
    }
    a, b, c, d, e = derived
    assert a.usage is not None and (a.usage.input_tokens, a.usage.output_tokens) == (165, 127)
    assert (a.model, a.fingerprint, a.service_tier, a.usage.reported_cost_ticks) == (
        "grok-4-fast-reasoning", "fp_1", "default", 731000,
    )  # fmt: skip
    assert b.usage is not None and (b.usage.images, b.usage.reported_cost_ticks) == (3, 300)
    assert c.usage is not None and (c.usage.video_seconds, c.usage.catalog_rate) == (
        6.0, "video:unknown",
    )  # fmt: skip
    assert (d.billable, d.usage, d.upstream_error, d.metered) == (False, None, "3", True)
    assert (e.billable, e.unmetered_reason) == (True, Unmetered.NO_USAGE)


def test_one_result_and_the_edges() -> None:
    result = batch_pb2.BatchResult(
        batch_request_id="a",
        response=batch_pb2.BatchResultData(
            completion_response=chat_pb2.GetChatCompletionResponse(model="m", usage=CHAT_USAGE)
        ),
    )
    ask = batch_pb2.GetBatchRequestResultRequest(batch_id="b1", batch_request_id="a")
    one = read(ONE, ask, batch_pb2.GetBatchRequestResultResponse(result=result))
    [only] = one.derived or []
    assert (only.linked_id, only.response_id, only.model, only.path) == ("b1", "a", "m", ONE)
    # no result in the answer, or no batch id in the request: nothing derived
    assert read(ONE, ask, batch_pb2.GetBatchRequestResultResponse()).derived is None
    page = batch_pb2.ListBatchResultsResponse(results=[result])
    assert read(LIST, batch_pb2.ListBatchResultsRequest(), page).derived is None
    # the other BatchMgmt methods: recorded, unbilled, nothing read; every one unary
    for name in ("CreateBatch", "AddBatchRequests", "GetBatch", "ListBatchRequestMetadata"):
        spec = method(f"/xai_api.BatchMgmt/{name}")
        assert (spec.endpoint, spec.billable, spec.read_last) == ("batches", False, None)
    batch_shapes = {n: s for n, s in shapes().items() if n.startswith("/xai_api.BatchMgmt/")}
    assert len(batch_shapes) == 8 and set(batch_shapes.values()) == {(False, False)}
