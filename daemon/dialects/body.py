"""A tap for a whole (non-streamed) JSON body: kept while it arrives, parsed once it is complete.

A body over the cap (`Tap.max_scan_bytes`, the setting ``relay.max_scan_bytes``), as sent or
once decoded, is relayed in full but neither kept past the cap nor parsed: a 2xx is unmetered
(``too_large``). A body cut short, or a billable 2xx left without usage, is unmetered too, and
says why (`daemon.record.Unmetered`).
"""

from __future__ import annotations

import zlib
from typing import Any

from daemon.dialects.base import MAX_SCAN_BYTES, Clock, Tap, is_ok, read_error
from daemon.dialects.coerce import loads_object
from daemon.dialects.encoding import Decoder
from daemon.record import CallRecord, Unmetered


class BodyTap(Tap):
    """Keeps a (non-streamed) body to parse once it is complete; subclasses parse it."""

    def __init__(self, record: CallRecord, clock: Clock, encoding: str = "") -> None:
        self.record = record  # (Tap.__init__ inlined: one tap per call)
        self.clock = clock
        self.broken = False
        self.max_scan_bytes = MAX_SCAN_BYTES
        self._parts: list[bytes] = []
        self._size = 0
        self._encoding = encoding

    def feed(self, chunk: bytes) -> bytes | None:
        self._size += len(chunk)
        if self._size <= self.max_scan_bytes:
            self._parts.append(chunk)
        elif self._parts:
            self._parts = []  # over the cap: nothing more is kept, and what was kept goes
        return None

    def finish(self, complete: bool) -> bytes | None:
        if self.record.unmetered_reason is not None:
            return None
        if self._size > self.max_scan_bytes:
            self._too_large()
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
        if len(body) > self.max_scan_bytes:  # (it grew when decoded)
            self._too_large()
            return None
        self.parse(body)
        if self.record.usage is None and self.record.billable and is_ok(self.record):
            self.record.mark_unmetered(Unmetered.NO_USAGE)  # (unless a reason is set already)
        return None

    def _too_large(self) -> None:
        """The body is over the cap, unread: a 2xx may have carried usage (or results), so it
        is unmetered ``too_large``; an error answer's code goes unread, nothing more."""
        if is_ok(self.record):
            self.record.mark_unmetered(Unmetered.TOO_LARGE)

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
