"""What the simulator's gRPC surfaces share: the call they answer, their method table entry,
and the helpers that turn the REST simulator's JSON-shaped answers into xAI's messages (usage,
a whole chat completion: a live chat's and a batch result's).

The message classes are xAI's protos as the ``xai-sdk`` package ships them (``xai_sdk.proto``,
which loads the v5 or v6 generated code that fits the installed protobuf), as xai-api.md
"gRPC API" describes them. A surface answers from the REST simulator's own logic on the same
`SimulatorState`, then converts: one source of model ids, token counts, fingerprints and costs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from multidict import CIMultiDict
from xai_sdk.proto import chat_pb2, sample_pb2, usage_pb2

from daemon.simulator.catalog import charge
from daemon.simulator.faults import Injection
from daemon.simulator.state import SimulatorState

#: REST's ``finish_reason`` values as ``FinishReason`` numbers.
FINISH = {
    "stop": sample_pb2.REASON_STOP,
    "length": sample_pb2.REASON_MAX_LEN,
    "tool_calls": sample_pb2.REASON_TOOL_CALLS,
}
#: REST's ``service_tier`` values as ``ServiceTier`` numbers.
TIERS = {"default": usage_pb2.SERVICE_TIER_DEFAULT, "priority": usage_pb2.SERVICE_TIER_PRIORITY}


@dataclass(slots=True)
class Call:
    """One gRPC call as a surface sees it: the state, its method, metadata and faults."""

    state: SimulatorState
    method: str  # the full method name, e.g. ``/xai_api.Chat/GetCompletion``
    metadata: CIMultiDict[str]  # the request's text metadata; names are lowercase on the wire
    inj: Injection


Unary = Callable[[Call, Any], Awaitable[Message]]
Streaming = Callable[[Call, Any], Awaitable[list[Message]]]


@dataclass(frozen=True, slots=True)
class Method:
    """One method the simulator serves: what its request parses as, and its answer.

    Exactly one of `unary` (one answer) and `stream` (a server stream: every message, which the
    front then writes one by one, paced, stalled or cut as asked) is set.
    """

    request: type[Message]
    unary: Unary | None = None
    stream: Streaming | None = None


def timestamp(seconds: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp of whole Unix seconds."""
    return timestamp_pb2.Timestamp(seconds=seconds)


def iso_timestamp(text: str) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp from an ISO 8601 time with a zone (``2025-01-01T00:00:00Z``)."""
    return timestamp(int(datetime.fromisoformat(text).timestamp()))


def grpc_cost(state: SimulatorState, units: Mapping[str, int]) -> int | None:
    """``SamplingUsage.cost_in_usd_ticks`` for a listing cost: `billed` (the billing ratio
    applied); None (the optional field unset) when ``state.report_cost`` is off or the state
    answers in 2025 shapes. The proto has no nano-USD field, so ``state.cost_unit`` does not
    apply here. ``units``: the listing cost per unit type; the answer is billed
    (`catalog.charge`), reported or not."""
    cost = charge(state, units)
    if not state.report_cost or state.legacy_2025_shapes:
        return None
    return cost


def _detail(usage: Mapping[str, Any], section: str, key: str) -> int:
    part = usage.get(section)
    value = part.get(key) if isinstance(part, Mapping) else None
    return int(value) if isinstance(value, int) else 0


def sampling_usage(
    usage: Mapping[str, Any], cost: int | None, tools: Sequence[int] = ()
) -> usage_pb2.SamplingUsage:
    """A REST chat ``usage`` object as xAI's ``SamplingUsage`` (xai-api.md "gRPC API").

    The same numbers: ``reasoning_tokens`` outside ``completion_tokens`` and inside
    ``total_tokens``, as REST chat has them; ``prompt_text_tokens`` = prompt - image tokens;
    ``cached_prompt_text_tokens`` a subset of the prompt. `tools`: one
    ``usage_pb2.ServerSideTool`` per server-side tool call; `cost`: ticks, or None to leave the
    optional field unset.
    """
    prompt = int(usage.get("prompt_tokens") or 0)
    images = _detail(usage, "prompt_tokens_details", "image_tokens")
    out = usage_pb2.SamplingUsage(
        completion_tokens=int(usage.get("completion_tokens") or 0),
        reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
        prompt_tokens=prompt,
        total_tokens=int(usage.get("total_tokens") or 0),
        prompt_text_tokens=prompt - images,
        cached_prompt_text_tokens=_detail(usage, "prompt_tokens_details", "cached_tokens"),
        prompt_image_tokens=images,
        num_sources_used=int(usage.get("num_sources_used") or 0),
        server_side_tools_used=list(tools),
    )
    if cost is not None:
        out.cost_in_usd_ticks = cost
    return out


def completion_response(
    body: Mapping[str, Any], tier: int, usage: usage_pb2.SamplingUsage | None
) -> chat_pb2.GetChatCompletionResponse:
    """A REST ``chat.completion`` body as ``GetChatCompletionResponse``: its id, model,
    fingerprint, citations and choices, with ``tier`` (a ``ServiceTier`` number) and ``usage``
    (None: left unset) as the caller prices them (a live chat: `grpc_chat`; a batch result:
    `grpc_batches`, at the discounted cost the body carries)."""
    out = chat_pb2.GetChatCompletionResponse(
        id=str(body["id"]),
        created=timestamp(int(body["created"])),
        model=str(body["model"]),
        system_fingerprint=str(body.get("system_fingerprint") or ""),
        citations=list(body.get("citations") or ()),
        service_tier=tier,
    )
    for choice in body["choices"]:
        message = choice["message"]
        out.outputs.append(
            chat_pb2.CompletionOutput(
                index=int(choice["index"]),
                finish_reason=FINISH.get(choice["finish_reason"], sample_pb2.REASON_STOP),
                message=chat_pb2.CompletionMessage(
                    content=message.get("content") or "",
                    reasoning_content=message.get("reasoning_content") or "",
                    role=chat_pb2.ROLE_ASSISTANT,
                    tool_calls=[tool_call(c) for c in message.get("tool_calls") or ()],
                ),
            )
        )
    if usage is not None:
        out.usage.CopyFrom(usage)
    return out


def service_tier(name: Any) -> int:
    """A REST ``service_tier`` value as its ``ServiceTier`` number (UNSPECIFIED for none)."""
    return int(TIERS.get(str(name), usage_pb2.SERVICE_TIER_UNSPECIFIED))


def tool_call(call: Mapping[str, Any], whole: str | None = None) -> chat_pb2.ToolCall:
    """A REST tool call ``{id, function: {name, arguments}}`` as a client-side ``ToolCall``,
    completed (``whole``: the arguments to give instead of its own)."""
    function = call.get("function") or {}
    return chat_pb2.ToolCall(
        id=str(call.get("id") or ""),
        type=chat_pb2.TOOL_CALL_TYPE_CLIENT_SIDE_TOOL,
        status=chat_pb2.TOOL_CALL_STATUS_COMPLETED,
        function=chat_pb2.FunctionCall(
            name=str(function.get("name") or ""),
            arguments=whole if whole is not None else str(function.get("arguments") or ""),
        ),
    )
