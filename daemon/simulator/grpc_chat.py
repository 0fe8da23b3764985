"""gRPC ``xai_api.Chat`` and ``xai_api.Sample``: chat's answers, in xAI's messages.

Follows xai-api.md "gRPC API". A ``GetCompletionsRequest`` becomes the JSON request REST chat
would get for the same conversation (a one-text-part message is ``{"role", "content": text}``,
exactly what the openai SDK sends), so `chat.prepare_chat` measures it, chooses the reply and
prices it: the same model id, tokens, fingerprint and ``cost_in_usd_ticks`` as REST, and the
same prompt cache. Beyond REST chat (where Live Search is gone), gRPC requests may list
server-side tools (web and X search, code execution, collections, MCP, attachments): each asked
makes a deterministic 1-3 calls, listed in ``server_side_tools_used`` and billed in
``cost_in_usd_ticks`` as on Responses (`catalog.TOOL_FEES`).

* ``GetCompletion``: one ``GetChatCompletionResponse``; ``store_messages`` keeps it for
  ``GetStoredCompletion`` (never a new charge) until ``DeleteStoredCompletion`` (twice:
  NOT_FOUND).
* ``GetCompletionChunk``: REST's stream chunk by chunk (every delta with role assistant, as the
  SDK needs; a function call whole in its first chunk), usage only on the last chunk (no
  outputs), cumulative on every chunk with ``x-sim-usage: every``.
* ``StartDeferredCompletion`` / ``GetDeferredCompletion``: the id, then PENDING for
  ``state.deferred_polls`` polls, then DONE once with the completion, then NOT_FOUND (REST's
  deferred rules, the same store). ``x-sim-deferred-outcome: failed|expired`` on the start
  ends it FAILED or EXPIRED instead (no response), once, then NOT_FOUND.
* ``CompactContext``: all but the last message dropped into an opaque ``encrypted_content``;
  billed: the input as prompt, the summary's words as completion.
* ``Sample/SampleText[Streaming]``: REST ``/v1/completions``' answer for the prompt strings
  joined by spaces, ``n`` choices.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message
from xai_sdk.proto import chat_pb2, deferred_pb2, sample_pb2, usage_pb2

from daemon.simulator.billing import SERVER_SIDE_TOOLS
from daemon.simulator.catalog import (
    TOOL_DETAIL_KEYS,
    TOOL_FEES,
    fingerprint_of,
    is_reasoning,
    price_units,
    tool_fee_ticks,
)
from daemon.simulator.chat import (
    PreparedChat,
    chat_chunks,
    chat_completion,
    prepare_chat,
)
from daemon.simulator.completions import text_usage
from daemon.simulator.faults import header_choice
from daemon.simulator.grpc_wire import (
    FINISH,
    TIERS,
    Call,
    Method,
    completion_response,
    grpc_cost,
    sampling_usage,
    timestamp,
    tool_call,
)
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
from daemon.simulator.responses import server_tool_calls
from daemon.simulator.state import Deferred
from daemon.simulator.wire import ApiError

_ROLES = {
    chat_pb2.ROLE_USER: "user",
    chat_pb2.ROLE_ASSISTANT: "assistant",
    chat_pb2.ROLE_SYSTEM: "system",
    chat_pb2.ROLE_FUNCTION: "function",
    chat_pb2.ROLE_TOOL: "tool",
    chat_pb2.ROLE_DEVELOPER: "developer",
}
_EFFORTS = {
    chat_pb2.EFFORT_LOW: "low",
    chat_pb2.EFFORT_MEDIUM: "medium",
    chat_pb2.EFFORT_HIGH: "high",
    chat_pb2.EFFORT_NONE: "none",
    chat_pb2.EFFORT_XHIGH: "xhigh",
}
# Tool oneof field -> (the tool type of `catalog.TOOL_FEES`, the usage enum value)
_SERVER_TOOLS = {
    "web_search": ("web_search", usage_pb2.SERVER_SIDE_TOOL_WEB_SEARCH),
    "x_search": ("x_search", usage_pb2.SERVER_SIDE_TOOL_X_SEARCH),
    "code_execution": ("code_execution", usage_pb2.SERVER_SIDE_TOOL_CODE_EXECUTION),
    "collections_search": ("collections_search", usage_pb2.SERVER_SIDE_TOOL_COLLECTIONS_SEARCH),
    "mcp": ("mcp", usage_pb2.SERVER_SIDE_TOOL_MCP),
    "attachment_search": ("attachment_search", usage_pb2.SERVER_SIDE_TOOL_ATTACHMENT_SEARCH),
}
_TOOL_ENUMS = {kind: enum for kind, enum in _SERVER_TOOLS.values()}
_COMPACT_WORDS = 12  # completion tokens of a compaction's summary, at most
#: Metadata on ``StartDeferredCompletion``: how the job ends (gRPC only: REST's deferred chat
#: has no failed or expired answer).
HEADER_DEFERRED_OUTCOME = "X-Sim-Deferred-Outcome"
_OUTCOMES = ("done", "failed", "expired")
_ENDED = {"failed": deferred_pb2.FAILED, "expired": deferred_pb2.EXPIRED}


def _content(message: chat_pb2.Message) -> str | list[dict[str, Any]]:
    """A message's content as REST has it: its one text as a string, else typed parts."""
    parts: list[dict[str, Any]] = []
    for part in message.content:
        kind = part.WhichOneof("content")
        if kind == "text":
            parts.append({"type": "text", "text": part.text})
        elif kind == "image_url":
            parts.append({"type": "image_url", "image_url": {"url": part.image_url.image_url}})
        elif kind == "file":
            parts.append({"type": "file", "file": {"file_id": part.file.file_id}})
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def message_json(message: chat_pb2.Message) -> dict[str, Any]:
    """A chat ``Message`` as the REST chat message of the same turn."""
    out: dict[str, Any] = {"role": _ROLES.get(message.role, "user"), "content": _content(message)}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def request_json(req: chat_pb2.GetCompletionsRequest) -> dict[str, Any]:
    """A ``GetCompletionsRequest`` as the REST chat request asking the same."""
    out: dict[str, Any] = {"model": req.model, "messages": [message_json(m) for m in req.messages]}
    if req.HasField("n"):
        out["n"] = req.n
    if req.HasField("max_tokens"):
        out["max_tokens"] = req.max_tokens
    if req.HasField("reasoning_effort") and req.reasoning_effort in _EFFORTS:
        out["reasoning_effort"] = _EFFORTS[req.reasoning_effort]
    if req.service_tier == usage_pb2.SERVICE_TIER_PRIORITY:
        out["service_tier"] = "priority"
    functions = [
        {"type": "function", "function": {"name": tool.function.name}}
        for tool in req.tools
        if tool.WhichOneof("tool") == "function"
    ]
    if functions:
        out["tools"] = functions
    if req.HasField("tool_choice"):
        if req.tool_choice.function_name:
            out["tool_choice"] = {
                "type": "function",
                "function": {"name": req.tool_choice.function_name},
            }
        elif req.tool_choice.mode == chat_pb2.TOOL_MODE_NONE:
            out["tool_choice"] = "none"
    search = req.search_parameters
    if req.HasField("search_parameters") and search.mode != chat_pb2.OFF_SEARCH_MODE:
        out["search_parameters"] = {"mode": "on"}
        if search.HasField("max_search_results"):
            out["search_parameters"]["max_search_results"] = search.max_search_results
    return out


