"""Video (`POST /v1/videos/generations | edits | extensions`, `GET /v1/videos/{request_id}`).

Shapes read (xai-api.md, "Video"; the proto `xai_api.GenerateVideoRequest` for the fields it
lists): the request's ``model``, ``resolution`` (``480p | 720p | 1080p``; or ``size``, read by
its height), ``duration`` and its inputs: ``image`` (one), ``reference_images`` and
``keyframes`` (one each; a keyframe list or an object of frames) count as input images, and a
``video`` marks an edit's or extension's input video. The POST answers ``{"request_id"}`` (kept
as the response id) and is not billed: it is a deferred request (`daemon.meter.deferred`). A
poll answers 202 while the job runs (any body: not read), or 200 with ``status``: ``pending``
(not billed), ``done`` (``{"video": {url, duration, respect_moderation}, "model", "usage":
{"cost_in_usd_ticks"}}``, billed once by the deferred tracker), ``failed`` (with ``error``:
its code kept) or ``expired`` (both unbilled). The status goes to ``record.job_status``.

A done answer's usage (`video_usage`) is priced from the catalog (``catalog_rate``
``video:RESOLUTION``): ``video_seconds`` from ``video.duration``, plus the request's input images
(``video_image_inputs``) and, for an edit, its input video, taken to be as long as the output
(``video_input_seconds``; [guess]: an edit re-renders its input, as third parties describe it).
An extension's input length is in neither the request nor the answer: it is left out of the
computed cost (the reported cost, when present, has it). The
resolution and input images come from the POST, through the deferred tracker (a batch line's,
from its request when the answer carries it: `daemon.dialects.batches`); a result whose request
is unknown is priced at no resolution (``video:unknown``: no computed cost, the reported one
stands). A done answer without ``video.duration`` is unmetered (``no_usage``). The POST keeps
what prices the result in ``record.video_request`` (`request_column`, a column), so a result
after a restart is priced as asked too; the tracker carries it to the result, and
`complete_result` redoes the usage.
"""

from __future__ import annotations

from typing import Any, Final

from daemon.dialects.base import Clock, Dialect, Tap, note_model_and_id, read_error
from daemon.dialects.body import BodyTap
from daemon.dialects.coerce import loads_object, opt_str, reported_ticks, sub
from daemon.pricing.cost import VIDEO_UNKNOWN_RESOLUTION
from daemon.record import CallRecord, Unmetered, Usage

#: The endpoint of a video poll (`GET /v1/videos/{request_id}`).
RESULT_ENDPOINT: Final = "videos.result"
RESOLUTIONS: Final = ("480p", "720p", "1080p")
_STATUSES: Final = frozenset({"pending", "done", "failed", "expired"})


def resolution_of(request: dict[str, Any]) -> str | None:
    """The request's resolution, lower case: ``resolution`` when it is one of `RESOLUTIONS`,
    else ``size`` (``1280x720``) read by its smaller side; None when neither says."""
    value = opt_str(request.get("resolution"), 20)
    if value is not None:
        value = value.strip().lower()
        if value in RESOLUTIONS:
            return value
        if value.isdigit() and f"{value}p" in RESOLUTIONS:
            return f"{value}p"
    size = opt_str(request.get("size"), 20)
    if size is not None and "x" in size:
        try:
            height = min(int(side) for side in size.lower().split("x", 1))
        except ValueError:
            return None
        found = f"{height}p"
        return found if found in RESOLUTIONS else None
    return None


def count_image_inputs(request: dict[str, Any]) -> int:
    """Input images of a video request: ``image``, each of ``reference_images``, and each of
    ``keyframes`` (a list, or an object of frames); ``last_frame`` too (the proto has it)."""
    count = sum(1 for key in ("image", "last_frame") if request.get(key))
    for key in ("reference_images", "keyframes"):
        value = request.get(key)
        if isinstance(value, list | dict):
            count += len(value)
    return count


