"""The tap contract: what a dialect is, what its tap is, and the rules every dialect shares.

A `Dialect` inspects the request body (model, stream flags) and makes a `Tap` for the response.
A tap is fed every body chunk at any boundary and never alters the bytes it is given, except a
tap whose `filters` is true: it returns the bytes to forward instead (used only to remove the
usage chunk that the relay itself asked for). `finish()` is called once when the body ends, and
writes the normalized usage, model, fingerprint and ids into the record. A tap keeps at most
`Tap.max_scan_bytes` (the setting ``relay.max_scan_bytes``) of one SSE event or one whole body
to read; what passes it is relayed unread, so memory per call stays bounded whatever it sends.

The two tap shapes live next door: `daemon.dialects.body.BodyTap` (a whole JSON body) and
`daemon.dialects.sse.EventTap` (a stream of server-sent events).

Shared rules, in one place so every dialect applies them the same way:

- The setter policy for the fields several dialects fill, one helper per kind of field:
  `note_model_and_id` for what names the answer (the resolved `model`, the upstream's
  `response_id`): the first non-empty value wins; `note_served` for what reports how it was
  served (`fingerprint`, `service_tier`): the last non-empty value wins. A value that is not a
  non-empty string is no value, and never erases one.
- `read_error`: an error answer keeps its code, never its message.
- `is_ok`: only a 2xx answer makes missing usage a metering failure; `unread_usage` says why a
  billable call ended without it (the HTTP relay's and the socket relay's one net).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import structlog

from daemon.dialects.coerce import loads_object, opt_str
from daemon.keys import KNOWN_KEYS
from daemon.record import CallError, CallRecord, Stage, Unmetered

log = structlog.get_logger("xai_meter.dialects")
Clock = Callable[[], float]
# The setting ``relay.max_scan_bytes``'s default: the most bytes of one SSE event or one whole
# answer body a tap keeps to read usage from; larger ones are relayed unread (``too_large``).
MAX_SCAN_BYTES = 16 * 1024 * 1024


class Tap:
    """Observes a response body. The base class observes nothing (endpoints without usage)."""

    filters = False
    # Filters only: it forwards decoded bytes (the upstream compressed the body), so the
    # relay drops Content-Encoding and, once the tap broke, sends `passthrough(chunk)`.
    decodes = False
    # The most bytes of one SSE event or one whole body kept to be read (the relay sets it from
    # ``relay.max_scan_bytes``): past it they are relayed, unread, and the call may be
    # unmetered ``too_large`` (`daemon.dialects.sse`, `daemon.dialects.body`).
    max_scan_bytes = MAX_SCAN_BYTES

    def __init__(self, record: CallRecord, clock: Clock) -> None:
        self.record = record
        self.clock = clock
        self.broken = False  # it raised once: the relay feeds it no more
        # (an instance copy: CPython 3.11 finds a class attribute slowly through an instance)
        self.max_scan_bytes = MAX_SCAN_BYTES

    def feed(self, chunk: bytes) -> bytes | None:
        """Take one chunk; return None to forward it as-is, or (filters only) what to forward."""
        return None

    def abandon(self) -> bytes | None:
        """The tap failed: return any bytes it holds back so the relay can still forward them."""
        return None

    def passthrough(self, chunk: bytes) -> bytes:
        """What the client gets for a chunk once the tap broke (only asked when `decodes`)."""
        return chunk

    def finish(self, complete: bool) -> bytes | None:
        """The body ended (``complete`` false when cut short); return held bytes, if any."""
        return None

    def finish_quietly(self, complete: bool) -> bytes | None:
        """`finish`, for the relay: a tap that raises marks the call unmetered, nothing more."""
        if self.broken:
            return None
        self.broken = True  # finish runs once
        try:
            return self.finish(complete)
        except Exception:
            log.exception("tap_finish_failed", call_id=self.record.id)
            self.record.mark_unmetered(Unmetered.PARSER_ERROR)
            return None

    def mark_first_token(self) -> None:
        """Set ``ttft_ms`` (milliseconds from the call's start) unless it is set already."""
        if self.record.ttft_ms is None:
            self.record.ttft_ms = (self.clock() - self.record.t0) * 1000.0


class Dialect:
    """Knows one endpoint's request and response shapes. The base class knows none."""

    def __init__(self, endpoint: str, billable: bool = False) -> None:
        self.endpoint = endpoint
        self.billable = billable

    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        """Read what the request says (model, stream); return a replacement body or None."""
        return None

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        """The tap for this response; `encoding` is its Content-Encoding (already checked)."""
        return Tap(record, clock)


def note_model_and_id(record: CallRecord, model: Any, response_id: Any = None) -> None:
    """Fill ``record.model`` and ``record.response_id`` from raw JSON values: the first
    non-empty value wins, and a value that is not a non-empty string is no value.

    Why first: in every dialect the first object that names them is the authoritative one and
    later ones repeat it (chat chunks repeat ``model`` and ``id`` on every chunk; a Responses
    stream repeats its ``response`` object from ``response.created`` to the terminal event; a
    Messages stream names them once, in ``message_start``, never in ``message_delta``; an images
    answer names no model at all, so the requested one prices it). Keeping the first also means a
    later event that omits or garbles them can never erase them (xai-api.md).
    """
    if record.model is None:
        record.model = opt_str(model)
    if record.response_id is None:
        record.response_id = opt_str(response_id)


def read_json_request(record: CallRecord, body: bytes) -> dict[str, Any] | None:
    """The request body of a billable call as a JSON object, with ``requested_model`` and
    ``stream`` noted on the record; None for a call that is not billable or not JSON."""
    obj = loads_object(body) if record.billable else None
    if obj is not None:
        record.requested_model = opt_str(obj.get("model"))
        record.stream = obj.get("stream") is True
    return obj


def note_served(record: CallRecord, fingerprint: Any, service_tier: Any) -> None:
    """Fill ``record.fingerprint`` and ``record.service_tier`` from raw JSON values: the last
    non-empty value wins.

    Why last: these report how the answer was served, and the final object (a body, or a
    stream's terminal event) is the upstream's closing word on it; events before it repeat the
    same values or lack them (xai-api.md, "Chat completions", "Responses").
    """
    fingerprint = opt_str(fingerprint)
    if fingerprint:
        record.fingerprint = fingerprint
    service_tier = opt_str(service_tier)
    if service_tier:
        record.service_tier = service_tier


def read_error(record: CallRecord, obj: dict[str, Any]) -> None:
    """Keep the upstream's error code (not its message, which may quote part of a key).

    Shapes: xAI's ``{"code": str, "error": str}``; OpenAI's and Anthropic's
    ``{"error": {"type"|"code": str, "message": str}}``. Sets ``upstream_error`` (<= 120 chars);
    ``error_detail`` stays the relay's own words.
    """
    code = obj.get("code")
    if not isinstance(code, str):
        error = obj.get("error")
        code = error.get("type") or error.get("code") if isinstance(error, dict) else None
    record.upstream_error = opt_str(code, 120)


def is_ok(record: CallRecord) -> bool:
    """The upstream answered 2xx: only then is missing usage a metering failure."""
    return record.status is not None and 200 <= record.status < 300


def unread_usage(record: CallRecord) -> None:
    """A billable call ends without usage and without a reason yet: say why, whatever ended it.

    Not sent (refused at connect, or the client left before its body was read): nothing to
    meter. Ended before the response headers: ``no_response``. A 2xx cut short (client gone,
    upstream timeout or cut, shutdown): ``incomplete``; a 2xx that ended cleanly but carried
    none: ``no_usage``. Error answers (4xx/5xx from the upstream) carry no charge: metered.
    The taps give their own reasons first (``malformed``, ``parser_error``...); this is the net.
    """
    if not record.sent:
        return
    if record.stage < Stage.RESPONSE_HEADERS:
        record.mark_unmetered(Unmetered.NO_RESPONSE)
    elif is_ok(record):
        ended = record.error is None or record.error is CallError.HTTP_ERROR
        record.mark_unmetered(Unmetered.NO_USAGE if ended else Unmetered.INCOMPLETE)


#: Usage numbers the ledger can store: a signed 64-bit integer (SQLite's INTEGER) at most.
USAGE_MAX = 2**63 - 1
_USAGE_FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation_1h_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "image_input_tokens",
    "images",
    "sources",
    "characters",
    "video_image_inputs",
)
_USAGE_NUMBERS = operator.attrgetter(*_USAGE_FIELDS)


