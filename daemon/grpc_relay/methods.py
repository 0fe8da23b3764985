"""The one table of gRPC methods: what each is called, whether it bills, how to read it.

A full method name (``/xai_api.Chat/GetCompletion``) maps to a `Method`: the endpoint name it is
counted under (its REST twin's, so a call reads the same in the ledger, metrics and dashboards
whichever transport it came by), whether it bills, and the readers of its request and of its
answer. Every reader parses a copy of the message bytes with xAI's own classes
(`daemon.grpc_relay.protos`); the bytes the client gets are the upstream's, never re-serialized.

Billed (xai-api.md, "gRPC API"): ``Chat/GetCompletion`` and ``Chat/GetCompletionChunk`` (a
server stream: usage is final on the last chunk, which `read_last` reads; a stream cut before it
is unmetered), ``Chat/GetDeferredCompletion`` (once, at ``DONE``; linked to its
``StartDeferredCompletion`` by `daemon.meter.deferred`), ``Chat/CompactContext``,
``Sample/SampleText[Streaming]``, ``Image/GenerateImage`` and ``Video/GetDeferredVideo`` (once,
at ``DONE``). Never billed: ``Chat/GetStoredCompletion`` (a replay of a stored answer),
``DeleteStoredCompletion``, ``Models/*``, ``Tokenize/*``, ``Auth/*``; and what no row names (a
newer service): relayed and recorded as ``other``. ``BatchMgmt/*`` calls are recorded unbilled
(``batches``), and the results a ``ListBatchResults`` page or a ``GetBatchRequestResult``
answer holds become derived ``batches.result`` records exactly as REST's results pages do
(`daemon.dialects.batches.result_record`: the same rows, billed once across both transports and
restarts by the meter's gate, `daemon.meter.batches`); the batch id comes from the request
message (``record.batch_id``), the model, usage and cost from the embedded answer message.

Shapes (xai_sdk.proto): chat answers and chunks ``{id, model, system_fingerprint, usage,
service_tier}``; sample answers ``{id, model, system_fingerprint, usage}``; compaction
``{id, usage}``; deferred results ``{status, response}`` (``DeferredStatus``: 1 DONE, 2
EXPIRED, 3 PENDING, 4 FAILED); images ``{images[], model, usage}``; videos ``{video: {url,
duration (whole seconds)}, model, usage, error: {code, message}}``; batch results ``{results[]
| result: BatchResult}``, ``BatchResult {batch_request_id, oneof result {response:
{completion_response | image_response | video_response}, error: google.rpc.Status {code,
message}}}``; the key ``{name, team_id, api_key_id}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from daemon.dialects import videos
from daemon.dialects.base import note_model_and_id, note_served
from daemon.dialects.batches import result_record
from daemon.dialects.coerce import opt_str
from daemon.dialects.images import DEFAULT_IMAGE_MODEL
from daemon.grpc_relay import protos
from daemon.grpc_relay.usage import sampling_usage, service_tier
from daemon.record import CallRecord, Usage

Reader = Callable[[CallRecord, bytes], None]

_pb = protos.load()
_chat, _sample, _image, _video = (
    _pb["chat_pb2"],
    _pb["sample_pb2"],
    _pb["image_pb2"],
    _pb["video_pb2"],
)
_deferred, _auth, _batch = _pb["deferred_pb2"], _pb["auth_pb2"], _pb["batch_pb2"]

_DONE = 1  # DeferredStatus.DONE
#: ``DeferredStatus`` → `CallRecord.job_status` (INVALID_DEFERRED_STATUS, 0, is no status).
_JOB_STATUS = {
    _DONE: "done",
    _deferred.DeferredStatus.Value("EXPIRED"): "expired",
    _deferred.DeferredStatus.Value("PENDING"): "pending",
    _deferred.DeferredStatus.Value("FAILED"): "failed",
}
#: ``ImageQuality`` and ``ImageResolution`` numbers → the words of the listing's price tiers.
_IMAGE_QUALITY: Final = {1: "low", 2: "medium", 3: "high"}
_IMAGE_RESOLUTION: Final = {1: "1k", 2: "2k"}
#: ``VideoResolution`` numbers → `videos.RESOLUTIONS`.
_VIDEO_RESOLUTION: Final = {1: "480p", 2: "720p", 3: "1080p"}


@dataclass(frozen=True, slots=True)
class Method:
    """How one gRPC method is counted and read.

    ``stream``: the answer is a server stream (the record's ``stream``); ``deferred``: it starts
    a deferred job and answers its request id. ``read_request`` reads the (single) request
    message; ``read_last`` the last answer message (a unary call's only one), once the upstream
    ended the call with OK; ``read_first`` a stream's first message, as it passes.
    """

    endpoint: str
    billable: bool = False
    stream: bool = False
    deferred: bool = False
    read_request: Reader | None = None
    read_first: Reader | None = None
    read_last: Reader | None = None


# --- readers: each parses a copy of one message --------------------------------------------


def _requested_model(cls: Any) -> Reader:
    def read(record: CallRecord, data: bytes) -> None:
        record.requested_model = cls.FromString(data).model or None

    return read


def _answer(record: CallRecord, msg: Any, tier: bool = True) -> None:
    """Fill the record from a chat or sample answer (or a stream's last chunk)."""
    note_model_and_id(record, msg.model, msg.id)
    note_served(record, msg.system_fingerprint, service_tier(msg.service_tier) if tier else None)
    if msg.HasField("usage"):
        record.usage = sampling_usage(msg.usage)


def _answer_reader(cls: Any, tier: bool = True) -> Reader:
    def read(record: CallRecord, data: bytes) -> None:
        _answer(record, cls.FromString(data), tier)

    return read


def _first_reader(cls: Any) -> Reader:
    def read(record: CallRecord, data: bytes) -> None:
        msg = cls.FromString(data)
        note_model_and_id(record, msg.model, msg.id)

    return read


def _compacted(record: CallRecord, data: bytes) -> None:
    msg = _chat.CompactContextResponse.FromString(data)
    note_model_and_id(record, None, msg.id)  # no model: pricing takes the requested one
    if msg.HasField("usage"):
        record.usage = sampling_usage(msg.usage)


def _started(record: CallRecord, data: bytes) -> None:
    """A deferred job's start: its request id is the response id (as REST's ``request_id``)."""
    note_model_and_id(record, None, _deferred.StartDeferredResponse.FromString(data).request_id)


def _generate_column(msg: Any) -> str:
    """What prices a ``GenerateVideoRequest``'s result, as REST's video POST keeps it
    (`videos.column`): its resolution (unset: the default's, as a REST body naming none), its
    input images (``image``, ``last_frame``, each of ``reference_images`` and ``keyframes``),
    and its kind: ``edits`` when it names an input ``video`` (REST's edit), else
    ``generations``. A field the installed protos lack (xai-sdk 1.19's have no ``last_frame``)
    counts as absent: the client's bytes may carry it, but this copy cannot read it."""
    fields = msg.DESCRIPTOR.fields_by_name

    def has(name: str) -> bool:
        return name in fields and bool(msg.HasField(name))

    resolution = _VIDEO_RESOLUTION.get(msg.resolution) if has("resolution") else None
    images = sum(1 for name in ("image", "last_frame") if has(name))
    images += sum(
        len(getattr(msg, name)) for name in ("reference_images", "keyframes") if name in fields
    )
    kind = "edits" if has("video") else "generations"
    return videos.column(kind, resolution, images)


def _video_request(record: CallRecord, data: bytes) -> None:
    """A ``GenerateVideoRequest``: its model and ``record.video_request`` (`_generate_column`),
    which the deferred tracker carries to the DONE poll."""
    msg = _video.GenerateVideoRequest.FromString(data)
    record.requested_model = msg.model or None
    record.video_request = _generate_column(msg)


def _extend_request(record: CallRecord, data: bytes) -> None:
    """An ``ExtendVideoRequest``: its model, and ``video_request`` ``extensions//0`` (the
    message has no resolution or input images to ask)."""
    record.requested_model = _video.ExtendVideoRequest.FromString(data).model or None
    record.video_request = videos.column("extensions", None, 0)


def _deferred_request(cls: Any) -> Reader:
    def read(record: CallRecord, data: bytes) -> None:
        record.deferred_request_id = cls.FromString(data).request_id or None

    return read


def _job_status(record: CallRecord, status: int) -> bool:
    """Note a deferred poll's ``DeferredStatus`` as the record's ``job_status`` (the deferred
    tracker's word for it, as REST's image and video polls give it); True when DONE."""
    record.job_status = _JOB_STATUS.get(status)
    return status == _DONE


def _deferred_chat(record: CallRecord, data: bytes) -> None:
    msg = _chat.GetDeferredCompletionResponse.FromString(data)
    if not _job_status(record, msg.status):
        return  # pending, expired or failed: nothing to bill (REST: 202, or no result)
    record.billable = True
    if msg.HasField("response"):
        _answer(record, msg.response)


def _reported(msg: Any) -> int | None:
    """An answer's ``usage.cost_in_usd_ticks`` when the upstream set it (0 is a bill of
    nothing; unset is no bill)."""
    if msg.HasField("usage") and msg.usage.HasField("cost_in_usd_ticks"):
        return int(msg.usage.cost_in_usd_ticks)
    return None


def _video_answer(record: CallRecord, msg: Any) -> None:
    """Fill the record from a ``VideoResponse`` (a DONE poll's, or a batch result's) as REST
    reads its video answer (`videos.read_video_answer`): an error keeps its code and bills
    nothing; else the model, and the usage by generated seconds (`videos.video_usage`, priced
    from the catalog as the POST asked when the tracker carries its ``video_request``) with
    the reported cost."""
    if msg.HasField("error"):
        record.upstream_error = opt_str(msg.error.code, 120) or "failed"
        return
    note_model_and_id(record, msg.model)
    if msg.HasField("video"):
        seconds = float(msg.video.duration)
        record.usage = videos.video_usage(record.video_request, seconds, _reported(msg))


def _deferred_video(record: CallRecord, data: bytes) -> None:
    msg = _video.GetDeferredVideoResponse.FromString(data)
    if not _job_status(record, msg.status):
        if msg.response.HasField("error"):  # a FAILED job: its code kept, as REST's poll does
            _video_answer(record, msg.response)
        return
    record.billable = True
    _video_answer(record, msg.response)


def _image_request(record: CallRecord, data: bytes) -> None:
    msg = _image.GenerateImageRequest.FromString(data)
    record.requested_model = msg.model or None
    quality = _IMAGE_QUALITY.get(msg.quality) if msg.HasField("quality") else None
    resolution = _IMAGE_RESOLUTION.get(msg.resolution) if msg.HasField("resolution") else None
    if quality or resolution:
        record.image_tier = (quality, resolution)


def _image_answer(record: CallRecord, msg: Any) -> None:
    """Fill the record from an ``ImageResponse``: billed per image, with the reported cost when
    the usage carries one (as REST); no model named or asked: `DEFAULT_IMAGE_MODEL`."""
    note_model_and_id(record, msg.model)
    if record.model is None and record.requested_model is None:
        record.model = DEFAULT_IMAGE_MODEL
    record.usage = Usage(images=len(msg.images), reported_cost_ticks=_reported(msg))


def _images(record: CallRecord, data: bytes) -> None:
    _image_answer(record, _image.ImageResponse.FromString(data))


def _api_key(record: CallRecord, data: bytes) -> None:
    msg = _auth.ApiKey.FromString(data)
    record.key_info = {
        "name": msg.name or None,
        "team_id": msg.team_id or None,
        "api_key_id": msg.api_key_id or None,
    }


def _batch_request(cls: Any) -> Reader:
    def read(record: CallRecord, data: bytes) -> None:
        record.batch_id = cls.FromString(data).batch_id or None

    return read


#: ``BatchResultData``'s answer fields → how each is read (REST's kinds: chat, image, video).
_BATCH_ANSWERS: Final[dict[str, Callable[[CallRecord, Any], None]]] = {
    "completion_response": _answer,
    "image_response": _image_answer,
    "video_response": _video_answer,
}


def _filler(read: Callable[[CallRecord, Any], None], msg: Any) -> Callable[[CallRecord], None]:
    def fill(record: CallRecord) -> None:
        read(record, msg)

    return fill


def _line_column(line: Any) -> str | None:
    """The ``video_request`` of a ``BatchRequest`` (a video or extension line), else None."""
    kind = line.WhichOneof("request")
    if kind == "video_request":
        return _generate_column(line.video_request)
    if kind == "video_extension_request":
        return videos.column("extensions", None, 0)
    return None


def _derive(record: CallRecord, results: Any, video_request: str | None = None) -> None:
    """Each ``BatchResult`` as a derived record of the call (`result_record`): an error result
    with its code, an answer read by its kind (`_BATCH_ANSWERS`; a video priced by
    ``video_request``, its line's, when the answer came beside it, else at no resolution); one
    without an id is skipped, as on REST. Nothing without the batch id the request named."""
    batch_id = record.batch_id
    if batch_id is None:
        return
    derived = []
    for result in results:
        request_id = result.batch_request_id
        if not request_id:
            continue
        if result.WhichOneof("result") == "error":
            code = str(result.error.code)
            derived.append(result_record(record, batch_id, request_id, error=code))
            continue
        kind = result.response.WhichOneof("response")
        read = _BATCH_ANSWERS.get(kind) if kind is not None else None
        fill = None if read is None else _filler(read, getattr(result.response, kind))
        derived.append(
            result_record(
                record, batch_id, request_id, read_answer=fill, video_request=video_request
            )
        )
    record.derived = derived or None


def _batch_results(record: CallRecord, data: bytes) -> None:
    _derive(record, _batch.ListBatchResultsResponse.FromString(data).results)


def _batch_result(record: CallRecord, data: bytes) -> None:
    msg = _batch.GetBatchRequestResultResponse.FromString(data)
    if msg.HasField("result"):
        line = _line_column(msg.request) if msg.HasField("request") else None
        _derive(record, (msg.result,), line)


# --- the table -----------------------------------------------------------------------------

_chat_request = _requested_model(_chat.GetCompletionsRequest)
_sample_request = _requested_model(_sample.SampleTextRequest)

METHODS: Final[dict[str, Method]] = {
    "/xai_api.Chat/GetCompletion": Method(
        "chat.completions",
        billable=True,
        read_request=_chat_request,
        read_last=_answer_reader(_chat.GetChatCompletionResponse),
    ),
    "/xai_api.Chat/GetCompletionChunk": Method(
        "chat.completions",
        billable=True,
        stream=True,
        read_request=_chat_request,
        read_first=_first_reader(_chat.GetChatCompletionChunk),
        read_last=_answer_reader(_chat.GetChatCompletionChunk),
    ),
    "/xai_api.Chat/StartDeferredCompletion": Method(
        "chat.completions", deferred=True, read_request=_chat_request, read_last=_started
    ),
    "/xai_api.Chat/GetDeferredCompletion": Method(
        "chat.deferred",
        read_request=_deferred_request(_deferred.GetDeferredRequest),
        read_last=_deferred_chat,
    ),
    "/xai_api.Chat/GetStoredCompletion": Method("responses"),
    "/xai_api.Chat/DeleteStoredCompletion": Method("responses"),
    "/xai_api.Chat/CompactContext": Method(
        "responses",
        billable=True,
        read_request=_requested_model(_chat.CompactContextRequest),
        read_last=_compacted,
    ),
    "/xai_api.Sample/SampleText": Method(
        "completions",
        billable=True,
        read_request=_sample_request,
        read_last=_answer_reader(_sample.SampleTextResponse, tier=False),
    ),
    "/xai_api.Sample/SampleTextStreaming": Method(
        "completions",
        billable=True,
        stream=True,
        read_request=_sample_request,
        read_first=_first_reader(_sample.SampleTextResponse),
        read_last=_answer_reader(_sample.SampleTextResponse, tier=False),
    ),
    "/xai_api.Image/GenerateImage": Method(
        "images.generations", billable=True, read_request=_image_request, read_last=_images
    ),
    "/xai_api.Video/GenerateVideo": Method(
        "videos.generations",
        deferred=True,
        read_request=_video_request,
        read_last=_started,
    ),
    "/xai_api.Video/ExtendVideo": Method(
        "videos.extensions",
        deferred=True,
        read_request=_extend_request,
        read_last=_started,
    ),
    "/xai_api.Video/GetDeferredVideo": Method(
        videos.RESULT_ENDPOINT,
        read_request=_deferred_request(_video.GetDeferredVideoRequest),
        read_last=_deferred_video,
    ),
    "/xai_api.BatchMgmt/ListBatchResults": Method(
        "batches",
        read_request=_batch_request(_batch.ListBatchResultsRequest),
        read_last=_batch_results,
    ),
    "/xai_api.BatchMgmt/GetBatchRequestResult": Method(
        "batches",
        read_request=_batch_request(_batch.GetBatchRequestResultRequest),
        read_last=_batch_result,
    ),
    "/xai_api.Auth/get_api_key_info": Method("api-key", read_last=_api_key),
    "/xai_api.Models/ListLanguageModels": Method("language-models"),
    "/xai_api.Models/GetLanguageModel": Method("language-models"),
    "/xai_api.Models/ListImageGenerationModels": Method("image-generation-models"),
    "/xai_api.Models/GetImageGenerationModel": Method("image-generation-models"),
    "/xai_api.Models/ListEmbeddingModels": Method("models"),
    "/xai_api.Models/GetEmbeddingModel": Method("models"),
    "/xai_api.Tokenize/TokenizeText": Method("tokenize-text"),
    "/xai_api.Embedder/Embed": Method("embeddings"),
}

#: Whole services counted under one endpoint name (their REST twins'); none bills.
SERVICES: Final[dict[str, str]] = {
    "/xai_api.BatchMgmt/": "batches",
    "/xai_api.Files/": "files",
}
OTHER: Final = Method("other")


def method(name: str) -> Method:
    """The `Method` of a full method name; `OTHER` (relayed, recorded, never billed) for one
    no row names."""
    found = METHODS.get(name)
    if found is not None:
        return found
    service = name[: name.rfind("/") + 1]
    endpoint = SERVICES.get(service)
    return OTHER if endpoint is None else Method(endpoint)


def shapes() -> dict[str, tuple[bool, bool]]:
    """Every method the generated modules declare → (request streams, response streams), from
    their service descriptors: the relay serves a method it knows in its own shape and any
    other one as a bidirectional stream (on the wire, every shape is one)."""
    found: dict[str, tuple[bool, bool]] = {}
    for module in _pb.values():
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                found[f"/{service.full_name}/{m.name}"] = (m.client_streaming, m.server_streaming)
    return found
