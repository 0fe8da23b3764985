"""A faithful fake of api.x.ai: a real aiohttp server for `xai-meter demo`, `simulate`, tests.

Why a real server: the relay and the official SDKs are tested against the bytes a real upstream
sends (chunked SSE, gzip, cut connections), not against mocks. Everything follows
``xai-api.md``: resolved model ids, reasoning tokens outside ``completion_tokens`` in chat and
inside ``output_tokens`` in Responses, cached tokens a subset of the prompt, and
``cost_in_usd_ticks`` computed from the listing with the documented formula.

Content is deterministic (the same prompt gives the same reply and token counts); only ids and
timestamps vary. Everything is steered from two places:

* `SimulatorState`, mutable at runtime (prices, fingerprints, billing ratio, stalls, ...);
* request headers, so a test says in the request itself what should go wrong:

  ``X-Sim-Status: 429``           answer that status with an xAI error body (429 adds retry-after)
  ``X-Sim-Stall: headers|body``   wait on ``state.release`` before the headers / after the headers
                                  (and a stream's first frame); ends when the client leaves
  ``X-Sim-Cut-After: N``          streams: abort after N frames; JSON: send half, then abort
  ``X-Sim-Split: N``              write the body in pieces of N bytes
  ``X-Sim-Gzip: 1``               gzip the body (JSON and SSE), ``Content-Encoding: gzip``
  ``X-Sim-Malformed: 1``          a body (or SSE frames) whose JSON does not parse
  ``X-Sim-Usage: none|every``     omit usage entirely / chat streams: cumulative usage per chunk
  ``X-Sim-Cached-Tokens: N``      force the cached part of the prompt
  ``X-Sim-Prompt-Tokens: N``      force the prompt size (long-context pricing without a huge body)
  ``X-Sim-Sources: N``            force ``num_sources_used``
  ``X-Sim-Response-Status: incomplete|failed``  the Responses terminal status (usage still sent)

Every response carries ``x-request-id``. Errors are ``{"code": ..., "error": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gzip
import hashlib
import logging
import re
import signal
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import hdrs, web
from multidict import CIMultiDict

__all__ = [
    "HEADER_CACHED_TOKENS",
    "HEADER_CUT_AFTER",
    "HEADER_GZIP",
    "HEADER_MALFORMED",
    "HEADER_PROMPT_TOKENS",
    "HEADER_RESPONSE_STATUS",
    "HEADER_SOURCES",
    "HEADER_SPLIT",
    "HEADER_STALL",
    "HEADER_STATUS",
    "HEADER_USAGE",
    "INVALID_KEY",
    "STATE_KEY",
    "Injection",
    "SimulatedRequest",
    "Simulator",
    "SimulatorState",
    "build_app",
    "default_fingerprints",
    "default_image_models",
    "default_listing",
    "price_ticks",
    "resolve_model",
    "run",
    "start",
    "tool_fee_ticks",
]

log = logging.getLogger(__name__)

HEADER_STATUS = "X-Sim-Status"
HEADER_STALL = "X-Sim-Stall"
HEADER_CUT_AFTER = "X-Sim-Cut-After"
HEADER_SPLIT = "X-Sim-Split"
HEADER_GZIP = "X-Sim-Gzip"
HEADER_MALFORMED = "X-Sim-Malformed"
HEADER_USAGE = "X-Sim-Usage"
HEADER_CACHED_TOKENS = "X-Sim-Cached-Tokens"
HEADER_PROMPT_TOKENS = "X-Sim-Prompt-Tokens"
HEADER_SOURCES = "X-Sim-Sources"
HEADER_RESPONSE_STATUS = "X-Sim-Response-Status"

INVALID_KEY = "invalid-key"  # the one API key the simulator rejects (400, like a wrong real key)

_MAX_BODY = 50 * 1024 * 1024  # xAI answers 413 above 50 MB
_POLL = 0.02  # how often a stalled response checks whether its client is still there
_PRIMING = 3  # tokens every prompt costs on top of its messages
_PER_MESSAGE = 4  # tokens each message costs on top of its words
_IMAGE_TOKENS = 256  # tokens per image part
_CACHE_NUM, _CACHE_DEN = 15, 16  # a cache hit covers this share of the seen prefix
_EFFORTS = ("low", "high")
_EFFORT_VARIANT_MODELS = frozenset({"grok-3-mini"})  # reasoning_effort shows in the model id
_TOOL_FEES: dict[str, tuple[str, int]] = {  # tool type -> (usage detail key, ticks per call)
    "web_search": ("web_search_calls", 50_000_000),
    "x_search": ("x_search_calls", 50_000_000),
    "code_interpreter": ("code_interpreter_calls", 50_000_000),
    "code_execution": ("code_interpreter_calls", 50_000_000),
    "file_search": ("file_search_calls", 25_000_000),
    "collections_search": ("file_search_calls", 25_000_000),
    "mcp": ("mcp_calls", 0),
    "document_search": ("document_search_calls", 100_000_000),
    "attachment_search": ("document_search_calls", 100_000_000),
}
_TOOL_DETAIL_KEYS = (
    "web_search_calls",
    "x_search_calls",
    "code_interpreter_calls",
    "file_search_calls",
    "mcp_calls",
    "document_search_calls",
)
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
}
_WORDS = (
    "the", "meter", "counts", "every", "token", "that", "flows", "through", "this", "quiet",
    "relay", "and", "each", "answer", "arrives", "in", "small", "steady", "pieces", "while",
    "prices", "stay", "exact", "to", "a", "tenth", "of", "nanodollar", "so", "reports",
    "remain", "honest", "simulated", "replies", "are", "short", "clear", "deterministic",
    "useful", "for", "tests", "models", "change", "fingerprints", "drift", "but", "numbers",
    "add", "up", "cleanly", "when", "streams", "end", "or", "break", "halfway", "bills",
    "match", "listings", "here", "today", "again", "always", "gently",
)  # fmt: skip
_THOUGHTS = (
    "Considering", "the", "question", "carefully", "weighing", "possible", "answers",
    "checking", "each", "step", "before", "replying", "briefly",
)  # fmt: skip
_PIXEL_PNG = (  # a 1x1 PNG: what b64_json images carry
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ"
    "AAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
_ID_NAMESPACE = uuid.UUID("6f1c0a52-58a4-4b4e-9d0e-3b2f7c1d9e10")


# --- the default listing -------------------------------------------------------------------


def default_fingerprints() -> dict[str, str]:
    """The system_fingerprint each listed model reports, keyed by its id."""
    return {
        "grok-4-0709": "fp_8f1c2d3e4a",
        "grok-4-fast-reasoning": "fp_3b7e9a1c05",
        "grok-4-fast-non-reasoning": "fp_c41d7f2e90",
        "grok-4.20": "fp_5e2a9b4d17",
        "grok-code-fast-1": "fp_a09c6e3f28",
        "grok-3": "fp_1d4f8b6a93",
        "grok-3-mini": "fp_6b0e2c7d41",
        "grok-2-vision-1212": "fp_9e3a1f5c62",
        "grok-imagine-image": "fp_2c8d4e6f0a",
        "grok-2-image-1212": "fp_7a5b3c1d9e",
    }


def _language_model(
    model_id: str,
    created: int,
    aliases: list[str],
    prices: tuple[int, int, int, int],
    *,
    image_input: bool = False,
    context_length: int | None = None,
    long_context: tuple[int, int, int, int] | None = None,
) -> dict[str, Any]:
    """One LanguageModel object, field for field as xAI lists it (prices in 1e-10 USD/token)."""
    prompt, cached, image, completion = prices
    model: dict[str, Any] = {
        "id": model_id,
        "fingerprint": default_fingerprints()[model_id],
        "created": created,
        "object": "model",
        "owned_by": "xai",
        "version": "1.0",
        "input_modalities": ["text", "image"] if image_input else ["text"],
        "output_modalities": ["text"],
        "prompt_text_token_price": prompt,
        "cached_prompt_text_token_price": cached,
        "prompt_image_token_price": image,
        "completion_text_token_price": completion,
        "search_price": 250_000_000,
        "aliases": aliases,
    }
    if context_length is not None:
        model["context_length"] = context_length
    if long_context is not None:
        threshold, lc_prompt, lc_cached, lc_completion = long_context
        model["long_context_threshold"] = threshold
        model["prompt_text_token_price_long_context"] = lc_prompt
        model["cached_prompt_text_token_price_long_context"] = lc_cached
        model["completion_text_token_price_long_context"] = lc_completion
    return model


def default_listing() -> list[dict[str, Any]]:
    """A realistic `/v1/language-models` listing; a fresh copy each call, so tests may edit it."""
    return [
        _language_model(
            "grok-4-0709", 1752019200, ["grok-4", "grok-4-latest"], (30000, 7500, 30000, 150000),
            image_input=True, context_length=256000, long_context=(128000, 60000, 15000, 300000),
        ),
        _language_model(
            "grok-4-fast-reasoning", 1758240000, ["grok-4-fast", "grok-4-fast-reasoning-latest"],
            (2000, 500, 2000, 5000), image_input=True, context_length=2000000,
            long_context=(128000, 4000, 1000, 10000),
        ),
        _language_model(
            "grok-4-fast-non-reasoning", 1758240000, ["grok-4-fast-non-reasoning-latest"],
            (2000, 500, 2000, 5000), image_input=True, context_length=2000000,
            long_context=(128000, 4000, 1000, 10000),
        ),
        _language_model(
            "grok-4.20", 1772582400, ["grok-4.20-latest"], (12500, 2500, 12500, 25000),
            image_input=True, context_length=2000000, long_context=(200000, 25000, 5000, 50000),
        ),
        _language_model(
            "grok-code-fast-1", 1756166400, ["grok-code-fast", "grok-code-fast-1-0825"],
            (2000, 200, 0, 15000), context_length=256000,
        ),
        _language_model(
            "grok-3", 1743724800, ["grok-3-latest", "grok-3-beta"], (30000, 7500, 0, 150000),
            context_length=131072,
        ),
        _language_model(
            "grok-3-mini", 1743724800, ["grok-3-mini-latest", "grok-3-mini-beta"],
            (3000, 750, 0, 5000), context_length=131072,
        ),
        _language_model(
            "grok-2-vision-1212", 1733961600, ["grok-2-vision", "grok-2-vision-latest"],
            (20000, 20000, 20000, 100000), image_input=True, context_length=32768,
        ),
    ]  # fmt: skip


def default_image_models() -> list[dict[str, Any]]:
    """A realistic `/v1/image-generation-models` listing (image_price in ticks per image)."""
    fingerprints = default_fingerprints()
    return [
        {
            "id": "grok-imagine-image",
            "fingerprint": fingerprints["grok-imagine-image"],
            "max_prompt_length": 8000,
            "created": 1759276800,
            "object": "model",
            "owned_by": "xai",
            "version": "1.0",
            "input_modalities": ["text", "image"],
            "output_modalities": ["image"],
            "image_price": 200_000_000,
            "aliases": ["grok-imagine-image-latest"],
        },
        {
            "id": "grok-2-image-1212",
            "fingerprint": fingerprints["grok-2-image-1212"],
            "max_prompt_length": 1024,
            "created": 1733961600,
            "object": "model",
            "owned_by": "xai",
            "version": "1.0",
            "input_modalities": ["text"],
            "output_modalities": ["image"],
            "image_price": 700_000_000,
            "aliases": ["grok-2-image", "grok-2-image-latest"],
        },
    ]


# --- state ---------------------------------------------------------------------------------


@dataclass(slots=True)
class SimulatedRequest:
    """One request as the simulator received it, for tests to inspect."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDict[str]
    body: bytes

    @property
    def query(self) -> str:
        return self.query_string

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(slots=True)
class _Deferred:
    completion: dict[str, Any]
    polls_left: int


