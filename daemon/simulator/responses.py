"""``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{response_id}``.

Follows xai-api.md "Responses": ``output_tokens`` includes the reasoning tokens, server-side
tools (web/X search, code, collections, MCP, documents) add output items, a call count in
``server_side_tool_usage_details`` and their fees to ``cost_in_usd_ticks``. Stored responses can
be fetched, deleted and continued with ``previous_response_id`` (the history counts as prompt).
Streams are ``event:``-named frames with a ``sequence_number``, ending ``response.completed``,
``.incomplete`` or ``.failed``, with no ``data: [DONE]`` after it (``state.responses_done_marker``
adds one). Ids are bare UUIDs.

2026 shapes (xai-api.md "Responses"): the fingerprint at ``metadata.system_fingerprint`` of the
body, of every ``response`` snapshot and of every stream event itself; ``service_tier`` on every
answer (x2 on token prices for priority/fast); ``usage.context_details{input_tokens,
output_tokens}``, informational and deliberately not the billed numbers (the context kept:
input plus the visible output, reasoning dropped). ``state.legacy_2025_shapes`` gives the 2025
ones instead (see `SimulatorState`).
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from daemon.simulator.billing import SERVER_SIDE_TOOLS
from daemon.simulator.catalog import (
    TOOL_DETAIL_KEYS,
    TOOL_FEES,
    cost_fields,
    fingerprint_of,
    is_reasoning,
    price_units,
    service_tier_of,
    tool_fee_ticks,
)
from daemon.simulator.faults import HEADER_RESPONSE_STATUS, Injection, header_choice
from daemon.simulator.prompts import (
    Choice,
    Segment,
    measure_prompt,
    model_of,
    reply_choices,
    segment_of,
    sources_used,
    token_limit,
    word_deltas,
)
from daemon.simulator.state import SimulatorState
from daemon.simulator.wire import (
    DONE,
    SSE,
    ApiError,
    Reply,
    json_body,
    json_reply,
    sse_event,
    timing_headers,
)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def server_tool_calls(tools: Any, seed: bytes) -> dict[str, int]:
    """Server-side tool calls a request makes: a deterministic 1-3 per tool type asked for."""
    calls: dict[str, int] = {}
    if not isinstance(tools, list):
        return calls
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind in TOOL_FEES:
            calls[kind] = calls.get(kind, 0) + 1 + seed[(4 + index) % len(seed)] % 3
    return calls


def _tool_items(calls: Mapping[str, int], query: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for kind, count in calls.items():
        for _ in range(count):
            if kind == "web_search":
                items.append(
                    {
                        "id": _new_id("ws"),
                        "type": "web_search_call",
                        "status": "completed",
                        "action": {"type": "search", "query": query},
                    }
                )
            else:
                items.append(
                    {
                        "id": _new_id("ctc"),
                        "type": "custom_tool_call",
                        "call_id": _new_id("call"),
                        "name": kind,
                        "input": orjson.dumps({"query": query}).decode(),
                        "status": "completed",
                    }
                )
    return items


def _responses_segments(req: Mapping[str, Any]) -> list[Segment]:
    segments = []
    instructions = req.get("instructions")
    if isinstance(instructions, str) and instructions:
        segments.append(segment_of({"role": "system", "content": instructions}))
    items = req.get("input")
    if isinstance(items, str):
        segments.append(segment_of({"role": "user", "content": items}))
    elif isinstance(items, list) and items:
        segments.extend(segment_of(item) for item in items)
    else:
        raise ApiError(422, "`input` must be a string or a non-empty list of input items")
    return segments


@dataclass(slots=True)
class Answer:
    """One generated response: the object, its reply, the 2026 stamp every stream event
    carries as its own ``metadata`` (None in 2025 shapes), and its prompt and output sizes."""

    response: dict[str, Any]
    choice: Choice
    stamp: dict[str, str] | None
    prompt_tokens: int
    output_tokens: int


def answer(
    state: SimulatorState, headers: Mapping[str, str], req: dict[str, Any], usage_mode: str | None
) -> Answer:
    """Generate (and store, unless ``store: false``) the response a create body asks for, the
    same over HTTP and over the WebSocket (`daemon.simulator.sockets`). ``usage_mode`` is the
    ``X-Sim-Usage`` choice (``"none"``: no usage); `ApiError` for a bad request."""
    terminal = header_choice(headers, HEADER_RESPONSE_STATUS, ("completed", "incomplete", "failed"))
    reasoning_param = req.get("reasoning")
    effort = reasoning_param.get("effort") if isinstance(reasoning_param, dict) else None
    effort = effort if isinstance(effort, str) else None
    resolved, entry = model_of(state, req, effort)
    previous_id = req.get("previous_response_id")
    history = 0
    if previous_id is not None:
        if not isinstance(previous_id, str) or previous_id not in state._contexts:
            raise ApiError(404, f"Response with id '{previous_id}' not found.")
        history = state._contexts[previous_id]
    segments = _responses_segments(req)
    base_id = str(entry["id"]) if entry else resolved
    prompt = measure_prompt(
        state, headers, f"responses:{base_id}:{previous_id or ''}", segments, history
    )
    limit = token_limit(req.get("max_output_tokens"))
    choice = reply_choices(prompt.seed, 1, is_reasoning(resolved), effort, limit)[0]
    calls = server_tool_calls(req.get("tools"), prompt.seed)
    query = " ".join(segments[-1].text.split()[:8])
    details = dict.fromkeys(TOOL_DETAIL_KEYS, 0)
    for kind, count in calls.items():
        details[TOOL_FEES[kind][0]] += count
    output_tokens = len(choice.words) + choice.reasoning_tokens
    legacy = state.legacy_2025_shapes
    tier = service_tier_of(req.get("service_tier"))
    fingerprint = fingerprint_of(state, resolved, entry)
    usage: dict[str, Any] = {
        "input_tokens": prompt.tokens,
        "input_tokens_details": {"cached_tokens": prompt.cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": choice.reasoning_tokens},
        "total_tokens": prompt.tokens + output_tokens,
        "num_sources_used": sources_used(headers, req, prompt.seed),
        "num_server_side_tools_used": sum(calls.values()),
        "server_side_tool_usage_details": details,
    }
    units = price_units(state, resolved, usage, tier)
    units[SERVER_SIDE_TOOLS] = tool_fee_ticks(details)
    usage.update(cost_fields(state, units))
    if legacy:
        del usage["server_side_tool_usage_details"]
    else:
        usage["context_details"] = {
            "input_tokens": prompt.tokens,
            "output_tokens": len(choice.words),
        }
    status = terminal or "completed"
    output: list[dict[str, Any]] = []
    if choice.thoughts:
        output.append(
            {
                "id": _new_id("rs"),
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": " ".join(choice.thoughts)}],
                "status": "completed",
            }
        )
    output.extend(_tool_items(calls, query))
    message = {
        "id": _new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": "completed" if status == "completed" else "incomplete",
        "content": [
            {"type": "output_text", "text": choice.text, "annotations": [], "logprobs": []}
        ],
    }
    output.append(message)
    store = req.get("store", True) is not False
    asked_metadata = req.get("metadata")
    metadata = dict(asked_metadata) if isinstance(asked_metadata, dict) else {}
    if not legacy:
        metadata["system_fingerprint"] = fingerprint
    response: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "object": "response",
        "created_at": int(time.time()),
        "model": resolved,
        "status": status,
        "output": output,
        "usage": usage if usage_mode != "none" else None,
        "error": (
            {"code": "server_error", "message": f"Simulated failure ({HEADER_RESPONSE_STATUS})"}
            if status == "failed"
            else None
        ),
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "metadata": metadata,
        "parallel_tool_calls": req.get("parallel_tool_calls", True),
        "previous_response_id": previous_id,
        "reasoning": {"effort": effort, "summary": None},
        "store": store,
        "temperature": req.get("temperature"),
        "text": {"format": {"type": "text"}},
        "tool_choice": req.get("tool_choice", "auto"),
        "tools": req.get("tools") or [],
        "top_p": req.get("top_p"),
        "background": False,
        "user": None,
    }
    if legacy:
        response["system_fingerprint"] = fingerprint
    if not legacy or tier != "default":
        response["service_tier"] = tier
    if usage_mode == "none":
        del response["usage"]
    if store:
        state.responses[response["id"]] = copy.deepcopy(response)
        state._contexts[response["id"]] = prompt.tokens + len(choice.words)
    stamp = None if legacy else {"system_fingerprint": fingerprint}
    return Answer(response, choice, stamp, prompt.tokens, output_tokens)


async def create_response(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/responses`: a response (stored unless ``store: false``) or its stream."""
    req = json_body(await request.read(), request.headers)
    made = answer(state, request.headers, req, inj.usage)
    headers = timing_headers(made.prompt_tokens, made.output_tokens)
    tokens = made.prompt_tokens + made.output_tokens
    if req.get("stream"):
        frames = [sse_event(event["type"], event) for event in response_events(made)]
        if state.responses_done_marker:
            frames.append(DONE)
        return Reply(frames=frames, content_type=SSE, headers=headers, tokens=tokens)
    reply = json_reply(made.response)
    reply.headers.update(headers)
    reply.tokens = tokens
    return reply


