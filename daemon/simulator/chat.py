"""``POST /v1/chat/completions`` and ``GET /v1/chat/deferred-completion/{request_id}``.

Follows xai-api.md "Chat completions": the resolved model id, ``reasoning_tokens`` outside
``completion_tokens`` (``total_tokens`` adds them), cached tokens a subset of the prompt,
``cost_in_usd_ticks`` from the listing, ``n`` choices, ``service_tier``, citations. Streams send
usage only in a final ``choices: []`` chunk when asked with ``stream_options.include_usage``;
``deferred: true`` answers a request id that polls 202 until the completion is ready.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from daemon.simulator.catalog import billed, fingerprint_of, is_reasoning, price_ticks
from daemon.simulator.faults import Injection
from daemon.simulator.prompts import (
    Choice,
    Prompt,
    measure_prompt,
    model_of,
    reply_choices,
    segment_of,
    sources_used,
    token_limit,
    word_deltas,
)
from daemon.simulator.state import Deferred, SimulatorState
from daemon.simulator.wire import DONE, SSE, ApiError, Reply, json_body, json_reply, sse_data


@dataclass(slots=True)
class _Chat:
    model: str
    fingerprint: str
    prompt: Prompt
    choices: list[Choice]
    sources: int
    priority: bool


def _chat_usage(
    state: SimulatorState, chat: _Chat, completion: int, reasoning: int
) -> dict[str, Any]:
    prompt = chat.prompt
    usage: dict[str, Any] = {
        "prompt_tokens": prompt.tokens,
        "completion_tokens": completion,
        "total_tokens": prompt.tokens + completion + reasoning,
        "prompt_tokens_details": {
            "text_tokens": prompt.tokens - prompt.image_tokens,
            "audio_tokens": 0,
            "image_tokens": prompt.image_tokens,
            "cached_tokens": prompt.cached,
        },
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
        "num_sources_used": chat.sources,
    }
    if state.report_cost:
        usage["cost_in_usd_ticks"] = billed(state, price_ticks(state, chat.model, usage))
    return usage


def _chat_full_usage(state: SimulatorState, chat: _Chat) -> dict[str, Any]:
    completion = sum(len(c.words) for c in chat.choices)
    reasoning = sum(c.reasoning_tokens for c in chat.choices)
    return _chat_usage(state, chat, completion, reasoning)


def _prepare_chat(state: SimulatorState, headers: Mapping[str, str], req: dict[str, Any]) -> _Chat:
    effort = req.get("reasoning_effort")
    effort = effort if isinstance(effort, str) else None
    resolved, entry = model_of(state, req, effort)
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(422, "`messages` must be a non-empty list")
    n = req.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        raise ApiError(422, f"`n` must be from 1 to 10, got {n!r}")
    base_id = str(entry["id"]) if entry else resolved
    prompt = measure_prompt(state, headers, f"chat:{base_id}", [segment_of(m) for m in messages])
    limit = token_limit(req.get("max_completion_tokens")) or token_limit(req.get("max_tokens"))
    return _Chat(
        model=resolved,
        fingerprint=fingerprint_of(state, resolved, entry),
        prompt=prompt,
        choices=reply_choices(prompt.seed, n, is_reasoning(resolved), effort, limit),
        sources=sources_used(headers, req, prompt.seed),
        priority=req.get("service_tier") == "priority",
    )


def _chat_completion(
    state: SimulatorState, chat: _Chat, inj: Injection, cid: str
) -> dict[str, Any]:
    choices = []
    for index, choice in enumerate(chat.choices):
        message: dict[str, Any] = {"role": "assistant", "content": choice.text, "refusal": None}
        if choice.thoughts:
            message["reasoning_content"] = " ".join(choice.thoughts)
        choices.append(
            {
                "index": index,
                "message": message,
                "finish_reason": choice.finish_reason,
                "logprobs": None,
            }
        )
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "choices": choices,
    }
    if inj.usage != "none":
        body["usage"] = _chat_full_usage(state, chat)
    body["system_fingerprint"] = chat.fingerprint
    if chat.sources:
        body["citations"] = [f"https://example.com/source/{i}" for i in range(chat.sources)]
    if chat.priority:
        body["service_tier"] = "priority"
    return body


def _chat_frames(
    state: SimulatorState, chat: _Chat, inj: Injection, include_usage: bool
) -> list[bytes]:
    """The SSE frames of a streamed chat completion, every chunk with the same id and fingerprint.

    Chunks carry no usage, except with `X-Sim-Usage: every` (old cumulative style); the
    usage chunk (``choices: []``) comes only when the client asked with include_usage.
    """
    cid = str(uuid.uuid4())
    created = int(time.time())
    frames: list[bytes] = []
    completion = reasoning = 0

    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": chat.model,
            "choices": choices,
        }
        if usage is not None:
            obj["usage"] = usage
        elif inj.usage == "every":
            obj["usage"] = _chat_usage(state, chat, completion, reasoning)
        obj["system_fingerprint"] = chat.fingerprint
        if chat.priority:
            obj["service_tier"] = "priority"
        return sse_data(obj)

    for index, choice in enumerate(chat.choices):
        deltas: list[dict[str, Any]] = [
            {"reasoning_content": t} for t in word_deltas(choice.thoughts)
        ]
        deltas += [{"content": t} for t in word_deltas(choice.words)]
        for position, delta in enumerate(deltas):
            if position == 0:
                delta = {"role": "assistant", **delta}
            if "reasoning_content" in delta and position == len(choice.thoughts) - 1:
                reasoning += choice.reasoning_tokens
            if "content" in delta:
                completion += 1
            frames.append(chunk([{"index": index, "delta": delta, "finish_reason": None}]))
        frames.append(chunk([{"index": index, "delta": {}, "finish_reason": choice.finish_reason}]))
    if include_usage and inj.usage != "none":
        frames.append(chunk([], _chat_full_usage(state, chat)))
    frames.append(DONE)
    return frames


async def chat_completions(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/chat/completions`: JSON, an SSE stream, or a deferred request id."""
    req = json_body(await request.read(), request.headers)
    chat = _prepare_chat(state, request.headers, req)
    if req.get("deferred"):
        request_id = str(uuid.uuid4())
        completion = _chat_completion(state, chat, inj, request_id)
        state.deferred[request_id] = Deferred(completion, max(0, state.deferred_polls))
        return json_reply({"request_id": request_id})
    if req.get("stream"):
        options = req.get("stream_options")
        include = isinstance(options, dict) and options.get("include_usage") is True
        return Reply(frames=_chat_frames(state, chat, inj, include), content_type=SSE)
    return json_reply(_chat_completion(state, chat, inj, str(uuid.uuid4())))


async def deferred_completion(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/chat/deferred-completion/{request_id}`: 202 until ready, then once."""
    request_id = request.match_info["request_id"]
    job = state.deferred.get(request_id)
    if job is None:
        raise ApiError(404, f"No deferred completion {request_id}: unknown, expired or fetched")
    if job.polls_left > 0:
        job.polls_left -= 1
        return Reply(status=202, content_type="")
    del state.deferred[request_id]
    completion = dict(job.completion)
    if inj.usage == "none":
        completion.pop("usage", None)
    return json_reply(completion)
