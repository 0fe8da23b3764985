"""The one object that flows through the daemon: a relayed call, from request headers to its end.

A `CallRecord` is born when the request headers arrive and moves through these stages, in order;
every call passes each stage at most once and ends in exactly one of `finished` or `failed`:

1. ``created``          request line and headers read: id, times, method, path, endpoint,
                        provider, transport, key_id, app (a gRPC call: ``path`` is the full
                        method name, ``/xai_api.Chat/GetCompletion``, and its headers are
                        its metadata; see `daemon.grpc_relay`)
2. ``request``          body read: requested_model, stream, deferred (the dialect inspects it)
3. ``response_headers`` upstream answered: status, upstream_ms; from its headers
                        (`daemon.upstream.read_response_headers`): request_id (x-request-id),
                        ratelimit (x-ratelimit-{limit,remaining}-{requests,tokens}),
                        upstream_ttft_ms (x-metrics-ttft-ms)
4. ``chunk``            each body chunk tees into the dialect tap: model, fingerprint, response_id,
                        usage, ttft_ms
5. ``finished``         the body reached the client in full (whatever the HTTP status), or
   ``failed``           anything else: upstream unreachable or timed out, stream cut, client gone,
                        daemon shutdown. ``error`` says which.

After its ending the record is handed, once, to the sinks (see `daemon.meter`), which price it,
count it, log it and queue it for the ledger. Sinks read it; only pricing writes cost fields.
"""

from __future__ import annotations

import enum
import itertools
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final

import orjson


class Stage(enum.IntEnum):
    CREATED = 1
    REQUEST = 2
    RESPONSE_HEADERS = 3
    CHUNK = 4
    FINISHED = 5
    FAILED = 6


#: The ``status`` of a call whose client left (or cancelled it) before its status was sent:
#: nginx's "client closed request". A gRPC call's status comes with its trailers, at the end,
#: so every gRPC call the client cancels is one (its CANCELLED's HTTP status); a REST call's
#: only before the response headers went out (after them, the status the client got stands).
CLIENT_CLOSED_REQUEST: Final = 499


class CallError(enum.StrEnum):
    """Why a call did not finish normally; stored in `calls.error`."""

    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_STREAM_CUT = "upstream_stream_cut"
    CLIENT_DISCONNECT = "client_disconnect"
    SHUTDOWN = "shutdown"
    RELAY_ERROR = "relay_error"
    HTTP_ERROR = "http_error"  # upstream answered 4xx/5xx; the body was relayed in full
    # The daemon died (SIGKILL, OOM, power) after the call was sent and before it ended: the
    # row is rebuilt from the journal's start entry on the next start (daemon.ledger.journal).
    CRASH = "crash"
    # The relay's own limits (`daemon.connections`): answered by the relay, never sent upstream.
    REQUEST_TOO_LARGE = "request_too_large"  # 413: the body is over the per-call limit
    BODY_TIMEOUT = "body_timeout"  # 408: the body did not arrive within relay.body_timeout
    BODY_BYTES_EXHAUSTED = "body_bytes_exhausted"  # 503: relay.max_body_bytes_in_flight is full
    # 503: every pooled upstream connection stayed busy for upstream.connect_timeout
    UPSTREAM_POOL_EXHAUSTED = "upstream_pool_exhausted"
    # 508: the request carries this daemon's own Via tag: it came back round a loop of relays
    # (`daemon.loops`), and going on would send it round again
    LOOP_DETECTED = "loop_detected"


class Unmetered(enum.StrEnum):
    """Why usage could not be read from a call that should carry it."""

    NO_USAGE = "no_usage"
    MALFORMED = "malformed"
    PARSER_ERROR = "parser_error"
    ENCODING = "encoding"
    TOO_LARGE = "too_large"
    INCOMPLETE = "incomplete"
    # The request went to the upstream, but the call ended (client gone, upstream timeout or
    # disconnect, shutdown) before the response headers came: a charge may exist, unread.
    NO_RESPONSE = "no_response"
    CRASH = "crash"  # the daemon died before the call ended (see `CallError.CRASH`)
    # A usage or cost number past what the ledger stores (a signed 64-bit integer): the value
    # is clamped to the largest one, and the call is not booked as metered.
    OUT_OF_RANGE = "out_of_range"


class CostSource(enum.StrEnum):
    """Where ``cost_ticks`` came from (pricing sets it); stored in `calls.cost_source`."""

    REPORTED = "reported"  # the upstream's own cost_in_usd_ticks
    COMPUTED = "computed"  # usage times the price in force at started_at
    UNPRICED = "unpriced"  # neither exists: cost_ticks is None