class _Answer:
    """A prepared gRPC chat: REST's `PreparedChat` plus the server-side tool calls it makes."""

    def __init__(self, call: Call, req: chat_pb2.GetCompletionsRequest) -> None:
        self.state = call.state
        self.chat: PreparedChat = prepare_chat(call.state, call.metadata, request_json(req))
        fields = [tool.WhichOneof("tool") or "" for tool in req.tools]
        kinds = [_SERVER_TOOLS[field][0] for field in fields if field in _SERVER_TOOLS]
        self.calls = server_tool_calls([{"type": kind} for kind in kinds], self.chat.prompt.seed)

    def tools_used(self) -> list[int]:
        return [_TOOL_ENUMS[kind] for kind, count in self.calls.items() for _ in range(count)]

    def usage(self, usage: Mapping[str, Any]) -> usage_pb2.SamplingUsage:
        """A REST usage object of this chat as ``SamplingUsage``, tools and their fees added."""
        details = dict.fromkeys(TOOL_DETAIL_KEYS, 0)
        for kind, count in self.calls.items():
            details[TOOL_FEES[kind][0]] += count
        units = price_units(self.state, self.chat.model, usage, self.chat.tier)
        units[SERVER_SIDE_TOOLS] = tool_fee_ticks(details)
        cost = grpc_cost(self.state, units)
        return sampling_usage(usage, cost, self.tools_used())

    def tier(self) -> int:
        if self.state.legacy_2025_shapes and self.chat.tier == "default":
            return int(usage_pb2.SERVICE_TIER_UNSPECIFIED)  # 2025: the tier only when granted
        return int(TIERS.get(self.chat.tier, usage_pb2.SERVICE_TIER_PRIORITY))

    def response(self, body: Mapping[str, Any]) -> chat_pb2.GetChatCompletionResponse:
        """REST's ``chat.completion`` body of this chat as ``GetChatCompletionResponse``."""
        usage = self.usage(body["usage"]) if "usage" in body else None
        return completion_response(body, self.tier(), usage)

    def chunk(self, obj: Mapping[str, Any]) -> chat_pb2.GetChatCompletionChunk:
        """One REST stream chunk of this chat as ``GetChatCompletionChunk``."""
        out = chat_pb2.GetChatCompletionChunk(
            id=str(obj["id"]),
            created=timestamp(int(obj["created"])),
            model=str(obj["model"]),
            system_fingerprint=str(obj.get("system_fingerprint") or ""),
            service_tier=self.tier(),
        )
        for choice in obj["choices"]:
            delta = choice["delta"]
            calls = [
                tool_call(c, whole=self.chat.call.arguments if self.chat.call else "")
                for c in delta.get("tool_calls") or ()
                if c.get("id")  # the head of a call; REST's argument pieces follow it
            ]
            finish = choice.get("finish_reason")
            out.outputs.append(
                chat_pb2.CompletionOutputChunk(
                    index=int(choice["index"]),
                    delta=chat_pb2.Delta(
                        content=delta.get("content") or "",
                        reasoning_content=delta.get("reasoning_content") or "",
                        role=chat_pb2.ROLE_ASSISTANT,
                        tool_calls=calls,
                    ),
                    finish_reason=FINISH.get(finish, sample_pb2.REASON_STOP)
                    if finish
                    else sample_pb2.REASON_INVALID,
                )
            )
        if "usage" in obj:
            out.usage.CopyFrom(self.usage(obj["usage"]))
        return out


