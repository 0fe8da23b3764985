"""Dialect parsers: one small module per API dialect, each an incremental tap on the response.

A `Dialect` inspects the request body (model, stream flags) and makes a `Tap` for the response.
A tap is fed every body chunk at any boundary and never alters the bytes it is given, except a
tap whose `filters` is true: it returns the bytes to forward instead (used only to remove the
usage chunk that the relay itself asked for). `finish()` is called once when the body ends, and
writes the normalized usage, model, fingerprint and ids into the record.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from typing import Any

import brotli
import orjson
import structlog
import zstandard

from daemon.record import CallRecord, Unmetered

log = structlog.get_logger("xai_meter.dialects")
Clock = Callable[[], float]

MAX_BODY_BYTES = 64 * 1024 * 1024  # bodies kept for parsing; larger ones are relayed unmetered


class Tap:
    """Observes a response body. The base class observes nothing (endpoints without usage)."""

    filters = False

    def __init__(self, record: CallRecord, clock: Clock) -> None:
        self.record = record
        self.clock = clock
        self.broken = False  # it raised once: the relay feeds it no more

    def feed(self, chunk: bytes) -> bytes | None:
        """Take one chunk; return None to forward it as-is, or (filters only) what to forward."""
        return None

    def abandon(self) -> bytes | None:
        """The tap failed: return any bytes it holds back so the relay can still forward them."""
        return None

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


# --- shared pieces for the dialect modules -------------------------------------------------


def loads_object(data: bytes) -> dict[str, Any] | None:
    """Parse JSON; None unless it is an object."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def as_int(value: Any) -> int:
    """A token count from JSON: ints (and integral floats) only, never negative; else 0."""
    if type(value) is int:  # the usual case first: this runs several times per call
        return value if value > 0 else 0
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 0)
    return 0


def opt_int(value: Any) -> int | None:
    if type(value) is int:
        return value
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def sub(obj: Any, key: str) -> dict[str, Any]:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def opt_str(value: Any, limit: int = 200) -> str | None:
    if type(value) is str and value:
        return value if len(value) <= limit else value[:limit]
    return None


# SSE: an event ends at a blank line; lines end in \n, \r\n (or, rarely, \r).
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\n\n|\n\r\n|\r\r")


def _end_of_last_event(buf: bytearray) -> int:
    """Where the last complete event in `buf` ends (0: none ends there)."""
    lf = buf.rfind(b"\n\n")
    crlf = buf.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def sse_data(event: bytes) -> bytes:
    """The data of one raw SSE event: its ``data:`` lines joined by newlines."""
    parts = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts)


class Decoder:
    """Undoes the upstream's Content-Encoding for the parser only; the client gets raw bytes."""

    def __init__(self, encoding: str) -> None:
        self._obj: Any = _decompressor(encoding)

    def __call__(self, data: bytes) -> bytes:
        if self._obj is None:
            return data
        out: bytes = self._obj.decompress(data)
        return out


def _decompressor(encoding: str) -> Any:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS + 32)  # zlib or gzip header, auto-detected
    if encoding == "br":
        return _BrotliReader()
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj()
    raise ValueError(f"unsupported content-encoding {encoding!r}")


class _BrotliReader:
    """brotli's Decompressor behind the `decompress(data)` interface zlib's objects have."""

    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        out: bytes = self._d.process(data)
        return out


# Every coding an SDK may accept (httpx asks for br and zstd when it can decode them), so the
# meter can read whatever the upstream sends; the client still gets the bytes as sent.
DECODABLE = frozenset({"gzip", "x-gzip", "deflate", "identity", "br", "zstd"})


class BodyTap(Tap):
    """Keeps a (non-streamed) body to parse once it is complete; subclasses parse it."""

    def __init__(self, record: CallRecord, clock: Clock, encoding: str = "") -> None:
        self.record = record  # (Tap.__init__ inlined: one tap per call)
        self.clock = clock
        self.broken = False
        self._parts: list[bytes] = []
        self._size = 0
        self._encoding = encoding

    def feed(self, chunk: bytes) -> bytes | None:
        self._size += len(chunk)
        if self._size <= MAX_BODY_BYTES:
            self._parts.append(chunk)
        elif self._parts:
            self._parts = []
            self.record.mark_unmetered(Unmetered.TOO_LARGE)
        return None

    def finish(self, complete: bool) -> bytes | None:
        if self.record.unmetered_reason is not None:
            return None
        if not complete:
            if self.record.billable and is_ok(self.record):
                self.record.mark_unmetered(Unmetered.INCOMPLETE)
            return None
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = []
        try:
            body = Decoder(self._encoding)(body) if self._encoding else body
        except (ValueError, zlib.error):
            self.record.mark_unmetered(Unmetered.ENCODING)
            return None
        self.parse(body)
        if self.record.usage is None and self.record.billable and is_ok(self.record):
            self.record.mark_unmetered(Unmetered.NO_USAGE)  # (unless a reason is set already)
        return None

    def parse(self, body: bytes) -> None:
        """Read the whole body into the record; a billable 2xx left without usage is then
        counted as unmetered by `finish`."""
        raise NotImplementedError

    def success_object(self, body: bytes) -> dict[str, Any] | None:
        """The body's JSON object when the upstream answered 2xx; None otherwise (a body that
        is not JSON is unmetered; an error's code is kept)."""
        record = self.record
        obj = loads_object(body)
        if obj is None:
            if is_ok(record) and record.billable:
                record.mark_unmetered(Unmetered.MALFORMED)
            return None
        if not is_ok(record):
            read_error(record, obj)
            return None
        return obj


