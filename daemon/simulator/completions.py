"""``POST /v1/completions`` (OpenAI legacy) and ``POST /v1/complete`` (Anthropic legacy).

Follows xai-api.md "Other endpoints" and "Anthropic-compatible": ``/v1/completions`` answers a
``text_completion`` with chat's usage (reasoning outside ``completion_tokens``, cached tokens a
subset of the prompt, ``cost_in_usd_ticks`` from the catalog's own prices); its stream sends
``choices[].text`` chunks, usage only on a final ``choices: []`` chunk when asked with
``stream_options.include_usage`` (cumulative usage on every chunk with ``X-Sim-Usage: every``),
then ``[DONE]``. ``/v1/complete`` answers ``{type: "completion", completion, stop_reason,
model, usage{input_tokens, output_tokens}}``; its stream is ``completion`` events, the last one
with the ``stop_reason`` and the usage. ``X-Sim-Usage: none`` leaves usage out of both.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from daemon.simulator.catalog import charge, fingerprint_of, is_reasoning, price_units
from daemon.simulator.faults import Injection
from daemon.simulator.prompts import (
    Choice,
    Prompt,
    measure_prompt,
    model_of,
    reply_choices,
    segment_of,
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
    sse_data,
    sse_event,
)


def _prompt_text(req: dict[str, Any], key: str) -> str:
    prompt = req.get(key)
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompt = " ".join(prompt)
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(422, f"`{key}` must be a non-empty string")
    return prompt


def text_usage(
    state: SimulatorState, model: str, prompt: Prompt, completion: int, reasoning: int
) -> dict[str, Any]:
    """A text completion's usage: chat's fields (reasoning outside ``completion_tokens``)."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt.tokens,
        "completion_tokens": completion,
        "total_tokens": prompt.tokens + completion + reasoning,
        "prompt_tokens_details": {"cached_tokens": prompt.cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    cost = charge(state, price_units(state, model, usage))  # billed, reported or not
    if state.report_cost:
        usage["cost_in_usd_ticks"] = cost
    return usage


async def create_completion(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/completions`: a text completion, or its stream of chunks."""
    req = json_body(await request.read(), request.headers)
    resolved, entry = model_of(state, req, None)
    text = _prompt_text(req, "prompt")
    base_id = str(entry["id"]) if entry else resolved
    prompt = measure_prompt(
        state, request.headers, f"completions:{base_id}", [segment_of({"content": text})]
    )
    choice: Choice = reply_choices(
        prompt.seed, 1, is_reasoning(resolved), None, token_limit(req.get("max_tokens"))
    )[0]
    cid = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    fingerprint = fingerprint_of(state, resolved, entry)
    final_usage = text_usage(state, resolved, prompt, len(choice.words), choice.reasoning_tokens)

    def body(choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": resolved,
            "choices": choices,
        }
        if usage is not None and inj.usage != "none":
            obj["usage"] = usage
        obj["system_fingerprint"] = fingerprint
        return obj

    def text_choice(piece: str, finish: str | None) -> dict[str, Any]:
        return {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}

    if not req.get("stream"):
        return json_reply(body([text_choice(choice.text, choice.finish_reason)], final_usage))
    options = req.get("stream_options")
    include = isinstance(options, dict) and options.get("include_usage") is True
    every = inj.usage == "every"
    frames = []
    for count, piece in enumerate(word_deltas(choice.words), start=1):
        usage = text_usage(state, resolved, prompt, count, 0) if every else None
        frames.append(sse_data(body([text_choice(piece, None)], usage)))
    frames.append(
        sse_data(body([text_choice("", choice.finish_reason)], final_usage if every else None))
    )
    if include:
        frames.append(sse_data(body([], final_usage)))
    frames.append(DONE)
    return Reply(frames=frames, content_type=SSE)


async def create_complete(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/complete`: a legacy Anthropic text completion, or its stream of events."""
    req = json_body(await request.read(), request.headers)
    resolved, entry = model_of(state, req, None)
    text = _prompt_text(req, "prompt")
    base_id = str(entry["id"]) if entry else resolved
    prompt = measure_prompt(
        state, request.headers, f"complete:{base_id}", [segment_of({"content": text})]
    )
    limit = token_limit(req.get("max_tokens_to_sample"))
    choice = reply_choices(prompt.seed, 1, is_reasoning(resolved), None, limit)[0]
    stop_reason = "max_tokens" if choice.finish_reason == "length" else "stop_sequence"
    usage = {
        "input_tokens": prompt.tokens,
        "output_tokens": len(choice.words) + choice.reasoning_tokens,
    }
    cid = f"compl_{uuid.uuid4().hex}"

    def event(piece: str, stop: str | None) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "type": "completion",
            "id": cid,
            "completion": piece,
            "stop_reason": stop,
            "model": resolved,
        }
        if stop is not None and inj.usage != "none":
            obj["usage"] = usage
        return obj

    if not req.get("stream"):
        return json_reply(event(choice.text, stop_reason))
    frames = [sse_event("completion", event(piece, None)) for piece in word_deltas(choice.words)]
    frames.append(sse_event("completion", event("", stop_reason)))
    return Reply(frames=frames, content_type=SSE)