def _store(call: Call, answer: _Answer, body: dict[str, Any]) -> None:
    call.state.stored_completions[str(body["id"])] = (answer, body)


async def get_completion(call: Call, req: chat_pb2.GetCompletionsRequest) -> Message:
    """``Chat/GetCompletion``: the whole completion (stored when ``store_messages``)."""
    answer = _Answer(call, req)
    body = chat_completion(call.state, answer.chat, call.inj, str(uuid.uuid4()))
    if req.store_messages:
        _store(call, answer, body)
    return answer.response(body)


async def get_completion_chunk(call: Call, req: chat_pb2.GetCompletionsRequest) -> list[Message]:
    """``Chat/GetCompletionChunk``: REST's chunks, usage on the last one."""
    answer = _Answer(call, req)
    chunks = chat_chunks(call.state, answer.chat, call.inj, include_usage=True)
    if req.store_messages and chunks:
        _store(call, answer, chat_completion(call.state, answer.chat, call.inj, chunks[0]["id"]))
    return [answer.chunk(chunk) for chunk in chunks]


async def start_deferred(call: Call, req: chat_pb2.GetCompletionsRequest) -> Message:
    """``Chat/StartDeferredCompletion``: the request id; the completion waits in the state."""
    answer = _Answer(call, req)
    request_id = str(uuid.uuid4())
    body = chat_completion(call.state, answer.chat, call.inj, request_id)
    polls = max(0, call.state.deferred_polls)
    outcome = header_choice(call.metadata, HEADER_DEFERRED_OUTCOME, _OUTCOMES) or "done"
    call.state.deferred[request_id] = Deferred(body, polls, grpc=answer, outcome=outcome)
    return deferred_pb2.StartDeferredResponse(request_id=request_id)


