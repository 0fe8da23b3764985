"""The wire format every surface shares: JSON request bodies in; replies, SSE frames, errors out.

Errors follow xai-api.md "Headers and errors": ``{"code": ..., "error": ...}`` with the status's
gRPC-style code text, and 429 adds ``retry-after``. A handler answers a `Reply` or raises
`ApiError`; `daemon.simulator.faults.send` puts either on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import hdrs

_ERROR_CODES = {
    400: "Client specified an invalid argument",
    401: "The request does not have valid authentication credentials for the operation",
    403: "The caller does not have permission to execute the specified operation",
    404: "Some requested entity was not found",
    405: "Method not allowed",
    408: "The deadline expired before the operation could complete",
    409: "The operation was aborted",
    410: "The requested resource is no longer available",
    413: "Request entity too large",
    415: "Unsupported media type",
    422: "Unprocessable entity",
    429: "Some resource has been exhausted",
    500: "Internal error",
    502: "Bad gateway",
    503: "The service is currently unavailable",
    504: "The deadline expired before the operation could complete",
    529: "The service is overloaded",
}


@dataclass(slots=True)
class Reply:
    """What a handler answers; `send` turns it into bytes on the wire, with injected faults."""

    status: int = 200
    body: bytes = b""
    frames: list[bytes] | None = None  # SSE frames: the reply is a stream
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    tokens: int = 0  # what the answer costs against the token rate limit (x-ratelimit-*)


TTFT_BASE_MS = 120  # x-metrics-ttft-ms = TTFT_BASE_MS + prompt tokens // TTFT_TOKENS_PER_MS
TTFT_TOKENS_PER_MS = 50
ITL_MS = 15  # x-metrics-mean-itl-ms; x-metrics-e2e-ms = ttft + ITL_MS * (output tokens - 1)


def timing_headers(prompt_tokens: int, output_tokens: int) -> dict[str, str]:
    """xAI's server-side timing headers (xai-api.md "Headers and errors"), in whole ms,
    derived deterministically from the answer's size (no clock): ``x-metrics-ttft-ms``,
    ``x-metrics-mean-itl-ms`` and ``x-metrics-e2e-ms``."""
    ttft = TTFT_BASE_MS + prompt_tokens // TTFT_TOKENS_PER_MS
    e2e = ttft + ITL_MS * max(0, output_tokens - 1)
    return {
        "x-metrics-e2e-ms": str(e2e),
        "x-metrics-ttft-ms": str(ttft),
        "x-metrics-mean-itl-ms": str(ITL_MS),
    }


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def json_reply(obj: Any, status: int = 200) -> Reply:
    """A JSON reply of `obj`."""
    return Reply(status=status, body=_dumps(obj))


def error_reply(status: int, message: str) -> Reply:
    """An xAI-shaped error reply: ``{code, error}``; 429 adds ``retry-after: 1``."""
    code = _ERROR_CODES.get(status, "Internal error" if status >= 500 else "Client error")
    headers = {"retry-after": "1"} if status == 429 else {}
    return Reply(status=status, body=_dumps({"code": code, "error": message}), headers=headers)


def sse_data(obj: Any) -> bytes:
    """One unnamed SSE frame (chat's style) carrying `obj` as JSON."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_event(event: str, obj: Any) -> bytes:
    """One named SSE frame (Responses' and Messages' style) carrying `obj` as JSON."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"  # ends a chat stream
SSE = "text/event-stream"  # the content type of every stream


class ApiError(Exception):
    """An xAI-shaped error answer, raised from anywhere inside a handler."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def reply(self) -> Reply:
        return error_reply(self.status, self.message)


def json_body(raw: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """The request's JSON object, or the error xAI gives for a body it cannot read."""
    content_type = headers.get(hdrs.CONTENT_TYPE, "")
    if "json" not in content_type.lower():
        raise ApiError(415, "Expected request with `Content-Type: application/json`")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"Failed to parse the request body as JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ApiError(422, "The request body must be a JSON object")
    return obj