class Transport(enum.StrEnum):
    """How the client reached the daemon; stored in `calls.transport`."""

    HTTP = "http"  # the HTTP relay (REST, server-sent events)
    GRPC = "grpc"  # the gRPC relay (xai-sdk); see daemon.grpc_relay
    WEBSOCKET = "websocket"


class DeferredState(enum.StrEnum):
    """Where a deferred request (chat completion, image, video) stands, on its rows; stored in
    `calls.deferred_state`. See `daemon.meter.deferred`."""

    PENDING = "pending"  # the POST: its result has not come yet
    COMPLETED = "completed"  # the POST: its result came (the ledger rewrites the row)
    EXPIRED = "expired"  # the POST: no result within 24 h (rewritten), or a poll said expired
    FAILED = "failed"  # the POST (rewritten) and the poll that said so: nothing billed
    RESULT = "result"  # the GET that brought the result: billed, linked to the POST
    DUPLICATE = "duplicate"  # the same result fetched again: not billed again


_PROCESS_TAG = os.urandom(3).hex()  # tells apart ids made in the same ms by two processes
_sequence = itertools.count()
_last_ms = -1
_last_prefix = ""


def new_call_id(now: float | None = None) -> str:
    """A sortable, unique id: 12 hex digits of milliseconds, 6 of this process, 6 of a counter.

    No random bytes per call: a getrandom() syscall costs more than the rest of this function.
    """
    global _last_ms, _last_prefix
    ms = int((time.time() if now is None else now) * 1000)
    if ms != _last_ms:  # several calls start in the same millisecond under load
        _last_ms, _last_prefix = ms, f"{ms:012x}{_PROCESS_TAG}"
    return f"{_last_prefix}{next(_sequence) & 0xFFFFFF:06x}"


#: Kinds in `Usage.server_tool_calls` that count items a tool fetched, not calls: X search's
#: posts and profiles fetched (xai-api.md, "Responses": billed per item since 2026-09-21).
FETCH_COUNT_KINDS: frozenset[str] = frozenset({"x_posts_fetched", "x_users_fetched"})


@dataclass(slots=True)
class Usage:
    """Usage in one normalized shape, whatever the dialect.

    ``output_tokens`` is billable output *including* reasoning; ``reasoning_tokens`` and
    ``cached_input_tokens`` are subsets of ``output_tokens`` and ``input_tokens``.
    ``server_tool_calls`` holds server-side tool quantities by kind (xAI's detail keys without
    ``_calls``: calls per tool, ``unknown`` for calls no kind names), plus `FETCH_COUNT_KINDS`
    (items fetched); each is priced by its kind's fee. ``reported_cost_ticks`` is what the
    upstream billed (ticks, or its nano-USD * 10).

    Prompt caching, in Anthropic's standard terms (xai-api.md, "Anthropic-compatible"):
    ``cached_input_tokens`` is the cache *read* count (Anthropic's ``cache_read_input_tokens``,
    OpenAI's ``cached_tokens``; also readable as `cache_read_input_tokens`);
    ``cache_creation_input_tokens`` are cache *writes*, also a part of ``input_tokens`` and apart
    from the reads, of which ``cache_creation_1h_input_tokens`` were written for one hour
    (Anthropic's ``cache_creation.ephemeral_1h_input_tokens``); the rest are 5-minute writes.

    Products billed by the unit, not by tokens, name their price in the catalog
    (`daemon.pricing.catalog`) with ``catalog_rate``, ``kind[:variant]``, and carry the quantity
    it prices: ``"tts"`` prices ``characters`` (text-to-speech input, in Unicode code points);
    ``"stt:rest"`` / ``"stt:streaming"`` and ``"realtime"`` price ``audio_seconds`` (the audio
    transcribed, or sent); ``"video:RESOLUTION"`` prices ``video_seconds`` (generated) by the
    record's model, plus ``video_image_inputs`` (input images) and ``video_input_seconds``
    (input video). With a rate set, token counts are informational and only the catalog prices
    the call (`daemon.pricing.cost.catalog_cost`); without one these quantities are 0.
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    image_input_tokens: int = 0
    images: int = 0
    sources: int = 0
    server_tool_calls: dict[str, int] = field(default_factory=dict)
    reported_cost_ticks: int | None = None
    catalog_rate: str | None = None
    characters: int = 0
    audio_seconds: float = 0.0
    video_seconds: float = 0.0
    video_image_inputs: int = 0
    video_input_seconds: float = 0.0

    def tool_call_count(self) -> int:
        """Server-side tool calls of every kind (the fetched-item counts are not calls)."""
        return sum(n for kind, n in self.server_tool_calls.items() if kind not in FETCH_COUNT_KINDS)

    @property
    def cache_read_input_tokens(self) -> int:
        """Anthropic's name for `cached_input_tokens`: prompt tokens read from the cache."""
        return self.cached_input_tokens


