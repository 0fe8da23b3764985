"""Image generation and editing (`POST /v1/images/generations`, `/v1/images/edits`).

Shapes read (xai-api.md, "Images"): the request's ``model`` (JSON, or the ``model`` field of
an edit's multipart form); the answer ``{"data": [{url|b64_json, mime_type}], "usage":
{"cost_in_usd_ticks" | "cost_in_nano_usd"}}`` (ticks = nano * 10). Billed per image: the
count is the length of `data`; 2025 answers had no usage. The answer carries no id and no model,
so pricing uses the requested model (a missing one bills the default); the call's id is the
``x-request-id`` header.
"""

from __future__ import annotations

import re

from daemon.dialects.base import Clock, Dialect, Tap, note_model_and_id
from daemon.dialects.body import BodyTap
from daemon.dialects.coerce import loads_object, opt_str, reported_ticks, sub
from daemon.record import CallRecord, Usage

# name="model" in a multipart body: the value is the part's content up to the boundary's CRLF.
_MULTIPART_MODEL = re.compile(rb'name="model"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]{1,200})\r\n')


class ImageBody(BodyTap):
    def parse(self, body: bytes) -> None:
        record = self.record
        obj = self.success_object(body)
        if obj is None:
            return
        data = obj.get("data")
        if not isinstance(data, list):
            return  # no images: unmetered (no_usage)
        note_model_and_id(record, obj.get("model"))
        reported = reported_ticks(sub(obj, "usage"))
        record.usage = Usage(images=len(data), reported_cost_ticks=reported)


class ImagesDialect(Dialect):
    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        record.billable = record.method == "POST"
        obj = loads_object(body) if body[:1] == b"{" else None
        if obj is not None:
            record.requested_model = opt_str(obj.get("model"))
        else:
            match = _MULTIPART_MODEL.search(body[:65536])
            if match:
                record.requested_model = match.group(1).decode("utf-8", "replace")
        return None

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        return ImageBody(record, clock, encoding)
