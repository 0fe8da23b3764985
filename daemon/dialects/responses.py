"""The Responses API: `POST /v1/responses` (billed), `GET|DELETE /v1/responses/{id}` (never billed).

Shapes read (xai-api.md, "Responses"):

- body: ``{id, model, previous_response_id, service_tier, metadata{system_fingerprint}, output,
  usage}``; ``usage`` is ``{input_tokens, input_tokens_details{cached_tokens, image_tokens},
  output_tokens, output_tokens_details{reasoning_tokens}, total_tokens, num_sources_used,
  num_server_side_tools_used, server_side_tool_usage_details{web_search_calls, x_search_calls,
  x_posts_fetched, x_users_fetched, ...}, cost_in_usd_ticks | cost_in_nano_usd}`` (some stored
  responses use chat-style keys: handled too). The fingerprint is at
  ``metadata.system_fingerprint`` in 2026 bodies; older bodies put it at the top level or not
  at all: both are read, ``metadata`` first.
- stream: typed events whose ``response`` object repeats the body's fields (and whose own
  ``metadata`` may carry the fingerprint too); usage comes on the terminal event only
  (``response.completed``, ``response.incomplete`` or ``response.failed``), and no ``[DONE]``
  follows it. Only ``response.created`` (the first event) and the terminal one are decoded.

Here `output_tokens` already includes reasoning (total = input + output): reasoning is added only
when the total proves it was left out. A stored response fetched again carries its original
usage: that is not a new charge, so it is not read at all.

Server-side tools (`tool_counts`): 2026 usage names them in ``server_side_tool_usage_details``;
2025 bodies carry only ``num_server_side_tools_used`` and ``*_call`` output items (X search as
``custom_tool_call`` items named ``x_keyword_search``, ``x_semantic_search``, ...). They are
counted from whatever is there: the details first; else the output items by kind; and a
``num_server_side_tools_used`` larger than what those name adds the rest as kind ``unknown``.
X search's ``x_posts_fetched`` / ``x_users_fetched`` are kept as kinds of their own (items
fetched, billed per item since 2026-09-21; `daemon.pricing.cost`), not as calls.
"""

from __future__ import annotations

import re
from typing import Any

from daemon.dialects.base import (
    Clock,
    Dialect,
    Tap,
    note_model_and_id,
    note_served,
    read_error,
    read_json_request,
)
from daemon.dialects.body import BodyTap
from daemon.dialects.chat import chat_usage
from daemon.dialects.coerce import as_int, opt_int, opt_str, reported_ticks, sub
from daemon.dialects.sse import EventTap
from daemon.record import FETCH_COUNT_KINDS, CallRecord, Usage

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_FIRST_TOKEN = re.compile(
    rb'"type"\s*:\s*"response\.(?:output_text|reasoning_text|'
    rb'reasoning_summary_text|refusal)\.delta"'
)


# Output item types of xAI's server-side tools, by the kind their fee is listed under (the
# `tool:` entries of daemon/pricing/catalog.toml). Every item is one call (a web search's
# `open_page` action too: xai-api.md, "Tool fees").
_TOOL_ITEMS = {
    "web_search_call": "web_search",
    "x_search_call": "x_search",
    "code_interpreter_call": "code_interpreter",
    "code_execution_call": "code_interpreter",
    "file_search_call": "file_search",
    "collections_search_call": "file_search",
    "document_search_call": "document_search",
    "attachment_search_call": "document_search",
    "mcp_call": "mcp",
    "image_generation_call": "image_generation",
}
# `custom_tool_call` items that are xAI's own tools, by name (any other name is the client's own
# custom tool: not a server-side call). X search's sub-tools all bill as x_search calls.
_CUSTOM_TOOLS = {
    "x_search": "x_search",
    "x_keyword_search": "x_search",
    "x_semantic_search": "x_search",
    "x_user_search": "x_search",
    "x_thread_fetch": "x_search",
    "web_search": "web_search",
    "code_execution": "code_interpreter",
    "view_image": "view_image",
    "view_x_video": "view_x_video",
}
# `*_call` items the client runs itself (OpenAI's shapes): never server-side calls.
_CLIENT_ITEMS = frozenset(
    {"function_call", "computer_call", "local_shell_call", "shell_call", "apply_patch_call"}
)


def _item_kind(item: Any) -> str | None:
    """The server-side tool kind of one output item; None for anything else."""
    if type(item) is not dict:
        return None
    kind = item.get("type")
    if type(kind) is not str or not kind.endswith("_call") or kind in _CLIENT_ITEMS:
        return None
    if kind == "custom_tool_call":
        name = item.get("name")
        return _CUSTOM_TOOLS.get(name) if type(name) is str else None
    return _TOOL_ITEMS.get(kind, kind.removesuffix("_call"))


def tool_counts(u: dict[str, Any], output: Any = None) -> dict[str, int]:
    """Server-side tool quantities by kind, from a Responses `usage` and the response's `output`.

    Kinds are xAI's detail keys without ``_calls`` (``web_search``, ``x_search``, ...), plus
    `FETCH_COUNT_KINDS` (items X search fetched, not calls) and ``unknown`` (calls
    ``num_server_side_tools_used`` counts that nothing names). See the module docstring.
    """
    tools: dict[str, int] = {}
    for name, count in sub(u, "server_side_tool_usage_details").items():
        n = as_int(count)
        if n:
            kind = name.removesuffix("_calls")
            tools[kind] = tools.get(kind, 0) + n
    calls = sum(n for kind, n in tools.items() if kind not in FETCH_COUNT_KINDS)
    if not calls and isinstance(output, list):  # no call named in details: the items say
        for item in output:
            item_kind = _item_kind(item)
            if item_kind is not None:
                tools[item_kind] = tools.get(item_kind, 0) + 1
                calls += 1
    declared = as_int(u.get("num_server_side_tools_used"))
    if declared > calls:
        tools["unknown"] = tools.get("unknown", 0) + declared - calls
    return tools


