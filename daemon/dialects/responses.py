"""The Responses API: `POST /v1/responses` (billed), `GET|DELETE /v1/responses/{id}` (never billed).

Shapes read (xai-api.md, "Responses"):

- body: ``{id, model, previous_response_id, service_tier, system_fingerprint, usage}``; ``usage``
  is ``{input_tokens, input_tokens_details{cached_tokens, image_tokens}, output_tokens,
  output_tokens_details{reasoning_tokens}, total_tokens, num_sources_used,
  server_side_tool_usage_details{web_search_calls, x_search_calls, ...}, cost_in_usd_ticks}``
  (some stored responses use chat-style keys: handled too). xai-api.md places 2026's fingerprint
  at ``metadata.system_fingerprint``; only a top-level one is read here.
- stream: typed events whose ``response`` object repeats the body's fields; usage comes on the
  terminal event only (``response.completed``, ``response.incomplete`` or ``response.failed``),
  and no ``[DONE]`` follows it.

Here `output_tokens` already includes reasoning (total = input + output): reasoning is added only
when the total proves it was left out. A stored response fetched again carries its original
usage: that is not a new charge, so it is not read at all.
"""

from __future__ import annotations

import re
from typing import Any

from daemon.dialects.base import Clock, Dialect, Tap, note_model_and_id
from daemon.dialects.body import BodyTap
from daemon.dialects.chat import chat_usage
from daemon.dialects.coerce import as_int, loads_object, opt_int, opt_str, sub
from daemon.dialects.sse import EventTap
from daemon.record import CallRecord, Usage

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_FIRST_TOKEN = re.compile(
    rb'"type"\s*:\s*"response\.(?:output_text|reasoning_text|'
    rb'reasoning_summary_text|refusal)\.delta"'
)


def responses_usage(u: dict[str, Any]) -> Usage:
    """Normalize a Responses `usage` (some stored responses use chat-style keys: handled too)."""
    if "prompt_tokens" in u and "input_tokens" not in u:
        return chat_usage(u)
    inp = as_int(u.get("input_tokens"))
    out = as_int(u.get("output_tokens"))
    reasoning = as_int(sub(u, "output_tokens_details").get("reasoning_tokens"))
    if reasoning and opt_int(u.get("total_tokens")) == inp + out + reasoning:
        out += reasoning  # reasoning reported outside output_tokens after all
    input_details = sub(u, "input_tokens_details")
    tools = {
        name.removesuffix("_calls"): as_int(count)
        for name, count in sub(u, "server_side_tool_usage_details").items()
        if as_int(count)
    }
    return Usage(
        input_tokens=inp,
        cached_input_tokens=min(as_int(input_details.get("cached_tokens")), inp),
        output_tokens=out,
        reasoning_tokens=min(reasoning, out),
        image_input_tokens=as_int(input_details.get("image_tokens")),
        sources=as_int(u.get("num_sources_used")),
        server_tool_calls=tools,
        reported_cost_ticks=opt_int(u.get("cost_in_usd_ticks")),
    )


def read_response(record: CallRecord, obj: dict[str, Any]) -> None:
    note_model_and_id(record, obj.get("model"), obj.get("id"))
    previous = opt_str(obj.get("previous_response_id"))
    if previous:
        record.previous_response_id = previous
    tier = opt_str(obj.get("service_tier"))
    if tier:
        record.service_tier = tier
    fingerprint = opt_str(obj.get("system_fingerprint"))
    if fingerprint:
        record.fingerprint = fingerprint
    usage = obj.get("usage")
    if record.billable and isinstance(usage, dict):
        record.usage = responses_usage(usage)


class ResponseBody(BodyTap):
    def parse(self, body: bytes) -> None:
        record = self.record
        obj = self.success_object(body)
        if obj is None:
            return
        if record.method == "DELETE":
            note_model_and_id(record, None, obj.get("id"))
            return
        read_response(record, obj)


class ResponseStream(EventTap):
    """Reads the first event (model, id) and the terminal one (usage)."""

    first_token = _FIRST_TOKEN
    needles = (b"response.completed", b"response.incomplete", b"response.failed")

    def read(self, obj: dict[str, Any]) -> bool:
        response = obj.get("response")
        if isinstance(response, dict):
            read_response(self.record, response)
            if obj.get("type") in _TERMINAL:
                self.usage_final = True  # usage on any earlier event is provisional
        return True


class ResponsesDialect(Dialect):
    def __init__(self) -> None:
        super().__init__("responses", billable=True)

    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        # GET or DELETE of a stored response: never a new charge.
        record.billable = record.method == "POST" and record.path == "/v1/responses"
        if not record.billable:
            return None
        obj = loads_object(body)
        if obj is not None:
            record.requested_model = opt_str(obj.get("model"))
            record.stream = obj.get("stream") is True
            record.previous_response_id = opt_str(obj.get("previous_response_id"))
        return None

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if content_type.startswith("text/event-stream"):
            return ResponseStream(record, clock, encoding)
        return ResponseBody(record, clock, encoding)