@dataclass(slots=True)
class CallRecord:
    """Everything known about one relayed call. See the module docstring for its stages."""

    id: str
    started_at: float  # wall clock, epoch seconds
    t0: float  # monotonic start, for durations
    provider: str
    endpoint: str
    method: str
    path: str
    stage: Stage = Stage.CREATED
    key_id: str | None = None
    app: str | None = None
    stream: bool = False
    deferred: bool = False
    usage_injected: bool = False  # the relay added stream_options.include_usage
    requested_model: str | None = None
    model: str | None = None
    status: int | None = None
    response_id: str | None = None
    request_id: str | None = None  # upstream x-request-id, when it sends one
    fingerprint: str | None = None
    service_tier: str | None = None
    previous_response_id: str | None = None
    linked_id: str | None = None  # deferred result: the id of the POST row that asked for it
    # deferred result: the request id it fetches, when the path does not end with it (gRPC:
    # it is in the request message); not a column
    deferred_request_id: str | None = None
    # a gRPC Batch API call (BatchMgmt/ListBatchResults, GetBatchRequestResult): the batch id
    # its request message names (REST has it in the path), for its derived result rows; not a
    # column
    batch_id: str | None = None
    deferred_state: DeferredState | None = None
    deferred_ms: float | None = None  # deferred result: from the POST to the result
    # deferred image or video poll: the job's status as the answer says it (done | pending |
    # failed | expired; None: a chat result, where a 200 is the result); not a column
    job_status: str | None = None
    key_info: dict[str, str | None] | None = None  # from GET /v1/api-key; not a calls column
    usage: Usage | None = None
    billable: bool = False  # this endpoint bills per call, so missing usage is "unmetered"
    sent: bool = False  # the request may have reached the upstream (it was not refused at connect)
    unmetered_reason: Unmetered | None = None
    error: CallError | None = None
    error_detail: str | None = None  # the relay's words: what failed, or at which stage
    upstream_error: str | None = None  # the upstream's own error code or type, from its body
    upstream_ms: float | None = None
    ttft_ms: float | None = None
    # From the upstream's response headers (metrics only, not columns; see
    # `daemon.upstream.read_response_headers`): x-ratelimit-{limit,remaining}-{requests,tokens}
    # as (limit_requests, remaining_requests, limit_tokens, remaining_tokens), and
    # x-metrics-ttft-ms, the upstream's own time to first token.
    ratelimit: tuple[float | None, float | None, float | None, float | None] | None = None
    upstream_ttft_ms: float | None = None
    duration_ms: float | None = None
    # the upstream's token price multiplier (set at routing; None: times 1), see daemon.pricing.cost
    price_multiplier: Fraction | None = None
    # images: the request's (quality, resolution), lower case, None for a half it left out
    image_tier: tuple[str | None, str | None] | None = None
    # text-to-speech: the request's text length in Unicode code points, billed once the audio
    # came (`daemon.dialects.voice`); not a column (the usage's ``characters`` is)
    text_characters: int | None = None
    # filled by pricing (a later stage of the meter)
    computed_cost_ticks: int | None = None
    cost_ticks: int | None = None
    cost_source: CostSource | None = None
    price_id: int | None = None
    transport: Transport = Transport.HTTP
    # Records read from this call's answer that are rows of their own (a Batch API results
    # page: one per result, endpoint "batches.result"; see daemon.dialects.batches): the meter
    # hands them to the sinks after this one, those never seen before only. Not a column.
    derived: list[CallRecord] | None = None
    # A video request (its POST row, and the poll that bills its result): what prices the
    # result, "KIND/RESOLUTION/IMAGES" (generations | edits | extensions; 480p | 720p | 1080p,
    # empty when the request names none; input images), e.g. "edits/720p/1". The deferred
    # tracker carries it from the POST to the result (daemon.dialects.videos). A column (m013).
    video_request: str | None = None

    def derive(self, started_at: float, t0: float, **fields: Any) -> CallRecord:
        """A new record (its own id) for another row of this call's context: the same provider,
        endpoint, method, path, status, transport, key, app, request id and price multiplier,
        started at ``started_at`` (epoch seconds; ``t0`` on the relay's clock); ``fields``
        override any of them or set others. Rows born inside one relayed call use it: a Batch
        API page's results, a WebSocket's turns and sessions."""
        base: dict[str, Any] = {
            "provider": self.provider,
            "endpoint": self.endpoint,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "transport": self.transport,
            "key_id": self.key_id,
            "app": self.app,
            "request_id": self.request_id,
            "price_multiplier": self.price_multiplier,
        }
        return CallRecord(
            id=new_call_id(started_at), started_at=started_at, t0=t0, **{**base, **fields}
        )

    @property
    def metered(self) -> bool:
        """True when the call's usage was read (or the endpoint carries none to read)."""
        return self.unmetered_reason is None

    def mark_unmetered(self, reason: Unmetered) -> None:
        """Say why the usage could not be read; the first reason wins (later ones follow it)."""
        if self.unmetered_reason is None:
            self.unmetered_reason = reason

    def fail(self, error: CallError, detail: str | None = None) -> None:
        """Record the first failure only: later ones are consequences of it. The detail says
        what failed, or else at which stage the call was (``at chunk``: mid-body)."""
        if self.error is None or self.error is CallError.HTTP_ERROR:
            self.error = error
            self.error_detail = detail or f"at {self.stage.name.lower()}"

    def as_row(self) -> dict[str, Any]:
        """The ledger row: one flat dict of plain values."""
        return dict(zip(ROW_COLUMNS, self.as_tuple(), strict=True))

    def as_tuple(self, instance: str | None = None) -> tuple[Any, ...]:
        """The ledger row's values in `ROW_COLUMNS` order (what the writer inserts);
        `instance`: the daemon that writes it (``ledger.instance``), the last column."""
        u = self.usage
        if u is None:
            usage: tuple[Any, ...] = _NO_USAGE
        else:
            usage = (
                u.input_tokens,
                u.cached_input_tokens,
                u.cache_creation_input_tokens,
                u.output_tokens,
                u.reasoning_tokens,
                u.image_input_tokens,
                u.images,
                u.sources,
                u.tool_call_count() if u.server_tool_calls else 0,
                u.reported_cost_ticks,
            )
        error, unmetered = self.error, self.unmetered_reason
        return (
            self.id,
            self.started_at,
            self.provider,
            self.endpoint,
            self.method,
            self.path,
            self.status,
            int(self.stream),
            int(self.deferred),
            self.requested_model,
            self.model,
            *usage,
            self.computed_cost_ticks,
            self.cost_ticks,
            self.cost_source.value if self.cost_source else None,
            self.price_id,
            self.fingerprint,
            self.service_tier,
            self.response_id,
            self.request_id,
            _ms(self.duration_ms),
            _ms(self.upstream_ms),
            _ms(self.ttft_ms),
            error.value if error else None,
            self.error_detail,
            self.key_id,
            self.app,
            int(unmetered is None),
            unmetered.value if unmetered else None,
            self.previous_response_id,
            self.linked_id,
            self.deferred_state.value if self.deferred_state else None,
            _ms(self.deferred_ms),
            orjson.dumps(u.server_tool_calls).decode() if u and u.server_tool_calls else None,
            self.upstream_error,
            None if self.price_multiplier is None else float(self.price_multiplier),
            None if self.image_tier is None else "/".join(t or "" for t in self.image_tier),
            u.cache_creation_1h_input_tokens if u else None,
            self.transport.value,
            *(_NO_UNITS if u is None or u.catalog_rate is None else _units(u)),
            self.video_request,
            instance,
        )