def responses_usage(u: dict[str, Any], output: Any = None) -> Usage:
    """Normalize a Responses `usage` (some stored responses use chat-style keys: handled too);
    `output` is the response's output items, read for tool calls only when the usage names
    none."""
    if "prompt_tokens" in u and "input_tokens" not in u:
        usage = chat_usage(u)
        usage.server_tool_calls = tool_counts(u, output)
        return usage
    inp = as_int(u.get("input_tokens"))
    out = as_int(u.get("output_tokens"))
    reasoning = as_int(sub(u, "output_tokens_details").get("reasoning_tokens"))
    if reasoning and (opt_int(u.get("total_tokens")) == inp + out + reasoning or reasoning > out):
        out += reasoning  # reasoning reported outside output_tokens after all (the total says
        # so, or reasoning exceeds an output it would be a part of)
    input_details = sub(u, "input_tokens_details")
    return Usage(
        input_tokens=inp,
        cached_input_tokens=min(as_int(input_details.get("cached_tokens")), inp),
        output_tokens=out,
        reasoning_tokens=min(reasoning, out),
        image_input_tokens=as_int(input_details.get("image_tokens")),
        sources=as_int(u.get("num_sources_used")),
        server_tool_calls=tool_counts(u, output),
        reported_cost_ticks=reported_ticks(u),
    )


def _fingerprint(obj: dict[str, Any]) -> str | None:
    """``metadata.system_fingerprint`` (2026), else a top-level ``system_fingerprint`` (older)."""
    metadata = obj.get("metadata")
    if type(metadata) is dict:
        found = opt_str(metadata.get("system_fingerprint"))
        if found:
            return found
    return opt_str(obj.get("system_fingerprint"))


def read_response(record: CallRecord, obj: dict[str, Any]) -> None:
    """Fill the record from one Responses object (a body, or a stream event's ``response``):
    model, id, ``previous_response_id``, fingerprint, service tier; usage (`responses_usage`)
    only when the call is billable."""
    note_model_and_id(record, obj.get("model"), obj.get("id"))
    previous = opt_str(obj.get("previous_response_id"))
    if previous:
        record.previous_response_id = previous
    note_served(record, _fingerprint(obj), obj.get("service_tier"))
    usage = obj.get("usage")
    if record.billable and isinstance(usage, dict):
        record.usage = responses_usage(usage, obj.get("output"))


class ResponseBody(BodyTap):
    """A whole Responses body (`read_response`); a DELETE's answer gives only its id."""

    def parse(self, body: bytes) -> None:
        record = self.record
        obj = self.success_object(body)
        if obj is None:
            return
        if record.method == "DELETE":
            note_model_and_id(record, None, obj.get("id"))
            return
        read_response(record, obj)


_BILLED_PATHS = frozenset({"/v1/responses", "/v1/responses/compact"})


class ResponseStream(EventTap):
    """Reads the first event (model, id, fingerprint) and the terminal one (usage, fingerprint)."""

    first_token = _FIRST_TOKEN
    needles = (b"response.completed", b"response.incomplete", b"response.failed", b'"error"')

    def read(self, obj: dict[str, Any]) -> bool:
        if read_event(self.record, obj):
            self.usage_final = True  # usage on any earlier event is provisional
        return True


def read_event(record: CallRecord, obj: dict[str, Any]) -> bool:
    """Fill the record from one Responses stream event, an SSE one or a WebSocket message
    (xai-api.md, "Responses": WebSocket mode sends the same events): an ``error`` event's code
    (`read_error`); an event's ``response`` object (`read_response`); the event's own
    ``metadata`` fingerprint (2026 events carry it beside their response object). True for a
    terminal event (``response.completed``, ``.incomplete`` or ``.failed``): only its usage is
    final, any earlier one's is provisional."""
    kind = obj.get("type")
    if kind == "error":  # a stream's error event: {"type": "error", "code", ...}
        read_error(record, obj)
        return False
    response = obj.get("response")
    if isinstance(response, dict):
        read_response(record, response)
    note_served(record, _fingerprint(obj), None)
    return kind in _TERMINAL and isinstance(response, dict)


class ResponsesDialect(Dialect):
    """`POST /v1/responses` and `/v1/responses/compact` (billed), `GET|DELETE /v1/responses/{id}`
    (never billed) (xai-api.md, "Responses"). Reads the request's ``model``, ``stream`` and
    ``previous_response_id``, and the answer's ``{id, model, previous_response_id, service_tier,
    metadata{system_fingerprint}, output, usage}`` from a body or a stream's first and terminal
    events."""

    def __init__(self) -> None:
        super().__init__("responses", billable=True)

    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        # GET or DELETE of a stored response: never a new charge. A compaction runs the model
        # (gRPC's Chat/CompactContext is billed, xai-api.md): billed by its usage like a turn.
        record.billable = record.method == "POST" and record.path in _BILLED_PATHS
        obj = read_json_request(record, body)
        if obj is not None:
            record.previous_response_id = opt_str(obj.get("previous_response_id"))
        return None

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if content_type.startswith("text/event-stream"):
            return ResponseStream(record, clock, encoding)
        return ResponseBody(record, clock, encoding)