@dataclass
class SimulatorState:
    """Every knob of the simulator; tests change these while it runs.

    Events are created unbound and bind to the loop that first waits on them, so a state belongs
    to one event loop.
    """

    chunk_delay: float = 0.0  # seconds between the writes of a stream
    fingerprints: dict[str, str] = field(default_factory=default_fingerprints)
    billing_ratio: tuple[int, int] = (1, 1)  # cost_in_usd_ticks = listing cost * num // den
    report_cost: bool = True  # include usage.cost_in_usd_ticks
    listing: list[dict[str, Any]] = field(default_factory=default_listing)
    image_models: list[dict[str, Any]] = field(default_factory=default_image_models)
    listing_status: int = 200  # != 200: the listing endpoints fail with this status
    deferred_polls: int = 1  # 202 answers before a deferred completion is ready
    messages_gone: bool = False  # /v1/messages answers 410, as xAI may
    messages_input_includes_cache: bool = True  # xAI-style; False: Anthropic-style exclusion
    accept_unknown_models: bool = False  # False: unknown models get 404 as on xAI
    responses_done_marker: bool = False  # end Responses streams with `data: [DONE]` too
    team_id: str = "5a7f3c2e-1b9d-4e6a-8c0f-2d4b6e8a1c3f"
    record_requests: bool = True  # False: keep `requests` and `sent` empty (long benchmarks)
    requests: list[SimulatedRequest] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)  # each response body, before gzip (see _send)
    request_received: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)  # a response began to stall
    abandoned: asyncio.Event = field(default_factory=asyncio.Event)  # a stall ended: client left
    abandoned_count: int = 0
    deferred: dict[str, _Deferred] = field(default_factory=dict)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)  # stored, by id
    prompt_cache: set[bytes] = field(default_factory=set)  # digests of prompt prefixes seen
    _contexts: dict[str, int] = field(default_factory=dict, repr=False)  # response id -> tokens

    async def wait_for_requests(self, count: int, within: float = 5.0) -> list[SimulatedRequest]:
        """Wait until at least `count` requests arrived (bounded), instead of sleeping.

        It clears `request_received` while it waits.
        """
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self.request_received.clear()
                await self.request_received.wait()
        return self.requests

    def requests_to(self, path: str) -> list[SimulatedRequest]:
        return [r for r in self.requests if r.path == path]