def _seconds(value: Any) -> float | None:
    """A duration in seconds from JSON: a non-negative finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return seconds if 0.0 <= seconds < float("inf") else None


def request_column(kind: str, request: dict[str, Any] | None) -> str:
    """A video POST's ``video_request`` value: ``KIND/RESOLUTION/IMAGES`` (``edits/720p/1``;
    the resolution empty when the request names none, or when its body could not be read)."""
    if request is None:
        return column(kind, None, 0)
    return column(kind, resolution_of(request), count_image_inputs(request))


def column(kind: str, resolution: str | None, images: int) -> str:
    """A ``video_request`` value from its parts (`request_column` reads them from a REST body,
    `daemon.grpc_relay.methods` from a ``GenerateVideoRequest``/``ExtendVideoRequest``)."""
    return f"{kind}/{resolution or ''}/{images}"


def parse_request_column(value: str | None) -> tuple[str | None, str | None, int]:
    """(kind, resolution, input images) of a ``video_request`` value; (None, None, 0) for none
    (a result whose POST this ledger never saw)."""
    kind, _, rest = (value or "").partition("/")
    resolution, _, images = rest.partition("/")
    return kind or None, resolution or None, int(images) if images.isdigit() else 0


def read_video_answer(record: CallRecord, obj: dict[str, Any]) -> None:
    """Fill the record from a video answer: ``job_status``, ``model``, and for a ``done`` one
    (an answer naming no status but carrying a video counts as done: a batch result) its usage
    (`video_usage`); a failed one keeps its error's code."""
    status = opt_str(obj.get("status"), 20)
    video = obj.get("video")
    if status is None and isinstance(video, dict):
        status = "done"
    record.job_status = status.lower() if status and status.lower() in _STATUSES else status
    if record.job_status == "failed":
        error = obj.get("error")
        code = error.get("code") if isinstance(error, dict) else error
        record.upstream_error = opt_str(code, 120) or "failed"
        return
    if record.job_status != "done":
        return
    note_model_and_id(record, obj.get("model"))
    seconds = _seconds(sub(obj, "video").get("duration"))
    if seconds is None:
        return  # unmetered (no_usage): the bill's one quantity is missing
    record.usage = video_usage(record.video_request, seconds, reported_ticks(sub(obj, "usage")))


def video_usage(request: str | None, seconds: float, reported: int | None) -> Usage:
    """The usage of a done job of ``seconds`` whose POST asked ``request`` (a ``video_request``
    value): priced at ``video:RESOLUTION`` (a request that named none: ``video``, the catalog's
    default), with the request's input images and, for an edit, its input video (as long as
    the output). None (the request is unknown: a batch line's result, a poll whose POST this
    ledger never saw): ``video:unknown`` (`VIDEO_UNKNOWN_RESOLUTION`), which has no computed
    cost: the reported one stands, rather than a guess at the default resolution."""
    kind, resolution, images = parse_request_column(request)
    if request is None:
        resolution = VIDEO_UNKNOWN_RESOLUTION
    return Usage(
        catalog_rate=f"video:{resolution}" if resolution else "video",
        video_seconds=seconds,
        video_image_inputs=images,
        video_input_seconds=seconds if kind == "edits" else 0.0,
        reported_cost_ticks=reported,
    )


def complete_result(record: CallRecord) -> None:
    """Price a video result as its POST asked: once the deferred tracker has carried the
    POST's ``video_request`` onto the result, redo the usage with it (the tap read the answer
    before it knew the request)."""
    usage = record.usage
    if usage is not None and record.video_request is not None:
        record.usage = video_usage(
            record.video_request, usage.video_seconds, usage.reported_cost_ticks
        )


class VideoPostBody(BodyTap):
    """A video POST's answer: ``{"request_id"}``, kept as the response id."""

    def parse(self, body: bytes) -> None:
        obj = self.success_object(body)
        if obj is not None:
            note_model_and_id(self.record, None, obj.get("request_id"))


class VideoPollBody(BodyTap):
    """A video poll's 200 answer (`read_video_answer`); billable only when it says done."""

    def parse(self, body: bytes) -> None:
        record = self.record
        obj = loads_object(body)
        if obj is None:
            record.mark_unmetered(Unmetered.MALFORMED)  # a 200 that may have been the result
            return
        read_video_answer(record, obj)
        record.billable = record.job_status == "done"
        if "code" in obj and record.job_status is None:
            read_error(record, obj)


class VideoDialect(Dialect):
    """`POST /v1/videos/generations | edits | extensions` (one instance per endpoint, named
    ``videos.<kind>``): a deferred request, never billed itself. Reads the request's model,
    resolution, input images and kind onto the record (``video_request``, which the deferred
    tracker carries to the result) and the answer's ``request_id``."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"videos.{kind}", billable=False)
        self.kind = kind

    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        if record.method != "POST":
            return None
        record.deferred = True  # billed when its result comes, by the poll that says done
        obj = loads_object(body)
        if obj is not None:
            record.requested_model = opt_str(obj.get("model"))
        record.video_request = request_column(self.kind, obj)
        return None

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if record.method == "POST":
            return VideoPostBody(record, clock, encoding)
        return Tap(record, clock)


class VideoResultDialect(Dialect):
    """`GET /v1/videos/{request_id}` (`RESULT_ENDPOINT`): a 202 is relayed unread; a 200 is read
    (`VideoPollBody`) and billed once, by the deferred tracker, when it says done."""

    def __init__(self) -> None:
        super().__init__(RESULT_ENDPOINT, billable=False)

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if record.method == "GET" and record.status == 200:
            return VideoPollBody(record, clock, encoding)
        return Tap(record, clock)
