"""What a gRPC answer means for the record: `SamplingUsage` as the one `Usage`, status codes.

Shapes read (xai-api.md, "gRPC API"; xai-proto's ``usage.proto``): ``SamplingUsage``
``{completion_tokens, reasoning_tokens, prompt_tokens, total_tokens, prompt_text_tokens,
cached_prompt_text_tokens, prompt_image_tokens, num_sources_used, server_side_tools_used
(repeated ServerSideTool), cost_in_usd_ticks (optional)}``.

The convention is REST chat's, checked, not assumed: the gRPC and REST APIs are one backend,
and xai-proto documents ``completion_tokens`` as the *text* completion tokens with
``reasoning_tokens`` beside it. So `sampling_usage` hands the counts to the REST chat parser's
own rule (`daemon.dialects.chat.chat_usage`): reasoning is added to the output when the total
proves it sits outside ``completion_tokens`` (total = prompt + completion + reasoning) or when it
exceeds the completion count (inside, it never could). One rule for both transports, so a call
bills the same whichever way it came.
"""

from __future__ import annotations

from typing import Any, Final

import grpc

from daemon.dialects.chat import chat_usage
from daemon.record import Usage

#: ``ServerSideTool`` enum numbers (xai_sdk.proto ``usage_pb2``) → the tool kinds REST's
#: ``server_side_tool_usage_details`` names (without ``_calls``), so both transports count and
#: price a tool under one name (the catalog's ``tool`` entries, `Catalog.tool_fee`). A number
#: not listed (a newer tool) counts as ``unknown``; 0 (``SERVER_SIDE_TOOL_INVALID``) is no call.
TOOL_KINDS: Final[dict[int, str]] = {
    1: "web_search",
    2: "x_search",
    3: "code_interpreter",  # CODE_EXECUTION
    4: "view_image",
    5: "view_x_video",
    6: "file_search",  # COLLECTIONS_SEARCH
    7: "mcp",
    8: "document_search",  # ATTACHMENT_SEARCH (DOCUMENT_SEARCH in older protos)
    10: "image_search",
    11: "image_generation",
}

#: ``ServiceTier`` enum numbers → the ``service_tier`` strings REST answers carry (pricing
#: reads these); 0 (unspecified) is no value.
SERVICE_TIERS: Final[dict[int, str]] = {1: "default", 2: "priority"}

#: Each gRPC status code as the HTTP status the REST API answers for the same condition
#: (google.rpc.Code's documented HTTP mapping), so `calls.status`, the metrics' ``code`` label
#: and every "status >= 400" rule read a gRPC call the way they read a REST one. The code's
#: own name goes to ``upstream_error``.
HTTP_STATUS: Final[dict[grpc.StatusCode, int]] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def sampling_usage(u: Any) -> Usage:
    """A ``SamplingUsage`` message as the normalized `Usage` (see the module docstring):
    input = ``prompt_tokens`` (text and image, cached included), cached ⊂ input, output =
    completion (+ reasoning, by REST chat's rule), sources, server-side tool calls by kind (one
    entry of ``server_side_tools_used`` per call), and ``cost_in_usd_ticks`` only when the
    upstream set it (``HasField``: 0 ticks is a bill of nothing, absent is no bill)."""
    reported = u.cost_in_usd_ticks if u.HasField("cost_in_usd_ticks") else None
    usage = chat_usage(
        {
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens,
            "prompt_tokens_details": {
                "cached_tokens": u.cached_prompt_text_tokens,
                "image_tokens": u.prompt_image_tokens,
            },
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "num_sources_used": u.num_sources_used,
            "cost_in_usd_ticks": reported,
        }
    )
    tools = u.server_side_tools_used
    if tools:
        counts: dict[str, int] = {}
        for number in tools:
            if number:
                kind = TOOL_KINDS.get(number, "unknown")
                counts[kind] = counts.get(kind, 0) + 1
        usage.server_tool_calls = counts
    return usage


def service_tier(number: int) -> str | None:
    """A ``ServiceTier`` enum number as REST's string; None for unspecified or unknown."""
    return SERVICE_TIERS.get(number)