def response_events(made: Answer) -> list[dict[str, Any]]:
    """The Responses event sequence of an answer, each with its ``sequence_number`` (and, in
    2026 shape, the stamp as the event's own ``metadata``): an SSE frame each over HTTP, a
    message each over the WebSocket."""
    response, choice = made.response, made.choice
    events: list[dict[str, Any]] = []
    extra = {"metadata": made.stamp} if made.stamp is not None else {}

    def event(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields, **extra})

    snapshot = {**response, "status": "in_progress", "output": [], "usage": None}
    snapshot["error"] = snapshot["incomplete_details"] = None
    event("response.created", response=snapshot)
    event("response.in_progress", response=snapshot)
    for index, item in enumerate(response["output"]):
        if item["type"] != "message":
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress"},
            )
            event("response.output_item.done", output_index=index, item=item)
            continue
        part = item["content"][0]
        ids = {"item_id": item["id"], "output_index": index}
        event(
            "response.output_item.added",
            output_index=index,
            item={**item, "status": "in_progress", "content": []},
        )
        event(
            "response.content_part.added",
            **ids,
            content_index=0,
            part={**part, "text": ""},
        )
        for delta in word_deltas(choice.words):
            event("response.output_text.delta", **ids, content_index=0, delta=delta, logprobs=[])
        event("response.output_text.done", **ids, content_index=0, text=part["text"], logprobs=[])
        event("response.content_part.done", **ids, content_index=0, part=part)
        event("response.output_item.done", output_index=index, item=item)
    event(f"response.{response['status']}", response=response)
    return events


async def get_response(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/responses/{response_id}`: a stored response; 404 if unknown or deleted."""
    response_id = request.match_info["response_id"]
    stored = state.responses.get(response_id)
    if stored is None:
        raise ApiError(404, f"Response with id '{response_id}' not found.")
    return json_reply(stored)


async def delete_response(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`DELETE /v1/responses/{response_id}`; 404 if unknown."""
    response_id = request.match_info["response_id"]
    if state.responses.pop(response_id, None) is None:
        raise ApiError(404, f"Response with id '{response_id}' not found.")
    state._contexts.pop(response_id, None)
    return json_reply({"id": response_id, "object": "response", "deleted": True})