class EventTap(Tap):
    """Splits an SSE body into events at any chunk boundary; subclasses read the events.

    In filter mode, `keep(event)` decides per complete event whether the client gets it, and
    a partial event is held until its end arrives.
    """

    def __init__(
        self, record: CallRecord, clock: Clock, encoding: str = "", filtering: bool = False
    ) -> None:
        super().__init__(record, clock)
        self._buf = bytearray()
        self._scan_from = 0
        self._decode = Decoder(encoding) if encoding else None
        self.filters = filtering and not encoding  # never filter bytes we cannot re-encode
        self.malformed = False  # an event that should have been JSON was not
        self._seen_first = False

    def feed(self, chunk: bytes) -> bytes | None:
        data = self._decode(chunk) if self._decode else chunk
        buf = self._buf  # holds only bytes of events not yet read: the current partial one
        buf += data
        if not self.filters:
            needles = self.quiet_needles()
            if needles is not None and not any(n in buf for n in needles):
                # Nothing here can matter: skip whole events without splitting them.
                cut = _end_of_last_event(buf)
                if cut:
                    del buf[:cut]
                self._scan_from = max(len(buf) - 3, 0)
                return None
        start = 0
        kept: list[bytes] = []
        while True:
            m = _EVENT_END.search(buf, max(self._scan_from, start))
            if m is None:
                break
            event = bytes(buf[start : m.end()])
            start = m.end()
            if self.on_event(event) or not self.filters:
                kept.append(event)
        if start:
            del buf[:start]
        self._scan_from = max(len(buf) - 3, 0)
        if self.filters:
            return b"".join(kept)
        return None

    def abandon(self) -> bytes | None:
        return bytes(self._buf) if self.filters else None

    def finish(self, complete: bool) -> bytes | None:
        rest = bytes(self._buf)
        self._buf.clear()
        keep = self.on_event(rest) if rest.strip() else True  # a last event without its blank line
        self.end_of_stream(complete)
        return rest if self.filters and keep else None

    # An event holding generated text (its arrival is the time to first token).
    first_token: re.Pattern[bytes] | None = None
    # Once the first event is read and the first token seen, only events holding one of these
    # byte strings are read (usage, errors); the rest are skipped without being split.
    needles: tuple[bytes, ...] = ()

    def on_event(self, event: bytes) -> bool:
        """Read one raw event; return False to drop it from the client's stream (filters only).
        Parses the first event, and after it only the events `needles` point at."""
        data = sse_data(event)
        if not data or data == b"[DONE]":
            return True
        if (
            self.record.ttft_ms is None
            and self.first_token is not None
            and self.first_token.search(data)
        ):
            self.mark_first_token()
        if self._seen_first and not any(n in data for n in self.needles):
            return True
        obj = loads_object(data)
        if obj is None:
            self.malformed = True
            return True
        self._seen_first = True
        return self.read(obj)

    def read(self, obj: dict[str, Any]) -> bool:
        """One parsed event; return False to drop it from the client's stream (filters only)."""
        return True

    def quiet_needles(self) -> tuple[bytes, ...] | None:
        """`needles`, once nothing but the events they point at can matter; else None."""
        if self._seen_first and self.record.ttft_ms is not None:
            return self.needles
        return None

    def end_of_stream(self, complete: bool) -> None:
        """All events were read: missing usage on a billable 2xx is unmetered, saying why."""
        record = self.record
        if record.usage is None and record.billable and is_ok(record):
            if not complete:
                record.mark_unmetered(Unmetered.INCOMPLETE)
            elif self.malformed:
                record.mark_unmetered(Unmetered.MALFORMED)
            else:
                record.mark_unmetered(Unmetered.NO_USAGE)


def read_error(record: CallRecord, obj: dict[str, Any]) -> None:
    """Keep the upstream's error code (not its message, which may quote part of a key)."""
    code = obj.get("code")
    if not isinstance(code, str):
        error = obj.get("error")
        code = error.get("type") or error.get("code") if isinstance(error, dict) else None
    record.error_detail = opt_str(code, 120)


def is_ok(record: CallRecord) -> bool:
    """The upstream answered 2xx: only then is missing usage a metering failure."""
    return record.status is not None and 200 <= record.status < 300
