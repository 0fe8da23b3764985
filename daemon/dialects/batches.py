"""The Batch API's results (`GET /v1/batches/{id}/results`, `.../results/{batch_request_id}`):
each batch request result read from the answer becomes a record of its own.

Every relayed `/v1/batches...` call is one unbilled row of endpoint ``batches``, as always. A
results page (or one result) is read here, and each result in it becomes a *derived* record
(`CallRecord.derived`, handed to the meter with its page: `daemon.meter`; `result_record`,
which gRPC's ``BatchMgmt/ListBatchResults`` and ``GetBatchRequestResult`` share): endpoint
``batches.result``, ``linked_id`` = the batch id (from the path), ``response_id`` = the
``batch_request_id``, and model, tokens and cost from the embedded answer. Such a row is born
from a page, not from a relayed call, so it says where it was read: ``method``, ``path``,
``status``, ``transport``, ``request_id`` (``x-request-id``), ``key_id`` and ``app`` are those of
the page's call, ``started_at`` is when that call started, and no duration is recorded. Whether
a result was seen before (and so bills nothing new) is the meter's call
(`daemon.meter.batches`), not the tap's.

Shapes read (xai-api.md, "Batch API"; the proto `xai_api.BatchResult` where it is silent): a
page ``{results: [{batch_request_id, batch_result: {response: {<kind>: <answer>}} | {error:
{code, message}}}], pagination_token?}``; one result is the same item, bare or as
``{request, result: <item>}`` (the proto's GetBatchRequestResultResponse). Answer kinds:
``chat_get_completion`` (chat shape; Responses lines come back in it too), ``image_generation``
and ``video_generation`` (`RESULT_KINDS`, with the proto's names as aliases). An answer's cost is
its ``usage.cost_in_usd_ticks`` (already discounted by xAI); pricing computes the rest
(`daemon.pricing`: with the catalog's batch discount). An error result is recorded unbilled, with
its code in ``upstream_error``; an answer of a kind not known here is unmetered (``no_usage``).
A video answer names no resolution: it is priced by its line's request when the answer came
beside it (one result's ``{request, result}``: `line_video_request`), else at no resolution
(``video:unknown``: no computed cost, the reported cost stands; never a guess at 480p). The
lines a batch was given (``POST .../requests``) are not remembered.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Final

from daemon.dialects.base import Clock, Dialect, Tap, is_ok, note_model_and_id
from daemon.dialects.body import BodyTap
from daemon.dialects.chat import read_chat_completion
from daemon.dialects.coerce import opt_str, reported_ticks, sub
from daemon.dialects.images import DEFAULT_IMAGE_MODEL
from daemon.dialects.videos import read_video_answer, request_column
from daemon.record import CallRecord, Unmetered, Usage

ENDPOINT: Final = "batches.result"

#: An answer's key in ``batch_result.response`` → how it is read (REST names first, then the
#: proto's BatchResultData names, which a JSON rendering of it would use).
RESULT_KINDS: Final = {
    "chat_get_completion": "chat",
    "image_generation": "image",
    "video_generation": "video",
    "completion_response": "chat",
    "image_response": "image",
    "video_response": "video",
}


def batch_id_of(path: str) -> str | None:
    """The batch id of ``/v1/batches/{id}/results[/...]``; None for another path."""
    parts = path.split("/")
    if len(parts) >= 5 and parts[1] == "v1" and parts[2] == "batches" and parts[4] == "results":
        return parts[3] or None
    return None


def read_image_answer(record: CallRecord, answer: dict[str, Any]) -> None:
    """An image result (the images answer: ``{data, usage}``; the proto's ImageResponse also
    names its ``model``): billed per image. No model named: `DEFAULT_IMAGE_MODEL` [guess: the
    batch line's own model is not in its result]."""
    data = answer.get("data")
    if not isinstance(data, list):
        data = answer.get("images")  # the proto's field name
    if not isinstance(data, list):
        return
    note_model_and_id(record, answer.get("model"))
    record.model = record.model or DEFAULT_IMAGE_MODEL
    record.usage = Usage(images=len(data), reported_cost_ticks=reported_ticks(sub(answer, "usage")))


def result_record(
    page: CallRecord,
    batch_id: str,
    request_id: str,
    *,
    error: str | None = None,
    read_answer: Callable[[CallRecord], None] | None = None,
    video_request: str | None = None,
) -> CallRecord:
    """The record of one batch result read from the ``page`` call, from values the page's own
    reader already parsed (a REST JSON page: `read_result_item`; a gRPC message:
    `daemon.grpc_relay.methods`), so a result reads the same whichever transport brought it.

    ``request_id`` is the result's ``batch_request_id`` (the row's ``response_id``); ``error``
    the code of an error result, as text (the row's ``upstream_error``: recorded, not billed);
    otherwise ``read_answer`` fills the record (model, fingerprint, service tier, usage with its
    reported cost) from the embedded answer, in its transport's shape; None (an answer of a
    kind not known here, or none at all) leaves it unmetered (``no_usage``). ``video_request``
    is what prices a video answer (`daemon.dialects.videos.column`) when the batch line's
    request is known (the answer came beside it); None: a video answer is priced at no
    resolution (no computed cost; the reported one stands)."""
    record = page.derive(
        page.started_at,
        page.t0,
        endpoint=ENDPOINT,
        linked_id=batch_id,
        response_id=request_id,
        video_request=video_request,
    )
    if error is not None:
        record.upstream_error = error
        return record  # nothing billed: no usage, and none expected
    record.billable = True
    if read_answer is not None:
        read_answer(record)
    if record.usage is None:
        record.mark_unmetered(Unmetered.NO_USAGE)
    return record


def _json_reader(kind: str, answer: dict[str, Any]) -> Callable[[CallRecord], None]:
    if kind == "chat":
        return partial(read_chat_completion, obj=answer)
    if kind == "image":
        return partial(read_image_answer, answer=answer)
    return partial(read_video_answer, obj=answer)


def line_video_request(line: Any) -> str | None:
    """The ``video_request`` of a batch request line (``{batch_request_id, batch_request:
    {video_generation: <a video request>}}``; the proto's ``video_request`` and
    ``video_extension_request`` names too), as its POST would keep it; None for another kind or
    no line."""
    asked = line.get("batch_request") if isinstance(line, dict) else None
    if not isinstance(asked, dict):
        return None
    for key in ("video_generation", "video_request"):
        request = asked.get(key)
        if isinstance(request, dict):
            return request_column("edits" if request.get("video") else "generations", request)
    request = asked.get("video_extension_request")
    return request_column("extensions", request) if isinstance(request, dict) else None


def read_result_item(
    page: CallRecord, batch_id: str, item: dict[str, Any], video_request: str | None = None
) -> CallRecord | None:
    """The record of one result ``item`` of a JSON page (`result_record`, a video answer priced
    by ``video_request`` when its line is known); None without an id."""
    request_id = opt_str(item.get("batch_request_id"))
    if request_id is None:
        return None
    result = item.get("batch_result")
    result = result if isinstance(result, dict) else {}
    error = result.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        text = opt_str(str(code) if isinstance(code, int) else code, 120) or "error"
        return result_record(page, batch_id, request_id, error=text)
    response = result.get("response")
    reader = None
    for key, answer in response.items() if isinstance(response, dict) else ():
        kind = RESULT_KINDS.get(key)
        if kind is not None and isinstance(answer, dict):
            reader = _json_reader(kind, answer)
            break
    return result_record(
        page, batch_id, request_id, read_answer=reader, video_request=video_request
    )


class ResultsBody(BodyTap):
    """A results page or one result: each result item becomes a derived record of the page
    (`read_result_item`). A 2xx page that is not a readable JSON object marks the page's own row
    unmetered (``malformed``): results in it may have gone unbilled."""

    def parse(self, body: bytes) -> None:
        record = self.record
        obj = self.success_object(body)
        if obj is None:
            if is_ok(record):
                record.mark_unmetered(Unmetered.MALFORMED)
            return
        batch_id = batch_id_of(record.path)
        if batch_id is None:
            return
        results = obj.get("results")
        video_request = None
        if not isinstance(results, list):
            single = obj.get("result")
            results = [single if isinstance(single, dict) else obj]
            video_request = line_video_request(obj.get("request"))
        derived = []
        for item in results:
            if isinstance(item, dict):
                found = read_result_item(record, batch_id, item, video_request)
                if found is not None:
                    derived.append(found)
        record.derived = derived or None


class BatchResultsDialect(Dialect):
    """`GET /v1/batches/{id}/results` and `.../results/{batch_request_id}` (xai-api.md, "Batch
    API"): the call itself is an unbilled ``batches`` row; a 200 answer's results become derived
    ``batches.result`` records (`ResultsBody`)."""

    def __init__(self) -> None:
        super().__init__("batches", billable=False)

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if record.method == "GET" and record.status == 200:
            return ResultsBody(record, clock, encoding)
        return Tap(record, clock)