def usage_in_range(record: CallRecord) -> None:
    """A usage number no ledger can store (past `USAGE_MAX`; 2**64 in JSON even reads as a
    float) means usage that cannot be trusted: the call is not metered (``out_of_range``),
    its usage is dropped (nothing priced or counted from it), and the numbers are kept as
    text in ``error_detail``."""
    u = record.usage
    if u is None:
        return
    if (
        max(_USAGE_NUMBERS(u)) <= USAGE_MAX
        and (u.reported_cost_ticks or 0) <= USAGE_MAX
        and (not u.server_tool_calls or max(u.server_tool_calls.values()) <= USAGE_MAX)
    ):
        return  # the usual case: no tuple built
    numbers = (*_USAGE_NUMBERS(u), *u.server_tool_calls.values(), u.reported_cost_ticks or 0)
    names = (*_USAGE_FIELDS, *u.server_tool_calls, "reported_cost_ticks")
    bad = ", ".join(f"{n}={v!r}" for n, v in zip(names, numbers, strict=True) if v > USAGE_MAX)
    record.usage = None
    record.unmetered_reason = Unmetered.OUT_OF_RANGE  # before any softer reason a tap gave
    detail = f"usage out of range: {bad}"
    record.error_detail = f"{record.error_detail}; {detail}" if record.error_detail else detail


def end_call(record: CallRecord, now: float) -> None:
    """Close a relayed call (HTTP, gRPC, or one row of a WebSocket) before the meter takes it:
    its duration (``now``, in the clock ``record.t0`` came from, seconds), usage the ledger
    cannot hold (`usage_in_range`), why a billable call has no usage (`unread_usage`),
    ``http_error`` for a 4xx/5xx answer that ended cleanly, and its final stage (``finished``
    or ``failed``); every key it knows is masked in the record's text
    (`daemon.keys.KnownKeys.scrub_record`)."""
    record.duration_ms = (now - record.t0) * 1000.0
    if record.usage is not None:
        usage_in_range(record)
    if record.billable and record.usage is None and record.unmetered_reason is None:
        unread_usage(record)
    if record.error is None and record.status is not None and record.status >= 400:
        record.error = CallError.HTTP_ERROR
    record.stage = Stage.FINISHED if record.error in (None, CallError.HTTP_ERROR) else Stage.FAILED
    KNOWN_KEYS.scrub_record(record)
