"""``POST /v1/messages``: the Anthropic-compatible surface.

Follows xai-api.md "Anthropic-compatible": thinking is billed as ``output_tokens``; as 2026 xAI
(and Anthropic) do, ``cache_read_input_tokens`` and cache writes are counted outside
``input_tokens``; writes only when forced by ``X-Sim-Cache-Write-5m``/``-1h`` (xAI writes no
cache), split in ``cache_creation{ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}``
(``state.messages_input_includes_cache`` true: 2025-style reads inside ``input_tokens``, no
writes); streams are
``message_start`` ... ``message_stop`` events: ``message_start`` carries the input side and
``message_delta`` the final output count. ``X-Sim-Usage: provisional`` sends what real xAI streams
were seen to end with: ``message_start`` usage 0/0 and no ``message_delta`` at all.
``state.messages_gone`` answers 410, as xAI may for a retired feature. Message ids are bare
UUIDs as xAI's are (``msg_<hex>`` with ``state.legacy_2025_shapes``).
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from daemon.simulator.catalog import is_reasoning
from daemon.simulator.faults import Injection, header_int
from daemon.simulator.prompts import (
    measure_prompt,
    model_of,
    reply_choices,
    segment_of,
    token_limit,
    word_deltas,
)
from daemon.simulator.state import SimulatorState
from daemon.simulator.wire import (
    SSE,
    ApiError,
    Reply,
    json_body,
    json_reply,
    sse_event,
    timing_headers,
)

# Anthropic mode: prompt tokens written to the cache for 5 minutes / 1 hour (xAI writes none).
HEADER_CACHE_WRITE_5M = "X-Sim-Cache-Write-5m"
HEADER_CACHE_WRITE_1H = "X-Sim-Cache-Write-1h"


async def create_message(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/messages`: a message, or its stream of Anthropic events."""
    if state.messages_gone:
        raise ApiError(410, "The Anthropic-compatible messages endpoint is no longer available.")
    req = json_body(await request.read(), request.headers)
    resolved, entry = model_of(state, req, None)
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(422, "`messages` must be a non-empty list")
    segments = []
    system = req.get("system")
    if system:
        segments.append(segment_of({"role": "system", "content": system}))
    segments.extend(segment_of(m) for m in messages)
    base_id = str(entry["id"]) if entry else resolved
    prompt = measure_prompt(state, request.headers, f"messages:{base_id}", segments)
    limit = token_limit(req.get("max_tokens"))
    choice = reply_choices(prompt.seed, 1, is_reasoning(resolved), None, limit)[0]
    stop_reason = "max_tokens" if choice.finish_reason == "length" else "end_turn"
    output_tokens = len(choice.words) + choice.reasoning_tokens  # thinking is billed as output
    input_tokens = prompt.tokens
    anthropic = not state.messages_input_includes_cache
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": prompt.cached,
        "cache_creation_input_tokens": 0,
    }
    if anthropic:  # reads and writes outside input_tokens; writes by duration
        write_5m = header_int(request.headers, HEADER_CACHE_WRITE_5M) or 0
        write_1h = header_int(request.headers, HEADER_CACHE_WRITE_1H) or 0
        if write_5m + write_1h > input_tokens - prompt.cached:
            raise ApiError(400, "cache writes exceed the uncached prompt")
        usage["input_tokens"] = input_tokens - prompt.cached - write_5m - write_1h
        usage["cache_creation_input_tokens"] = write_5m + write_1h
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": write_5m,
            "ephemeral_1h_input_tokens": write_1h,
        }
    message: dict[str, Any] = {
        "id": f"msg_{uuid.uuid4().hex}" if state.legacy_2025_shapes else str(uuid.uuid4()),
        "type": "message",
        "role": "assistant",
        "model": resolved,
        "content": [{"type": "text", "text": choice.text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    if inj.usage == "none":
        del message["usage"]
    headers = timing_headers(prompt.tokens, output_tokens)
    tokens = prompt.tokens + output_tokens
    if not req.get("stream"):
        reply = json_reply(message)
        reply.headers.update(headers)
        reply.tokens = tokens
        return reply
    start = {**message, "content": [], "stop_reason": None}
    if inj.usage != "none":
        # The input side and 1 output token; provisional: xAI's 0/0, and no message_delta.
        provisional = inj.usage == "provisional"
        start["usage"] = (
            {"input_tokens": 0, "output_tokens": 0}  # xAI's placeholder (xai-api.md)
            if provisional
            else {**usage, "output_tokens": 1}
        )
    frames = [
        sse_event("message_start", {"type": "message_start", "message": start}),
        sse_event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        sse_event("ping", {"type": "ping"}),
    ]
    for delta in word_deltas(choice.words):
        frames.append(
            sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": delta},
                },
            )
        )
    frames.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    final: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
    }
    if inj.usage != "none":
        final["usage"] = {"output_tokens": output_tokens}
    if inj.usage != "provisional":
        frames.append(sse_event("message_delta", final))
    frames.append(sse_event("message_stop", {"type": "message_stop"}))
    return Reply(frames=frames, content_type=SSE, headers=headers, tokens=tokens)
