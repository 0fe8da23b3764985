r"""Server-sent events: the one definition of where an event ends, and the tap that reads them.

The rule (WHATWG HTML, "Server-sent events", interpreting an event stream): a line ends in CRLF,
LF or CR, and an event ends at a blank line, that is, at a line ending followed by another one.
A stream may mix them and split anywhere (xai-api.md: "Event boundaries may be LF, CRLF or CR
pairs, mixed, split anywhere"). `_EVENT_END` matches these pairs of line endings:

    LF LF      \n\n           CRLF CRLF  \r\n\r\n
    LF CRLF    \n\r\n         CRLF LF    \r\n\n
    CR CR      \r\r           CR CRLF    \r\r\n (found as \r\r; its \n opens the next event)

Not matched: a blank line ended by a lone CR after an LF or CRLF line (``\n\r`` or ``\r\n\r``
followed by anything but ``\n``): no upstream is known to send it, and at a chunk's end it
cannot be told from the start of ``\n\r\n`` or ``\r\n\r\n``. Such an event joins the next one.
`_end_of_last_event`, the cheap search used while skipping events, knows only LF LF and
CRLF CRLF: an event it misses stays buffered until the full scan reads it.

An event's data is its ``data:`` lines, one leading space dropped, joined by LF (`sse_data`).
"""

from __future__ import annotations

import re
from typing import Any

from daemon.dialects.base import Clock, Tap, is_ok
from daemon.dialects.coerce import loads_object
from daemon.dialects.encoding import Decoder
from daemon.record import CallRecord, Unmetered

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


class EventTap(Tap):
    """Splits an SSE body into events at any chunk boundary; subclasses read the events.

    In filter mode, `on_event` (through `read`) decides per complete event whether the client
    gets it, and a partial event is held until its end arrives.
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
        # The usage read is the stream's final count: set by the dialect when the event that
        # closes the count arrives. Until then any usage seen is provisional (xai-api.md: a
        # stream whose final usage never came is unmetered, not zero).
        self.usage_final = False

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
            if data:
                self.on_done()
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

    def on_done(self) -> None:
        """The ``data: [DONE]`` marker arrived (seen only if a needle names it)."""

    def quiet_needles(self) -> tuple[bytes, ...] | None:
        """`needles`, once nothing but the events they point at can matter; else None."""
        if self._seen_first and self.record.ttft_ms is not None:
            return self.needles
        return None

    def end_of_stream(self, complete: bool) -> None:
        """All events were read: missing usage on a billable 2xx is unmetered, saying why.

        Usage read but never confirmed final (`usage_final`) is provisional, a lower bound: it
        is dropped, never booked, and the call is unmetered as ``incomplete``."""
        record = self.record
        if record.usage is not None and not self.usage_final:
            record.usage = None
            if record.billable and is_ok(record):
                record.mark_unmetered(Unmetered.INCOMPLETE)
        if record.usage is None and record.billable and is_ok(record):
            if not complete:
                record.mark_unmetered(Unmetered.INCOMPLETE)
            elif self.malformed:
                record.mark_unmetered(Unmetered.MALFORMED)
            else:
                record.mark_unmetered(Unmetered.NO_USAGE)