STATE_KEY = web.AppKey("xai_sim_state", SimulatorState)
_CLOSING_KEY = web.AppKey("xai_sim_closing", asyncio.Event)


# --- failure injection ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Injection:
    """What the request's X-Sim-* headers asked to go wrong with its response."""

    status: int | None = None
    stall: str | None = None  # "headers" | "body"
    cut_after: int | None = None
    split: int | None = None
    gzip: bool = False
    malformed: bool = False
    usage: str | None = None  # "none" | "every"

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Injection:
        status = _header_int(headers, HEADER_STATUS)
        if status is not None and not 400 <= status <= 599:
            raise _ApiError(400, f"{HEADER_STATUS} must be a 4xx or 5xx status, got {status}")
        split = _header_int(headers, HEADER_SPLIT)
        if split == 0:
            raise _ApiError(400, f"{HEADER_SPLIT} must be at least 1")
        return cls(
            status=status,
            stall=_header_choice(headers, HEADER_STALL, ("headers", "body")),
            cut_after=_header_int(headers, HEADER_CUT_AFTER),
            split=split,
            gzip=_header_flag(headers, HEADER_GZIP),
            malformed=_header_flag(headers, HEADER_MALFORMED),
            usage=_header_choice(headers, HEADER_USAGE, ("none", "every")),
        )


_INJECTION_KEY = web.RequestKey("xai_sim_injection", Injection)


class _ApiError(Exception):
    """An xAI-shaped error answer, raised from anywhere inside a handler."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def reply(self) -> _Reply:
        return _error_reply(self.status, self.message)


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise _ApiError(400, f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise _ApiError(400, f"{name} must not be negative, got {value}")
    return value


def _header_flag(headers: Mapping[str, str], name: str) -> bool:
    raw = headers.get(name, "").strip().lower()
    return raw not in ("", "0", "false", "no", "off")


def _header_choice(headers: Mapping[str, str], name: str, choices: Sequence[str]) -> str | None:
    raw = headers.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value not in choices:
        raise _ApiError(400, f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


# --- replies and the one place that writes them --------------------------------------------


@dataclass(slots=True)
class _Reply:
    """What a handler answers; `_send` turns it into bytes on the wire, with injected faults."""

    status: int = 200
    body: bytes = b""
    frames: list[bytes] | None = None  # SSE frames: the reply is a stream
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _json_reply(obj: Any, status: int = 200) -> _Reply:
    return _Reply(status=status, body=_dumps(obj))


def _error_reply(status: int, message: str) -> _Reply:
    code = _ERROR_CODES.get(status, "Internal error" if status >= 500 else "Client error")
    headers = {"retry-after": "1"} if status == 429 else {}
    return _Reply(status=status, body=_dumps({"code": code, "error": message}), headers=headers)


def _sse_data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _sse_event(event: str, obj: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


_DONE = b"data: [DONE]\n\n"


def _mangle(piece: bytes, stream: bool) -> bytes:
    """Break the JSON in a body or in an SSE frame's data lines, keeping the framing intact."""
    if not stream:
        return piece.rstrip()[:-1] + b', "truncated' if piece else b"{not json"
    lines = []
    for line in piece.split(b"\n"):
        if line.startswith(b"data: {"):
            line = line[:-1] + b', "truncated'
        lines.append(line)
    return b"\n".join(lines)


def _gzip_stream(pieces: list[bytes], finish: bool) -> list[bytes]:
    """Compress a stream piece by piece (sync flush), so pacing and cuts survive compression."""
    compressor = zlib.compressobj(wbits=31)
    out = [compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH) for piece in pieces]
    if finish:
        out.append(compressor.flush())
    return out


def _resplit(pieces: list[bytes], size: int) -> list[bytes]:
    data = b"".join(pieces)
    return [data[i : i + size] for i in range(0, len(data), size)]


def _client_gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _wait_release(request: web.Request) -> bool:
    """Wait for `state.release`; False when the client left or the simulator is closing.

    aiohttp does not tell a handler that its client left (unless handler cancellation is on), so
    the wait also polls the transport.
    """
    state = request.app[STATE_KEY]
    closing = request.app[_CLOSING_KEY]
    state.stalled.set()
    try:
        while not state.release.is_set():
            if closing.is_set():
                return False
            if _client_gone(request):
                _abandon(state)
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.release.wait(), _POLL)
    except asyncio.CancelledError:  # handler cancellation: the client left
        if not closing.is_set():
            _abandon(state)
        raise
    return True


def _abandon(state: SimulatorState) -> None:
    state.abandoned_count += 1
    state.abandoned.set()