async def get_deferred(call: Call, req: deferred_pb2.GetDeferredRequest) -> Message:
    """``Chat/GetDeferredCompletion``: PENDING while polls are left, DONE once, then 404."""
    job = call.state.deferred.get(req.request_id)
    if job is None or not isinstance(job.grpc, _Answer):  # REST's jobs are fetched over REST
        raise ApiError(404, f"No deferred completion {req.request_id}: unknown, expired or fetched")
    if job.polls_left > 0:
        job.polls_left -= 1
        return chat_pb2.GetDeferredCompletionResponse(status=deferred_pb2.PENDING)
    del call.state.deferred[req.request_id]
    if job.outcome != "done":
        return chat_pb2.GetDeferredCompletionResponse(status=_ENDED[job.outcome])
    body = dict(job.completion)
    if call.inj.usage == "none":
        body.pop("usage", None)
    return chat_pb2.GetDeferredCompletionResponse(
        status=deferred_pb2.DONE, response=job.grpc.response(body)
    )


def _stored(call: Call, response_id: str) -> tuple[Any, dict[str, Any]]:
    found = call.state.stored_completions.get(response_id)
    if found is None:
        raise ApiError(404, f"Stored completion with id '{response_id}' not found.")
    return found


async def get_stored(call: Call, req: chat_pb2.GetStoredCompletionRequest) -> Message:
    """``Chat/GetStoredCompletion``: the stored answer again, its original usage (a replay)."""
    answer, body = _stored(call, req.response_id)
    return answer.response(body)


async def delete_stored(call: Call, req: chat_pb2.DeleteStoredCompletionRequest) -> Message:
    """``Chat/DeleteStoredCompletion``: forget it; a second delete is NOT_FOUND."""
    _stored(call, req.response_id)
    del call.state.stored_completions[req.response_id]
    return chat_pb2.DeleteStoredCompletionResponse(response_id=req.response_id)


async def compact_context(call: Call, req: chat_pb2.CompactContextRequest) -> Message:
    """``Chat/CompactContext``: the conversation folded into an opaque summary, billed."""
    state = call.state
    resolved, entry = model_of(state, {"model": req.model}, None)
    if not req.input:
        raise ApiError(422, "`input` must hold at least one message")
    base_id = str(entry["id"]) if entry else resolved
    segments = [segment_of(message_json(m)) for m in req.input]
    prompt = measure_prompt(state, call.metadata, f"compact:{base_id}", segments)
    summary = reply_choices(prompt.seed, 1, False, None, _COMPACT_WORDS)[0]
    usage = {
        "prompt_tokens": prompt.tokens,
        "completion_tokens": len(summary.words),
        "total_tokens": prompt.tokens + len(summary.words),
        "prompt_tokens_details": {"cached_tokens": prompt.cached},
    }
    out = chat_pb2.CompactContextResponse(
        id=str(uuid.uuid4()),
        encrypted_content="enc_" + hashlib.sha256(prompt.seed).hexdigest(),
        dropped_message_count=len(req.input) - 1,
    )
    if call.inj.usage != "none":
        cost = grpc_cost(state, price_units(state, resolved, usage))
        out.usage.CopyFrom(sampling_usage(usage, cost))
    return out


def _sample_answer(
    call: Call, req: sample_pb2.SampleTextRequest
) -> tuple[str, str, list[Choice], Prompt, dict[str, Any]]:
    """(model, fingerprint, choices, final usage) of a SampleText request, as /v1/completions."""
    state = call.state
    resolved, entry = model_of(state, {"model": req.model}, None)
    text = " ".join(req.prompt)
    if not text:
        raise ApiError(422, "`prompt` must be a non-empty string")
    n = req.n if req.HasField("n") else 1
    if not 1 <= n <= 10:
        raise ApiError(422, f"`n` must be from 1 to 10, got {n}")
    base_id = str(entry["id"]) if entry else resolved
    prompt = measure_prompt(
        state, call.metadata, f"completions:{base_id}", [segment_of({"content": text})]
    )
    limit = token_limit(req.max_tokens) if req.HasField("max_tokens") else None
    choices = reply_choices(prompt.seed, n, is_reasoning(resolved), None, limit)
    completion = sum(len(c.words) for c in choices)
    reasoning = sum(c.reasoning_tokens for c in choices)
    usage = text_usage(state, resolved, prompt, completion, reasoning)
    return resolved, fingerprint_of(state, resolved, entry), choices, prompt, usage