# The ledger's `calls` columns, in the order `as_tuple` gives their values.
ROW_COLUMNS = (
    "id",
    "started_at",
    "provider",
    "endpoint",
    "method",
    "path",
    "status",
    "stream",
    "deferred",
    "requested_model",
    "model",
    "input_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "image_input_tokens",
    "images",
    "sources",
    "server_tool_calls",
    "reported_cost_ticks",
    "computed_cost_ticks",
    "cost_ticks",
    "cost_source",
    "price_id",
    "fingerprint",
    "service_tier",
    "response_id",
    "request_id",
    "duration_ms",
    "upstream_ms",
    "ttft_ms",
    "error",
    "error_detail",
    "key_id",
    "app",
    "metered",
    "unmetered_reason",
    "previous_response_id",
    "linked_id",
    "deferred_state",
    "deferred_ms",
    "tool_calls",
    "upstream_error",
    "price_multiplier",
    "image_tier",
    "cache_creation_1h_input_tokens",
    "transport",
    "catalog_rate",
    "characters",
    "audio_seconds",
    "video_seconds",
    "video_image_inputs",
    "video_input_seconds",
    "video_request",
    "instance",
)
_NO_USAGE = (None,) * 10
_NO_UNITS = (None,) * 6


def _units(u: Usage) -> tuple[Any, ...]:
    """The catalog-priced columns of a usage with a ``catalog_rate``; a zero quantity is NULL
    (rows name only their non-NULL columns, `daemon.ledger.store.insert_calls`)."""
    return (
        u.catalog_rate,
        u.characters or None,
        u.audio_seconds or None,
        u.video_seconds or None,
        u.video_image_inputs or None,
        u.video_input_seconds or None,
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