async def _send(request: web.Request, reply: _Reply, inj: Injection) -> web.StreamResponse:
    """Write a reply, applying the injected faults: stall, split, gzip, malformed, cut."""
    state = request.app[STATE_KEY]
    headers: CIMultiDict[str] = CIMultiDict(reply.headers)
    headers["x-request-id"] = str(uuid.uuid4())
    stream = reply.frames is not None
    if reply.content_type:
        headers[hdrs.CONTENT_TYPE] = reply.content_type
    if stream:
        headers[hdrs.CACHE_CONTROL] = "no-cache"
    pieces = list(reply.frames) if reply.frames is not None else [reply.body]
    pieces = [piece for piece in pieces if piece]
    if inj.malformed:
        pieces = [_mangle(piece, stream) for piece in pieces] or [_mangle(b"", stream)]
    cut = inj.cut_after is not None
    if stream and inj.cut_after is not None:
        pieces = pieces[: inj.cut_after]
    if state.record_requests:  # what a client that decodes the body gets, as it is sent
        plain = b"".join(pieces)
        state.sent.append(plain[: len(plain) // 2] if cut and not stream else plain)
    if inj.gzip and (pieces or stream):
        headers[hdrs.CONTENT_ENCODING] = "gzip"
        if stream:
            pieces = _gzip_stream(pieces, finish=not cut)
        else:
            pieces = [gzip.compress(b"".join(pieces), mtime=0)]
    response = web.StreamResponse(status=reply.status, headers=headers)
    if not stream:
        body = b"".join(pieces)
        response.content_length = len(body)  # a cut body promises more than it sends
        pieces = [body[: len(body) // 2]] if cut else [body]
        pieces = [piece for piece in pieces if piece]
    if inj.split:
        pieces = _resplit(pieces, inj.split)
    stall_at = (1 if stream else 0) if inj.stall == "body" else None
    try:
        await response.prepare(request)
        for index, piece in enumerate(pieces):
            if index == stall_at:
                if not await _wait_release(request):
                    _abort(request)
                    return response
            elif index and stream and state.chunk_delay > 0:
                await asyncio.sleep(state.chunk_delay)
            await response.write(piece)
        if stall_at is not None and stall_at >= len(pieces) and not await _wait_release(request):
            _abort(request)
            return response
        if cut:
            _abort(request)
            return response
        await response.write_eof()
    except ConnectionError:
        pass  # the client left mid-answer; there is nobody to tell
    return response


def _auth_error(headers: Mapping[str, str]) -> _Reply | None:
    key = _api_key(headers)
    if not key:
        return _error_reply(401, "No API key provided. Send it as `Authorization: Bearer <key>`.")
    if key == INVALID_KEY:
        return _error_reply(
            400,
            f"Incorrect API key provided: {_redact(key)}. "
            "You can obtain an API key from https://console.x.ai.",
        )
    return None


def _api_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get(hdrs.AUTHORIZATION, "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    return headers.get("x-api-key", "").strip() or None


def _redact(key: str) -> str:
    return f"{key[:4]}...{key[-4:]}" if len(key) > 12 else "****"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Endpoint = Callable[[web.Request, SimulatorState, Injection], Awaitable[_Reply]]


@web.middleware
async def _front(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record the request, then auth, injected status and header stalls, for every route."""
    state = request.app[STATE_KEY]
    plain = Injection()
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        _record(state, request, b"")
        return await _send(request, _error_reply(413, "Request body over 50 MB"), plain)
    _record(state, request, body)
    try:
        inj = Injection.from_headers(request.headers)
    except _ApiError as exc:
        return await _send(request, exc.reply(), plain)
    request[_INJECTION_KEY] = inj
    denied = _auth_error(request.headers)
    if denied is not None:
        return await _send(request, denied, inj)
    if inj.stall == "headers" and not await _wait_release(request):
        _abort(request)
        return web.Response()
    if inj.status is not None:
        reply = _error_reply(inj.status, f"Simulated failure ({HEADER_STATUS}: {inj.status})")
        return await _send(request, reply, inj)
    try:
        return await handler(request)
    except web.HTTPException as exc:  # the router's 404 / 405
        message = f"No route for {request.method} {request.path}"
        return await _send(request, _error_reply(exc.status, message), inj)


def _record(state: SimulatorState, request: web.Request, body: bytes) -> None:
    state.request_received.set()
    if not state.record_requests:
        return
    state.requests.append(
        SimulatedRequest(
            method=request.method,
            path=request.path,
            query_string=request.query_string,
            headers=CIMultiDict(request.headers),
            body=body,
        )
    )


def _endpoint(fn: Endpoint) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        inj = request[_INJECTION_KEY]
        try:
            reply = await fn(request, request.app[STATE_KEY], inj)
        except _ApiError as exc:
            reply = exc.reply()
        return await _send(request, reply, inj)

    return handler


# --- models and prices ---------------------------------------------------------------------


def _find(models: Sequence[Mapping[str, Any]], name: str) -> dict[str, Any] | None:
    for model in models:
        if model.get("id") == name:
            return dict(model)
    for model in models:
        if name in (model.get("aliases") or ()):
            return dict(model)
    return None


def resolve_model(
    state: SimulatorState, name: str, effort: str | None = None
) -> tuple[str, dict[str, Any] | None]:
    """The id the response reports for a requested name, and the listing entry that prices it.

    Aliases resolve to their model's id; ``grok-3-mini`` with a reasoning effort becomes
    ``grok-3-mini-high``/``-low`` (priced as grok-3-mini). Unknown names come back as sent.
    """
    entry = _find(state.listing, name)
    if entry is None:
        base, _, suffix = name.rpartition("-")
        if suffix in _EFFORTS and base:
            base_entry = _find(state.listing, base)
            if base_entry is not None and base_entry["id"] in _EFFORT_VARIANT_MODELS:
                return f"{base_entry['id']}-{suffix}", base_entry
        return name, None
    resolved = str(entry["id"])
    if effort in _EFFORTS and resolved in _EFFORT_VARIANT_MODELS:
        resolved = f"{resolved}-{effort}"
    return resolved, entry


def _is_reasoning(model_id: str) -> bool:
    if "non-reasoning" in model_id:
        return False
    return model_id.startswith(("grok-4", "grok-3-mini", "grok-code")) or model_id.endswith(
        "-reasoning"
    )


def _fingerprint(state: SimulatorState, resolved: str, entry: Mapping[str, Any] | None) -> str:
    found = state.fingerprints.get(resolved)
    if found is None and entry is not None:
        found = state.fingerprints.get(str(entry["id"]))
    return found or "fp_" + hashlib.sha256(resolved.encode()).hexdigest()[:10]


def _price(entry: Mapping[str, Any], key: str, long_context: bool, default: int = 0) -> int:
    if long_context and isinstance(entry.get(f"{key}_long_context"), int):
        return int(entry[f"{key}_long_context"])
    value = entry.get(key)
    return int(value) if isinstance(value, int) else default


def _detail(usage: Mapping[str, Any], section: str, key: str) -> int:
    part = usage.get(section)
    value = part.get(key) if isinstance(part, Mapping) else None
    return int(value) if isinstance(value, int) else 0


def price_ticks(state: SimulatorState, model: str, usage: Mapping[str, Any]) -> int:
    """The cost in ticks (1e-10 USD) that the listing implies for a usage dict.

    The xai-api.md formula: (prompt - cached - image) * P_in + cached * P_cached
    + image * P_image + (completion + reasoning) * P_out + sources * search_price, with the
    *_long_context prices for every token once prompt >= long_context_threshold. Image tokens
    are part of prompt_tokens, so each prompt token is billed once (as `daemon.pricing` does);
    without the image price listed they cost P_in; without a cached price, P_in.
    Chat usage (reasoning outside completion) and Responses usage (output includes reasoning)
    are both understood. Unknown models cost 0. Tool fees are separate (`tool_fee_ticks`).
    """
    entry = resolve_model(state, model)[1]
    if entry is None:
        return 0
    if "prompt_tokens" in usage:
        prompt = int(usage.get("prompt_tokens") or 0)
        cached = _detail(usage, "prompt_tokens_details", "cached_tokens")
        images = _detail(usage, "prompt_tokens_details", "image_tokens")
        output = int(usage.get("completion_tokens") or 0)
        output += _detail(usage, "completion_tokens_details", "reasoning_tokens")
    else:
        prompt = int(usage.get("input_tokens") or 0)
        cached = _detail(usage, "input_tokens_details", "cached_tokens")
        if "cache_read_input_tokens" in usage:
            cached = int(usage.get("cache_read_input_tokens") or 0)
        images = 0
        output = int(usage.get("output_tokens") or 0)
    sources = int(usage.get("num_sources_used") or 0)
    threshold = entry.get("long_context_threshold")
    long_context = isinstance(threshold, int) and prompt >= threshold
    p_in = _price(entry, "prompt_text_token_price", long_context)
    p_cached = _price(entry, "cached_prompt_text_token_price", long_context, default=p_in)
    p_out = _price(entry, "completion_text_token_price", long_context)
    p_image = _price(entry, "prompt_image_token_price", long_context, default=p_in)
    search = _price(entry, "search_price", False)
    return (
        (prompt - cached - images) * p_in
        + cached * p_cached
        + output * p_out
        + images * p_image
        + sources * search
    )


def tool_fee_ticks(details: Mapping[str, int]) -> int:
    """Server-side tool fees for `server_side_tool_usage_details` ($5 per 1000 web searches...)."""
    per_call = {key: fee for key, fee in _TOOL_FEES.values()}
    return sum(int(count) * per_call.get(key, 0) for key, count in details.items())


def _billed(state: SimulatorState, ticks: int) -> int:
    num, den = state.billing_ratio
    return ticks * num // den


# --- prompts, replies and token counts -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Segment:
    """One message of a prompt: its identity for the prompt cache, and its size."""

    canon: bytes
    text: str
    words: int
    images: int

    @property
    def tokens(self) -> int:
        return self.words + _PER_MESSAGE + self.images * _IMAGE_TOKENS


_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})


def _flatten(content: Any, texts: list[str]) -> int:
    """Collect the text of a message's content into `texts`; return how many images it holds."""
    if content is None:
        return 0
    if isinstance(content, str):
        texts.append(content)
        return 0
    if isinstance(content, list):
        return sum(_flatten(part, texts) for part in content)
    if isinstance(content, dict):
        if content.get("type") in _IMAGE_PARTS:
            return 1
        for key in ("text", "content", "output", "arguments"):
            if key in content:
                return _flatten(content[key], texts)
    texts.append(orjson.dumps(content).decode())
    return 0


def _segment(message: Any) -> _Segment:
    texts: list[str] = []
    if isinstance(message, dict):
        images = _flatten(message.get("content"), texts)
        for extra in ("tool_calls", "function_call"):
            if message.get(extra):
                texts.append(orjson.dumps(message[extra]).decode())
        if "content" not in message:
            images += _flatten({k: v for k, v in message.items() if k not in ("type", "id")}, texts)
    else:
        images = _flatten(message, texts)
    text = " ".join(texts)
    canon = orjson.dumps(message, option=orjson.OPT_SORT_KEYS)
    return _Segment(canon=canon, text=text, words=len(text.split()), images=images)


@dataclass(slots=True)
class _Prompt:
    segments: list[_Segment]
    tokens: int
    image_tokens: int
    cached: int
    seed: bytes


def _measure(
    state: SimulatorState,
    headers: Mapping[str, str],
    scope: str,
    segments: list[_Segment],
    history_tokens: int = 0,
) -> _Prompt:
    """Count a prompt's tokens and how much of it the prompt cache already holds.

    The cache works on message prefixes within one scope (model, conversation): the longest
    prefix seen before counts as cached, 15/16 of it, as a real cache covers most but not all.
    """
    digest = hashlib.sha256(scope.encode()).digest()
    running = _PRIMING + history_tokens
    best = running if history_tokens else 0
    seen: list[bytes] = []
    for segment in segments:
        digest = hashlib.sha256(digest + segment.canon).digest()
        running += segment.tokens
        if digest in state.prompt_cache:
            best = running
        seen.append(digest)
    state.prompt_cache.update(seen)
    image_tokens = sum(s.images for s in segments) * _IMAGE_TOKENS
    tokens = running
    forced = _header_int(headers, HEADER_PROMPT_TOKENS)
    if forced is not None:
        tokens = max(forced, image_tokens)
    cached = best * _CACHE_NUM // _CACHE_DEN
    forced_cached = _header_int(headers, HEADER_CACHED_TOKENS)
    if forced_cached is not None:
        cached = forced_cached
    cached = min(cached, tokens - image_tokens)
    seed = hashlib.sha256(b"\x00".join(s.canon for s in segments)).digest()
    return _Prompt(segments, tokens, image_tokens, cached, seed)


def _choice_seed(seed: bytes, index: int) -> bytes:
    return seed if index == 0 else hashlib.sha256(seed + index.to_bytes(2, "big")).digest()


def _reply_words(seed: bytes) -> list[str]:
    """8 to 20 words, the same ones for the same prompt."""
    count = 8 + seed[0] % 13
    words = [_WORDS[seed[1 + i] % len(_WORDS)] for i in range(count)]
    words[0] = words[0].capitalize()
    words[-1] += "."
    return words


def _thought_words(seed: bytes) -> list[str]:
    count = 4 + seed[25] % 5
    words = [_THOUGHTS[(seed[26] + i) % len(_THOUGHTS)] for i in range(count)]
    words[0] = words[0].capitalize()
    words[-1] += "."
    return words


def _reasoning_tokens(seed: bytes, effort: str | None) -> int:
    base = 24 + seed[30] % 64
    if effort == "low":
        return base // 2
    if effort == "high":
        return base * 2
    return base


def _deltas(words: list[str]) -> list[str]:
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def _limit(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass(slots=True)
class _Choice:
    words: list[str]
    thoughts: list[str]
    reasoning_tokens: int
    finish_reason: str

    @property
    def text(self) -> str:
        return " ".join(self.words)


def _choices(
    seed: bytes, n: int, reasoning: bool, effort: str | None, limit: int | None
) -> list[_Choice]:
    out = []
    for index in range(n):
        choice_seed = _choice_seed(seed, index)
        words = _reply_words(choice_seed)
        finish = "stop"
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "length"
        out.append(
            _Choice(
                words=words,
                thoughts=_thought_words(choice_seed) if reasoning else [],
                reasoning_tokens=_reasoning_tokens(choice_seed, effort) if reasoning else 0,
                finish_reason=finish,
            )
        )
    return out


def _body(raw: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """The request's JSON object, or the error xAI gives for a body it cannot read."""
    content_type = headers.get(hdrs.CONTENT_TYPE, "")
    if "json" not in content_type.lower():
        raise _ApiError(415, "Expected request with `Content-Type: application/json`")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _ApiError(400, f"Failed to parse the request body as JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _ApiError(422, "The request body must be a JSON object")
    return obj


def _model_of(
    state: SimulatorState, req: Mapping[str, Any], effort: str | None
) -> tuple[str, dict[str, Any] | None]:
    name = req.get("model")
    if not isinstance(name, str) or not name:
        raise _ApiError(422, "Failed to deserialize the JSON body: missing field `model`")
    resolved, entry = resolve_model(state, name, effort)
    if entry is None and not state.accept_unknown_models:
        raise _ApiError(
            404, f"The model {name} does not exist or your team does not have access to it."
        )
    return resolved, entry


def _sources(headers: Mapping[str, str], req: Mapping[str, Any], seed: bytes) -> int:
    forced = _header_int(headers, HEADER_SOURCES)
    if forced is not None:
        return forced
    search = req.get("search_parameters")
    if not isinstance(search, dict) or search.get("mode") == "off":
        return 0
    most = _limit(search.get("max_search_results")) or 20
    return min(most, 2 + seed[29] % 4)


# --- chat completions ----------------------------------------------------------------------


@dataclass(slots=True)
class _Chat:
    model: str
    fingerprint: str
    prompt: _Prompt
    choices: list[_Choice]
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
        usage["cost_in_usd_ticks"] = _billed(state, price_ticks(state, chat.model, usage))
    return usage


def _chat_full_usage(state: SimulatorState, chat: _Chat) -> dict[str, Any]:
    completion = sum(len(c.words) for c in chat.choices)
    reasoning = sum(c.reasoning_tokens for c in chat.choices)
    return _chat_usage(state, chat, completion, reasoning)


def _prepare_chat(state: SimulatorState, headers: Mapping[str, str], req: dict[str, Any]) -> _Chat:
    effort = req.get("reasoning_effort")
    effort = effort if isinstance(effort, str) else None
    resolved, entry = _model_of(state, req, effort)
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _ApiError(422, "`messages` must be a non-empty list")
    n = req.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        raise _ApiError(422, f"`n` must be from 1 to 10, got {n!r}")
    base_id = str(entry["id"]) if entry else resolved
    prompt = _measure(state, headers, f"chat:{base_id}", [_segment(m) for m in messages])
    limit = _limit(req.get("max_completion_tokens")) or _limit(req.get("max_tokens"))
    return _Chat(
        model=resolved,
        fingerprint=_fingerprint(state, resolved, entry),
        prompt=prompt,
        choices=_choices(prompt.seed, n, _is_reasoning(resolved), effort, limit),
        sources=_sources(headers, req, prompt.seed),
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
        return _sse_data(obj)

    for index, choice in enumerate(chat.choices):
        deltas: list[dict[str, Any]] = [{"reasoning_content": t} for t in _deltas(choice.thoughts)]
        deltas += [{"content": t} for t in _deltas(choice.words)]
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
    frames.append(_DONE)
    return frames


async def _chat_completions(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    req = _body(await request.read(), request.headers)
    chat = _prepare_chat(state, request.headers, req)
    if req.get("deferred"):
        request_id = str(uuid.uuid4())
        completion = _chat_completion(state, chat, inj, request_id)
        state.deferred[request_id] = _Deferred(completion, max(0, state.deferred_polls))
        return _json_reply({"request_id": request_id})
    if req.get("stream"):
        options = req.get("stream_options")
        include = isinstance(options, dict) and options.get("include_usage") is True
        return _Reply(frames=_chat_frames(state, chat, inj, include), content_type=_SSE)
    return _json_reply(_chat_completion(state, chat, inj, str(uuid.uuid4())))


_SSE = "text/event-stream"


async def _deferred_completion(
    request: web.Request, state: SimulatorState, inj: Injection
) -> _Reply:
    request_id = request.match_info["request_id"]
    job = state.deferred.get(request_id)
    if job is None:
        raise _ApiError(404, f"No deferred completion {request_id}: unknown, expired or fetched")
    if job.polls_left > 0:
        job.polls_left -= 1
        return _Reply(status=202, content_type="")
    del state.deferred[request_id]
    completion = dict(job.completion)
    if inj.usage == "none":
        completion.pop("usage", None)
    return _json_reply(completion)


# --- listings ------------------------------------------------------------------------------


def _listed(state: SimulatorState, model: Mapping[str, Any]) -> dict[str, Any]:
    """A listing entry with the fingerprint currently in force (tests change fingerprints)."""
    out = dict(model)
    fingerprint = state.fingerprints.get(str(model.get("id")))
    if fingerprint is not None:
        out["fingerprint"] = fingerprint
    return out


def _check_listing(state: SimulatorState) -> None:
    if state.listing_status != 200:
        raise _ApiError(state.listing_status, "Simulated listing failure")


async def _language_models(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    _check_listing(state)
    return _json_reply({"models": [_listed(state, m) for m in state.listing]})


async def _language_model_one(
    request: web.Request, state: SimulatorState, inj: Injection
) -> _Reply:
    _check_listing(state)
    found = _find(state.listing, request.match_info["model_id"])
    if found is None:
        raise _ApiError(404, f"The model {request.match_info['model_id']} does not exist.")
    return _json_reply(_listed(state, found))


async def _image_models(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    _check_listing(state)
    return _json_reply({"models": [_listed(state, m) for m in state.image_models]})


async def _image_model_one(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    _check_listing(state)
    found = _find(state.image_models, request.match_info["model_id"])
    if found is None:
        raise _ApiError(404, f"The model {request.match_info['model_id']} does not exist.")
    return _json_reply(_listed(state, found))


def _openai_model(model: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": model.get("id"),
        "created": model.get("created"),
        "object": "model",
        "owned_by": model.get("owned_by", "xai"),
    }


async def _models(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    _check_listing(state)
    data = [_openai_model(m) for m in [*state.listing, *state.image_models]]
    return _json_reply({"object": "list", "data": data})


async def _model_one(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    _check_listing(state)
    name = request.match_info["model_id"]
    found = _find(state.listing, name) or _find(state.image_models, name)
    if found is None:
        raise _ApiError(404, f"The model {name} does not exist.")
    return _json_reply(_openai_model(found))


# --- responses -----------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _tool_calls(tools: Any, seed: bytes) -> dict[str, int]:
    """Server-side tool calls a request makes: a deterministic 1-3 per tool type asked for."""
    calls: dict[str, int] = {}
    if not isinstance(tools, list):
        return calls
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind in _TOOL_FEES:
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


def _responses_segments(req: Mapping[str, Any]) -> list[_Segment]:
    segments = []
    instructions = req.get("instructions")
    if isinstance(instructions, str) and instructions:
        segments.append(_segment({"role": "system", "content": instructions}))
    items = req.get("input")
    if isinstance(items, str):
        segments.append(_segment({"role": "user", "content": items}))
    elif isinstance(items, list) and items:
        segments.extend(_segment(item) for item in items)
    else:
        raise _ApiError(422, "`input` must be a string or a non-empty list of input items")
    return segments


async def _responses_create(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    req = _body(await request.read(), request.headers)
    terminal = _header_choice(
        request.headers, HEADER_RESPONSE_STATUS, ("completed", "incomplete", "failed")
    )
    reasoning_param = req.get("reasoning")
    effort = reasoning_param.get("effort") if isinstance(reasoning_param, dict) else None
    effort = effort if isinstance(effort, str) else None
    resolved, entry = _model_of(state, req, effort)
    previous_id = req.get("previous_response_id")
    history = 0
    if previous_id is not None:
        if not isinstance(previous_id, str) or previous_id not in state._contexts:
            raise _ApiError(404, f"Response with id '{previous_id}' not found.")
        history = state._contexts[previous_id]
    segments = _responses_segments(req)
    base_id = str(entry["id"]) if entry else resolved
    prompt = _measure(
        state, request.headers, f"responses:{base_id}:{previous_id or ''}", segments, history
    )
    limit = _limit(req.get("max_output_tokens"))
    choice = _choices(prompt.seed, 1, _is_reasoning(resolved), effort, limit)[0]
    calls = _tool_calls(req.get("tools"), prompt.seed)
    query = " ".join(segments[-1].text.split()[:8])
    details = dict.fromkeys(_TOOL_DETAIL_KEYS, 0)
    for kind, count in calls.items():
        details[_TOOL_FEES[kind][0]] += count
    output_tokens = len(choice.words) + choice.reasoning_tokens
    usage: dict[str, Any] = {
        "input_tokens": prompt.tokens,
        "input_tokens_details": {"cached_tokens": prompt.cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": choice.reasoning_tokens},
        "total_tokens": prompt.tokens + output_tokens,
        "num_sources_used": _sources(request.headers, req, prompt.seed),
        "num_server_side_tools_used": sum(calls.values()),
        "server_side_tool_usage_details": details,
    }
    if state.report_cost:
        ticks = price_ticks(state, resolved, usage) + tool_fee_ticks(details)
        usage["cost_in_usd_ticks"] = _billed(state, ticks)
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
    response: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "object": "response",
        "created_at": int(time.time()),
        "model": resolved,
        "status": status,
        "output": output,
        "usage": usage if inj.usage != "none" else None,
        "error": (
            {"code": "server_error", "message": f"Simulated failure ({HEADER_RESPONSE_STATUS})"}
            if status == "failed"
            else None
        ),
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "metadata": {},
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
    if inj.usage == "none":
        del response["usage"]
    if store:
        state.responses[response["id"]] = copy.deepcopy(response)
        state._contexts[response["id"]] = prompt.tokens + len(choice.words)
    if req.get("stream"):
        frames = _responses_frames(response, choice)
        if state.responses_done_marker:
            frames.append(_DONE)
        return _Reply(frames=frames, content_type=_SSE)
    return _json_reply(response)


def _responses_frames(response: dict[str, Any], choice: _Choice) -> list[bytes]:
    """The Responses event sequence, each frame `event: <type>` + data with sequence_number."""
    frames: list[bytes] = []

    def event(kind: str, **fields: Any) -> None:
        frames.append(_sse_event(kind, {"type": kind, "sequence_number": len(frames), **fields}))

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
        for delta in _deltas(choice.words):
            event("response.output_text.delta", **ids, content_index=0, delta=delta, logprobs=[])
        event("response.output_text.done", **ids, content_index=0, text=part["text"], logprobs=[])
        event("response.content_part.done", **ids, content_index=0, part=part)
        event("response.output_item.done", output_index=index, item=item)
    event(f"response.{response['status']}", response=response)
    return frames


async def _response_get(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    response_id = request.match_info["response_id"]
    stored = state.responses.get(response_id)
    if stored is None:
        raise _ApiError(404, f"Response with id '{response_id}' not found.")
    return _json_reply(stored)


async def _response_delete(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    response_id = request.match_info["response_id"]
    if state.responses.pop(response_id, None) is None:
        raise _ApiError(404, f"Response with id '{response_id}' not found.")
    state._contexts.pop(response_id, None)
    return _json_reply({"id": response_id, "object": "response", "deleted": True})


# --- anthropic-compatible messages ---------------------------------------------------------


async def _messages(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    if state.messages_gone:
        raise _ApiError(410, "The Anthropic-compatible messages endpoint is no longer available.")
    req = _body(await request.read(), request.headers)
    resolved, entry = _model_of(state, req, None)
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _ApiError(422, "`messages` must be a non-empty list")
    segments = []
    system = req.get("system")
    if system:
        segments.append(_segment({"role": "system", "content": system}))
    segments.extend(_segment(m) for m in messages)
    base_id = str(entry["id"]) if entry else resolved
    prompt = _measure(state, request.headers, f"messages:{base_id}", segments)
    limit = _limit(req.get("max_tokens"))
    choice = _choices(prompt.seed, 1, _is_reasoning(resolved), None, limit)[0]
    stop_reason = "max_tokens" if choice.finish_reason == "length" else "end_turn"
    output_tokens = len(choice.words) + choice.reasoning_tokens  # thinking is billed as output
    input_tokens = prompt.tokens
    if not state.messages_input_includes_cache:
        input_tokens -= prompt.cached
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": prompt.cached,
        "cache_creation_input_tokens": 0,
    }
    message: dict[str, Any] = {
        "id": f"msg_{uuid.uuid4().hex}",
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
    if not req.get("stream"):
        return _json_reply(message)
    start = {**message, "content": [], "stop_reason": None}
    if inj.usage != "none":
        start["usage"] = {**usage, "output_tokens": 1}
    frames = [
        _sse_event("message_start", {"type": "message_start", "message": start}),
        _sse_event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _sse_event("ping", {"type": "ping"}),
    ]
    for delta in _deltas(choice.words):
        frames.append(
            _sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": delta},
                },
            )
        )
    frames.append(_sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    final: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
    }
    if inj.usage != "none":
        final["usage"] = {"output_tokens": output_tokens}
    frames.append(_sse_event("message_delta", final))
    frames.append(_sse_event("message_stop", {"type": "message_stop"}))
    return _Reply(frames=frames, content_type=_SSE)


# --- images --------------------------------------------------------------------------------


def _multipart_fields(raw: bytes, content_type: str) -> dict[str, Any]:
    """The fields of a multipart body (what the openai SDK sends to images.edit); files elided."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise _ApiError(400, "A multipart body needs a boundary")
    fields: dict[str, Any] = {}
    for part in raw.split(b"--" + match.group(1).encode()):
        head, separator, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if not separator or name is None:
            continue
        key = name.group(1).decode()
        if b"filename=" in head:
            fields[key] = "<file>"
        else:
            fields[key] = value.removesuffix(b"\r\n").decode("utf-8", "replace")
    return fields


async def _images(
    request: web.Request, state: SimulatorState, inj: Injection, edit: bool
) -> _Reply:
    raw = await request.read()
    content_type = request.headers.get(hdrs.CONTENT_TYPE, "")
    if edit and content_type.lower().startswith("multipart/form-data"):
        req = _multipart_fields(raw, content_type)
    else:
        req = _body(raw, request.headers)
    prompt = req.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _ApiError(422, "`prompt` must be a non-empty string")
    name = req.get("model") or (state.image_models[0]["id"] if state.image_models else "")
    entry = _find(state.image_models, str(name))
    if entry is None:
        raise _ApiError(
            404, f"The model {name} does not exist or your team does not have access to it."
        )
    raw_n = req.get("n", 1)
    try:
        n = int(raw_n if raw_n is not None else 1)
    except (TypeError, ValueError):
        n = 0
    if isinstance(raw_n, bool) or not 1 <= n <= 10:
        raise _ApiError(422, f"`n` must be from 1 to 10, got {raw_n!r}")
    response_format = req.get("response_format") or "url"
    if response_format not in ("url", "b64_json"):
        raise _ApiError(422, f"`response_format` must be url or b64_json, got {response_format!r}")
    data = []
    for index in range(n):
        digest = hashlib.sha256(f"{prompt}\x00{index}\x00{edit}".encode()).hexdigest()
        if response_format == "url":
            item = {"url": f"https://imgen.x.ai/xai-imgen/xai-tmp-imgen-{digest[:32]}.jpeg"}
        else:
            item = {"b64_json": _PIXEL_PNG}
        item["revised_prompt"] = prompt
        data.append(item)
    body: dict[str, Any] = {"data": data}
    if inj.usage != "none" and state.report_cost:
        price = entry.get("image_price")
        ticks = int(price) * n if isinstance(price, int) else 0
        body["usage"] = {"cost_in_usd_ticks": _billed(state, ticks)}
    return _json_reply(body)


async def _images_generations(
    request: web.Request, state: SimulatorState, inj: Injection
) -> _Reply:
    return await _images(request, state, inj, edit=False)


async def _images_edits(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    return await _images(request, state, inj, edit=True)


# --- small endpoints -----------------------------------------------------------------------


async def _tokenize(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    req = _body(await request.read(), request.headers)
    _model_of(state, req, None)
    text = req.get("text")
    if not isinstance(text, str):
        raise _ApiError(422, "`text` must be a string")
    tokens = []
    for piece in re.findall(r"\s*\S+|\s+", text):
        digest = hashlib.sha256(piece.encode()).digest()
        tokens.append(
            {
                "token_id": int.from_bytes(digest[:4], "big") % 131072,
                "string_token": piece,
                "token_bytes": list(piece.encode()),
            }
        )
    return _json_reply({"token_ids": tokens})


async def _api_key_info(request: web.Request, state: SimulatorState, inj: Injection) -> _Reply:
    key = _api_key(request.headers) or ""
    user_id = str(uuid.uuid5(_ID_NAMESPACE, "user"))
    return _json_reply(
        {
            "redacted_api_key": _redact(key),
            "user_id": user_id,
            "name": "sim-key",
            "create_time": "2025-01-01T00:00:00Z",
            "modify_time": "2025-01-01T00:00:00Z",
            "modified_by": user_id,
            "team_id": state.team_id,
            "acls": ["api-key:model:*", "api-key:endpoint:*"],
            "api_key_id": str(uuid.uuid5(_ID_NAMESPACE, "key:" + key)),
            "team_blocked": False,
            "api_key_blocked": False,
            "api_key_disabled": False,
        }
    )


# --- the app and its lifecycle -------------------------------------------------------------


async def _on_shutdown(app: web.Application) -> None:
    app[_CLOSING_KEY].set()  # stalled responses give up instead of holding the shutdown


def build_app(state: SimulatorState | None = None) -> web.Application:
    """The simulator as an aiohttp app (for any runner); its state is under `STATE_KEY`."""
    app = web.Application(middlewares=[_front], client_max_size=_MAX_BODY + 1)
    app[STATE_KEY] = state if state is not None else SimulatorState()
    app[_CLOSING_KEY] = asyncio.Event()
    app.on_shutdown.append(_on_shutdown)
    routes = [
        ("POST", "/v1/chat/completions", _chat_completions),
        ("GET", "/v1/chat/deferred-completion/{request_id}", _deferred_completion),
        ("GET", "/v1/language-models", _language_models),
        ("GET", "/v1/language-models/{model_id}", _language_model_one),
        ("GET", "/v1/image-generation-models", _image_models),
        ("GET", "/v1/image-generation-models/{model_id}", _image_model_one),
        ("GET", "/v1/models", _models),
        ("GET", "/v1/models/{model_id}", _model_one),
        ("POST", "/v1/responses", _responses_create),
        ("GET", "/v1/responses/{response_id}", _response_get),
        ("DELETE", "/v1/responses/{response_id}", _response_delete),
        ("POST", "/v1/messages", _messages),
        ("POST", "/v1/images/generations", _images_generations),
        ("POST", "/v1/images/edits", _images_edits),
        ("POST", "/v1/tokenize-text", _tokenize),
        ("GET", "/v1/api-key", _api_key_info),
    ]
    for method, path, endpoint in routes:
        app.router.add_route(method, path, _endpoint(endpoint))
    return app


class Simulator:
    """A running simulator: where it listens (`url`), its `state`, and `close()`."""

    def __init__(self, runner: web.AppRunner, state: SimulatorState, host: str, port: int) -> None:
        self._runner = runner
        self.state = state
        self.host = host
        self.port = port
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start(
    host: str = "127.0.0.1", port: int = 0, state: SimulatorState | None = None
) -> Simulator:
    """Start the simulator on a loopback port (0: any free one; `.url` names the real one)."""
    state = state if state is not None else SimulatorState()
    runner = web.AppRunner(
        build_app(state), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return Simulator(runner, state, host, bound)


def run(host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM: the `xai-meter simulate` command."""

    async def serve() -> None:
        # Long-running: keep no copy of what was received and sent (tests read those).
        simulator = await start(host, port, SimulatorState(record_requests=False))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        log.info("xai simulator listening on %s", simulator.url)
        print(f"xai simulator listening on {simulator.url}", flush=True)
        try:
            await stop.wait()
        finally:
            await simulator.close()

    asyncio.run(serve())
