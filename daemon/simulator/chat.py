"""``POST /v1/chat/completions`` and ``GET /v1/chat/deferred-completion/{request_id}``.

Follows xai-api.md "Chat completions": the resolved model id, ``reasoning_tokens`` outside
``completion_tokens`` (``total_tokens`` adds them), cached tokens a subset of the prompt,
``cost_in_usd_ticks`` from the listing (x2 for a granted ``service_tier`` priority/fast), ``n``
choices, ``service_tier`` on every answer, citations. Streams send usage only in a final
``choices: []`` chunk when asked with ``stream_options.include_usage``; ``deferred: true``
answers a request id that polls 202 until the completion is ready.

Function tools: when the request lists a ``{"type": "function"}`` tool (and ``tool_choice`` is
not ``"none"``) and its last message is not a ``tool`` result, each choice calls that tool
(the one ``tool_choice`` names, else the first) with ``{"query": <the first words of the last
message>}``, ``finish_reason: "tool_calls"``, ``content: null``. A call costs one completion
token for its name and one per space-separated piece of its arguments; streams send the name
first, then those pieces, as OpenAI-style ``tool_calls`` deltas.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from daemon.simulator.catalog import (
    cost_fields,
    fingerprint_of,
    is_reasoning,
    price_units,
    service_tier_of,
)
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
from daemon.simulator.wire import (
    DONE,
    SSE,
    ApiError,
    Reply,
    json_body,
    json_reply,
    sse_data,
    timing_headers,
)

_QUERY_WORDS = 6  # words of the last message a function call passes as its query


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """The function tool call every choice makes: its id, name and argument pieces."""

    call_id: str
    name: str
    pieces: list[str]  # the arguments, split at spaces (each piece one token, spaces kept)

    @property
    def arguments(self) -> str:
        return "".join(self.pieces)

    @property
    def tokens(self) -> int:
        return 1 + len(self.pieces)


def function_call(req: Mapping[str, Any], seed: bytes) -> FunctionCall | None:
    """The function call a chat request gets (see the module doc), or None for a text answer."""
    tools = req.get("tools")
    if not isinstance(tools, list):
        return None
    names = [
        str(tool["function"]["name"])
        for tool in tools
        if isinstance(tool, dict)
        and tool.get("type") == "function"
        and isinstance(tool.get("function"), dict)
        and isinstance(tool["function"].get("name"), str)
    ]
    choice = req.get("tool_choice")
    messages = req.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if not names or choice == "none" or (isinstance(last, dict) and last.get("role") == "tool"):
        return None
    name = names[0]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = str(choice["function"].get("name") or name)
    query = " ".join(segment_of(last).text.split()[:_QUERY_WORDS])
    arguments = orjson.dumps({"query": query}).decode()
    words = arguments.split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    call_id = "call_" + hashlib.sha256(seed + name.encode()).hexdigest()[:24]
    return FunctionCall(call_id=call_id, name=name, pieces=pieces)


@dataclass(slots=True)
class PreparedChat:
    """A chat request measured and answered: model, fingerprint, prompt, choices, tier."""

    model: str
    fingerprint: str
    prompt: Prompt
    choices: list[Choice]
    sources: int
    tier: str  # the service_tier granted: default | priority | fast
    call: FunctionCall | None

    def completion_tokens(self, choice: Choice) -> int:
        return self.call.tokens if self.call is not None else len(choice.words)


def _chat_usage(
    state: SimulatorState, chat: PreparedChat, completion: int, reasoning: int
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
    usage.update(cost_fields(state, price_units(state, chat.model, usage, chat.tier)))
    return usage


def _chat_full_usage(state: SimulatorState, chat: PreparedChat) -> dict[str, Any]:
    completion = sum(chat.completion_tokens(c) for c in chat.choices)
    reasoning = sum(c.reasoning_tokens for c in chat.choices)
    return _chat_usage(state, chat, completion, reasoning)


def prepare_chat(
    state: SimulatorState, headers: Mapping[str, str], req: dict[str, Any]
) -> PreparedChat:
    """Measure a chat request (REST's JSON shape) and choose its answer; `ApiError` if bad."""
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
    return PreparedChat(
        model=resolved,
        fingerprint=fingerprint_of(state, resolved, entry),
        prompt=prompt,
        choices=reply_choices(prompt.seed, n, is_reasoning(resolved), effort, limit),
        sources=sources_used(headers, req, prompt.seed),
        tier=service_tier_of(req.get("service_tier")),
        call=function_call(req, prompt.seed),
    )


def _tier_field(state: SimulatorState, chat: PreparedChat) -> dict[str, str]:
    """``service_tier`` as the answer carries it: always in 2026, only when granted in 2025."""
    if state.legacy_2025_shapes and chat.tier == "default":
        return {}
    return {"service_tier": chat.tier}


def _call_json(call: FunctionCall) -> dict[str, Any]:
    return {
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def chat_completion(
    state: SimulatorState, chat: PreparedChat, inj: Injection, cid: str
) -> dict[str, Any]:
    """The ``chat.completion`` body of a prepared chat, with id `cid`."""
    choices = []
    for index, choice in enumerate(chat.choices):
        message: dict[str, Any] = {"role": "assistant", "content": choice.text, "refusal": None}
        if choice.thoughts:
            message["reasoning_content"] = " ".join(choice.thoughts)
        finish = choice.finish_reason
        if chat.call is not None:
            message["content"] = None
            message["tool_calls"] = [_call_json(chat.call)]
            finish = "tool_calls"
        choices.append(
            {"index": index, "message": message, "finish_reason": finish, "logprobs": None}
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
    body.update(_tier_field(state, chat))
    return body


def chat_chunks(
    state: SimulatorState, chat: PreparedChat, inj: Injection, include_usage: bool
) -> list[dict[str, Any]]:
    """The chunks of a streamed chat completion, every one with the same id and fingerprint.

    Chunks carry no usage, except with `X-Sim-Usage: every` (old cumulative style); the
    usage chunk (``choices: []``) comes last, only when `include_usage` (REST: the client asked
    with include_usage; gRPC: always, xai-api.md "gRPC API").
    """
    cid = str(uuid.uuid4())
    created = int(time.time())
    chunks: list[dict[str, Any]] = []
    completion = reasoning = 0

    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
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
        obj.update(tier)
        return obj

    tier = _tier_field(state, chat)
    call = chat.call
    for index, choice in enumerate(chat.choices):
        deltas: list[dict[str, Any]] = [
            {"reasoning_content": t} for t in word_deltas(choice.thoughts)
        ]
        if call is None:
            deltas += [{"content": t} for t in word_deltas(choice.words)]
        else:
            head = {"index": 0, "id": call.call_id, "type": "function"}
            deltas.append(
                {"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]}
            )
            deltas += [
                {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                for piece in call.pieces
            ]
        for position, delta in enumerate(deltas):
            if position == 0:
                delta = {"role": "assistant", **delta}
            if "reasoning_content" in delta and position == len(choice.thoughts) - 1:
                reasoning += choice.reasoning_tokens
            if "content" in delta or "tool_calls" in delta:
                completion += 1
            chunks.append(chunk([{"index": index, "delta": delta, "finish_reason": None}]))
        finish = choice.finish_reason if call is None else "tool_calls"
        chunks.append(chunk([{"index": index, "delta": {}, "finish_reason": finish}]))
    if include_usage and inj.usage != "none":
        chunks.append(chunk([], _chat_full_usage(state, chat)))
    return chunks


def answer_tokens(chat: PreparedChat) -> tuple[int, int]:
    """(prompt tokens, output tokens: completion plus reasoning) of an answer."""
    output = sum(chat.completion_tokens(c) + c.reasoning_tokens for c in chat.choices)
    return chat.prompt.tokens, output


async def chat_completions(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/chat/completions`: JSON, an SSE stream, or a deferred request id."""
    req = json_body(await request.read(), request.headers)
    chat = prepare_chat(state, request.headers, req)
    _, output = answer_tokens(chat)
    headers = timing_headers(chat.prompt.tokens, output)
    tokens = chat.prompt.tokens + output
    if req.get("deferred"):
        request_id = str(uuid.uuid4())
        completion = chat_completion(state, chat, inj, request_id)
        state.deferred[request_id] = Deferred(completion, max(0, state.deferred_polls))
        return json_reply({"request_id": request_id})
    if req.get("stream"):
        options = req.get("stream_options")
        include = isinstance(options, dict) and options.get("include_usage") is True
        frames = [sse_data(chunk) for chunk in chat_chunks(state, chat, inj, include)] + [DONE]
        return Reply(frames=frames, content_type=SSE, headers=headers, tokens=tokens)
    reply = json_reply(chat_completion(state, chat, inj, str(uuid.uuid4())))
    reply.headers.update(headers)
    reply.tokens = tokens
    return reply


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