async def sample_text(call: Call, req: sample_pb2.SampleTextRequest) -> Message:
    """``Sample/SampleText``: ``n`` text completions of the joined prompt."""
    model, fingerprint, choices, _, usage = _sample_answer(call, req)
    out = sample_pb2.SampleTextResponse(
        id=str(uuid.uuid4()),
        created=timestamp(int(time.time())),
        model=model,
        system_fingerprint=fingerprint,
        choices=[
            sample_pb2.SampleChoice(
                index=i, text=c.text, finish_reason=FINISH.get(c.finish_reason, 0)
            )
            for i, c in enumerate(choices)
        ],
    )
    if call.inj.usage != "none":
        out.usage.CopyFrom(_text_usage_proto(call, model, usage))
    return out


def _text_usage_proto(call: Call, model: str, usage: Mapping[str, Any]) -> usage_pb2.SamplingUsage:
    return sampling_usage(usage, grpc_cost(call.state, price_units(call.state, model, usage)))


async def sample_text_streaming(call: Call, req: sample_pb2.SampleTextRequest) -> list[Message]:
    """``Sample/SampleTextStreaming``: one response per word, then each choice's finish, the
    last one with the usage (cumulative on each with ``x-sim-usage: every``)."""
    model, fingerprint, choices, prompt, usage = _sample_answer(call, req)
    rid = str(uuid.uuid4())
    created = timestamp(int(time.time()))
    state = call.state
    every = call.inj.usage == "every"
    out: list[Message] = []
    done = 0
    for index, choice in enumerate(choices):
        for piece in word_deltas(choice.words):
            done += 1
            message = sample_pb2.SampleTextResponse(
                id=rid,
                created=created,
                model=model,
                system_fingerprint=fingerprint,
                choices=[sample_pb2.SampleChoice(index=index, text=piece)],
            )
            if every:
                partial = text_usage(state, model, prompt, done, 0)
                message.usage.CopyFrom(_text_usage_proto(call, model, partial))
            out.append(message)
        finish = sample_pb2.SampleTextResponse(
            id=rid,
            created=created,
            model=model,
            system_fingerprint=fingerprint,
            choices=[
                sample_pb2.SampleChoice(index=index, finish_reason=FINISH[choice.finish_reason])
            ],
        )
        if every or (index == len(choices) - 1 and call.inj.usage != "none"):
            finish.usage.CopyFrom(_text_usage_proto(call, model, usage))
        out.append(finish)
    return out


CHAT = "/xai_api.Chat/"
SAMPLE = "/xai_api.Sample/"

METHODS: dict[str, Method] = {
    CHAT + "GetCompletion": Method(chat_pb2.GetCompletionsRequest, unary=get_completion),
    CHAT + "GetCompletionChunk": Method(
        chat_pb2.GetCompletionsRequest, stream=get_completion_chunk
    ),
    CHAT + "StartDeferredCompletion": Method(chat_pb2.GetCompletionsRequest, unary=start_deferred),
    CHAT + "GetDeferredCompletion": Method(deferred_pb2.GetDeferredRequest, unary=get_deferred),
    CHAT + "GetStoredCompletion": Method(chat_pb2.GetStoredCompletionRequest, unary=get_stored),
    CHAT + "DeleteStoredCompletion": Method(
        chat_pb2.DeleteStoredCompletionRequest, unary=delete_stored
    ),
    SAMPLE + "SampleText": Method(sample_pb2.SampleTextRequest, unary=sample_text),
    SAMPLE + "SampleTextStreaming": Method(
        sample_pb2.SampleTextRequest, stream=sample_text_streaming
    ),
}
if hasattr(chat_pb2, "CompactContextRequest"):  # in the protos of newer xai-sdk releases only
    METHODS[CHAT + "CompactContext"] = Method(chat_pb2.CompactContextRequest, unary=compact_context)
"""The methods this module serves, by full method name."""

__all__ = ["METHODS", "message_json", "request_json"]
