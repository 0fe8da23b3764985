"""Image generation and editing (`POST /v1/images/generations`, `/v1/images/edits`), and
deferred image results (`GET /v1/images/{request_id}`).

Shapes read (xai-api.md, "Images"): the request's ``model``, ``quality`` and ``resolution``
(JSON, or those fields of an edit's multipart form; nothing else is parsed); the answer
``{"data": [{url|b64_json, mime_type}], "usage": {"cost_in_usd_ticks" | "cost_in_nano_usd"}}``
(ticks = nano * 10). Billed per image: the
count is the length of `data`; 2025 answers had no usage. The answer carries no id and no
model: pricing sets ``model`` to the requested one resolved through the price book, and a
request without a model bills the default, `DEFAULT_IMAGE_MODEL`; the call's id is the
``x-request-id`` header. ``quality`` x ``resolution`` pick the listing's ``pricing[]`` tier
(``record.image_tier``, lower case, as the request gave them: a missing half is None and
`daemon.pricing.cost.IMAGE_DEFAULTS` fills it).

Deferred (xai-api.md, "Images"): ``"deferred": true`` makes the POST answer ``{"request_id"}``,
noted as its response id and not billed; ``GET /v1/images/{request_id}`` answers 202 while
pending, then 200 with a ``status`` of done | failed | pending [doc]. A done answer carries the
images answer's ``data`` and ``usage`` [guess: the same shape as the POST's] and is billed like
it (`ImageResultBody`); ``record.job_status`` says the status, and `daemon.meter.deferred`
links the result to its POST, bills it once and carries the POST's model and quality x
resolution to it (a result answer names neither).
"""

from __future__ import annotations

import re
from typing import Any, Final

from daemon.dialects.base import Clock, Dialect, Tap, note_model_and_id
from daemon.dialects.body import BodyTap
from daemon.dialects.coerce import loads_object, opt_str, reported_ticks, sub
from daemon.record import CallRecord, Usage

#: What xAI bills a request without ``model`` (xai-api.md "Images": "a missing model bills the
#: default"; the API's documented default [3p]); listed under this id in every known listing.
DEFAULT_IMAGE_MODEL: Final = "grok-imagine-image"

# A field of a multipart body: the value is the part's content up to the boundary's CRLF.
_MULTIPART_FIELD = re.compile(
    rb'name="(model|quality|resolution)"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]{1,200})\r\n'
)


def read_images(record: CallRecord, obj: dict[str, Any]) -> None:
    """Bill an images answer ``{"data": [...], "usage": {...}}``: ``len(data)`` images with
    ``usage``'s reported cost when present; no ``data`` list, no usage (then unmetered)."""
    data = obj.get("data")
    if not isinstance(data, list):
        return  # no images: unmetered (no_usage)
    note_model_and_id(record, obj.get("model"))
    reported = reported_ticks(sub(obj, "usage"))
    record.usage = Usage(images=len(data), reported_cost_ticks=reported)


class ImageBody(BodyTap):
    """A whole images answer, billed per image (`read_images`). The model: the answer's (none
    sent today), else the requested one (pricing resolves it), else `DEFAULT_IMAGE_MODEL`. A
    deferred POST's ``{"request_id"}`` answer only notes that id as the response id."""

    def parse(self, body: bytes) -> None:
        record = self.record
        obj = self.success_object(body)
        if obj is None:
            return
        if record.deferred and "request_id" in obj and "data" not in obj:
            note_model_and_id(record, None, obj.get("request_id"))
            return
        read_images(record, obj)
        if record.usage is not None and record.model is None and record.requested_model is None:
            record.model = DEFAULT_IMAGE_MODEL  # else pricing resolves the requested one


class ImageResultBody(BodyTap):
    """A deferred image poll's 200: ``{"status": "done" | "failed" | "pending" | "expired",
    ...}`` (a body with ``data`` and no status counts as done). Notes ``job_status``; a done
    answer is billable and billed per image (`read_images`); any other bills nothing."""

    def parse(self, body: bytes) -> None:
        record = self.record
        obj = self.success_object(body)
        if obj is None:
            return
        status = opt_str(obj.get("status"))
        if status is None and isinstance(obj.get("data"), list):
            status = "done"
        record.job_status = status.strip().lower() if status else None
        if record.job_status == "done":
            record.billable = True
            read_images(record, obj)


class ImagesDialect(Dialect):
    """`POST /v1/images/generations` and `/v1/images/edits` (xai-api.md, "Images"), one
    instance per endpoint name; only a POST is billed, and a deferred one (``"deferred":
    true``) not until its result. Reads the request's ``model``, ``quality``, ``resolution``
    and ``deferred`` (JSON, or an edit's multipart fields in its first 64 KiB), and the answer's
    ``data`` and ``usage`` (`ImageBody`)."""

    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        record.billable = record.method == "POST"
        obj: dict[str, Any] | None = loads_object(body) if body.lstrip()[:1] == b"{" else None
        if obj is not None and obj.get("deferred") is True:
            record.deferred = True
            record.billable = False  # billed when its result comes, not now
        if obj is None:
            obj = {
                m.group(1).decode(): m.group(2).decode("utf-8", "replace")
                for m in _MULTIPART_FIELD.finditer(body[:65536])
            }
        record.requested_model = opt_str(obj.get("model"))
        quality, resolution = opt_str(obj.get("quality")), opt_str(obj.get("resolution"))
        if quality or resolution:
            record.image_tier = (
                quality.strip().lower() if quality else None,
                resolution.strip().lower() if resolution else None,
            )
        return None

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        return ImageBody(record, clock, encoding)


class ImageResultDialect(Dialect):
    """`GET /v1/images/{request_id}`: a deferred image job's poll. 202 while pending and a 200
    that says pending, failed or expired bill nothing; the 200 that says done is billed per
    image (`ImageResultBody`), once, linked to its POST by `daemon.meter.deferred`."""

    def __init__(self) -> None:
        super().__init__("images.deferred", billable=False)

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if record.status == 200 and record.method == "GET":
            return ImageResultBody(record, clock, encoding)
        return Tap(record, clock)
