r"""Server-sent events: the one definition of where an event ends, and the tap that reads them.

The rule (WHATWG HTML, "Server-sent events", interpreting an event stream): a line ends in CRLF,
LF or CR, and an event ends at a blank line, that is, at a line ending followed directly by
another one. A stream may mix them per line and split anywhere, even between the CR and the LF
of one CRLF (xai-api.md, "Chat completions": "Event boundaries may be LF, CRLF or CR pairs,
mixed, split anywhere"). `EVENT_END` is that rule as one pattern, used by every tap:

    a line ending, taken whole (CRLF before CR: atomic, so ``\r\n`` is never two endings),
    then another one: \n\n  \r\n\r\n  \n\r\n  \r\n\n  \r\r  \r\r\n  \n\r  \r\n\r  ...

A match that ends with a CR at the end of the bytes read so far may be the first half of a
CRLF: the event is read at once (no waiting on the next chunk), and an LF that starts the next
chunk is taken as the rest of that ending (`EventTap._after_cr`).

Cost: each byte is searched once by `EVENT_END` (a search resumes where the last one stopped,
less at most 3 bytes that could start an ending; bytes without a CR are searched for LF LF with
`find`, several times faster than the pattern); events are cut out of the buffer in place, and
one that `needles` says cannot matter is skipped without being copied or decoded. Once only
`needles` can matter (the first event read, the first token seen: `quiet_needles`), the tap
splits no event that holds none: it finds the needles in the new bytes (one `find` each), and
takes every event that ends before the first needle out of the buffer in one search, as one
slice (a filtering tap forwards it; only the unfinished last event is held, as it may be the
usage chunk to strip, which is then cut out by slicing). A reading tap holds needle-less bytes
unsplit until a needle comes, the buffer passes `_QUIET_HOLD`, or the stream ends. A dialect may
let events holding a needle wait and read only the last of a run (`EventTap._defers`: chat's
usage on every chunk), or take a whole run of them in one go, unsplit (`EventTap._take_run`:
chat's null or cumulative usage on every chunk, in a burst). Everything a quiet tap forwards
or books is what reading every event in turn gives (tests/dialects/test_quiet_path.py,
test_null_runs_adversarial.py); a burst of 100 events costs a filtering tap a few searches and
one decode or two, not 100 events' worth of Python.

Events over the cap (`Tap.max_scan_bytes`, the setting ``relay.max_scan_bytes``) are never
read: reading one would hold it whole and parse it (several times its size in memory, and the
event loop stalled while it parses). Once the unfinished event passes the cap, the tap keeps
none of it but its last few bytes (`_NEEDLE_OVERLAP`), looks in each new chunk only for the
event's end and for a needle, and reads on from the next event; a filtering tap forwards its
bytes as they come. So a huge event costs the tap at most the cap plus one chunk (a filtering
tap: twice that, while it forwards what it held), and its bytes are searched once (but for the
few kept at each chunk's edge). An event over the cap that names a needle could have carried
usage: it is unread, any usage read before it is dropped (it may be stale), and unless a later
event brings the usage again the call is unmetered ``too_large`` (`EventTap.too_large_event`).
One that names no needle cannot matter, and is skipped like any other. Whether an event is
over the cap depends on its size only, never on how the chunks cut it.

An event's data is its ``data:`` lines, one leading space dropped, joined by LF (`sse_data`).

Why it is long: the event-boundary rule, the scan cap and the quiet path share one buffer and one
search position, so they live in one class; split up, each would re-derive the others' state.
"""

from __future__ import annotations

import re
from typing import Any

from daemon.dialects.base import Clock, Tap, is_ok
from daemon.dialects.coerce import loads_object
from daemon.dialects.encoding import Decoder
from daemon.record import CallRecord, Unmetered

# A line ending (CRLF, a CR not followed by LF, or LF: a CRLF is never read as two endings),
# then another. Written without an atomic group, which halves the search's cost in CPython.
EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
# The same rule, matching up to the end of the last event before a limit, in one search (the
# greedy prefix backs off from the limit: only bytes after that event's end are read twice). It
# may start its match inside a CRLF or take a further blank line into the event: both end
# where EVENT_END would, or at a blank line after it.
_LAST_EVENT_END = re.compile(rb"(?s:.*)(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
_LONGEST_PARTIAL = 3  # bytes of an unfinished EVENT_END match (it is at most 4 long)
_NEEDLE_OVERLAP = 31  # bytes before a chunk that a needle split by it may start in (needles are
# shorter than 32 bytes)
_QUIET_HOLD = 64 * 1024  # a quiet tap splits (and drops) what it holds beyond this many bytes
_AFTER_CR, _SKIPPING = 1, 2  # EventTap._mode (else False: a bool is the fastest to test)


def _resume_at(buf: bytearray, end: int) -> int:
    """Where a search for EVENT_END resumes when ``buf[:end]`` held no complete match: the
    bytes an unfinished match may start in, never between the CR and LF of one CRLF."""
    scan = max(end - _LONGEST_PARTIAL, 0)
    if scan and buf[scan] == 10 and buf[scan - 1] == 13:
        scan -= 1
    return scan


def _take(buf: bytearray, start: int, end: int) -> bytes:
    """``bytes(buf[start:end])`` in one copy, not two (a bytearray slice is a copy itself)."""
    with memoryview(buf) as view:
        return bytes(view[start:end])


def _paired(buf: bytearray, cut: int) -> int:
    """Where the last event before `cut` ends as `EVENT_END` splits the stream, `cut` being
    the end of a `_LAST_EVENT_END` match (a run of line endings ends there). Searching on from
    an event's start, `EVENT_END` pairs a run's endings from its first one: events end after
    the 2nd, the 4th...; an odd last ending opens the next event, as a blank line of its own.
    So a stripped event is the very bytes that splitting it one event at a time would strip."""
    start = cut
    while start and buf[start - 1] in b"\r\n":
        start -= 1
    if cut - start == 2 and buf[start] == 10:  # the usual run, LF LF: two endings
        return cut
    count, i, step = 0, start, 0
    while i < cut:
        step = 2 if buf[i] == 13 and i + 1 < cut and buf[i + 1] == 10 else 1
        count += 1
        i += step
    return cut - step if count % 2 else cut


def lf_events_end(buf: bytearray, start: int, limit: int) -> int:
    """Where the last event that ends before `limit` ends, ``buf[start:limit]`` holding LF
    endings only, `start` an event's start: as `EVENT_END` splits the stream (a run of three
    LFs ends an event after its second: `_paired`); 0 if none ends there."""
    cut = buf.rfind(b"\n\n", start, limit) + 2
    return _paired(buf, cut) if cut >= 2 else 0


def split_events(data: bytes) -> list[bytes]:
    """A whole SSE body as its raw events (each with its ending; a last unended one too).
    For tests and tools; the taps split incrementally with the same `EVENT_END`."""
    events, start = [], 0
    for m in EVENT_END.finditer(data):
        events.append(data[start : m.end()])
        start = m.end()
    if start < len(data):
        events.append(data[start:])
    return events


def sse_data(event: bytes) -> bytes:
    """The data of one raw SSE event: its ``data:`` lines joined by newlines."""
    if event.startswith(b"data:"):
        # The usual event, one data line and its ending: no split, one slice.
        end = len(event)
        while end and event[end - 1] in b"\r\n":
            end -= 1
        if event.find(b"\n", 5, end) < 0 and event.find(b"\r", 5, end) < 0:
            return event[6:end] if event[5:6] == b" " else event[5:end]
    parts = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts)


class EventTap(Tap):
    """Splits an SSE body into events at any chunk boundary; subclasses read the events.

    In filter mode, `on_event` (through `read`) decides per complete event whether the client
    gets it, and a partial event is held until its end arrives (or until it passes the cap:
    then its bytes go to the client as they come). A filtering tap on a compressed body
    (`decodes`) forwards the decoded bytes: the relay drops Content-Encoding for it.
    """

    def __init__(
        self, record: CallRecord, clock: Clock, encoding: str = "", filtering: bool = False
    ) -> None:
        super().__init__(record, clock)
        self._buf = bytearray()  # bytes of the event not yet complete (after `feed`)
        self._scan_from = 0  # where in `_buf` the next EVENT_END search starts
        # _AFTER_CR: the last event ended with a CR at the end of a chunk; _SKIPPING: inside an
        # event over the cap (`_buf` holds only its last few bytes, already searched); False:
        # neither (every feed tests it)
        self._mode: int = False
        self._skip_hit = False  # the event being skipped names a needle
        self._last_kept = True  # filters: whether the client got the last event
        self._hit_at = -1  # quiet: where in `_buf` a needle was last seen (-1: none held)
        self._decode = Decoder(encoding) if encoding else None
        self.filters = filtering
        self.decodes = filtering and self._decode is not None
        self.malformed = False  # an event that should have been JSON was not
        self.too_large = False  # an event over the cap that could carry usage went unread
        self._seen_first = False
        # The usage read is the stream's final count: set by the dialect when the event that
        # closes the count arrives. Until then any usage seen is provisional (xai-api.md: a
        # stream whose final usage never came is unmetered, not zero).
        self.usage_final = False

    _unsent = b""  # filters: bytes of a failed feed's chunk that `abandon` still owes

    def feed(self, chunk: bytes) -> bytes | None:
        data = self._decode(chunk) if self._decode else chunk
        filters = self.filters
        if (
            filters
            and self._whole_reads
            and not self._buf
            and not self._mode
            and data.endswith(b"\n\n")
            and not data.endswith(b"\n\n\n")  # (the last LF of three opens an event: `_paired`)
            and self.quiet_needles() is not None
            and data.find(b"\r") < 0  # (`find`: in CPython 3.11 `in` costs more on bytes)
        ):
            # Whole events and nothing held: a paced stream's every read, once quiet. With no
            # needle in them (`_unread_needles`: the closing one once usage is read), the
            # client gets the chunk itself, unsplit, uncopied, as `_pass_events_before`
            # would forward it (a needle cannot span the LF LF the last read ended with). It
            # leaves the state as that would: with nothing held and no mode, `_hit_at` is -1
            # and `_scan_from` 0 already, and `_last_kept` is read only in a mode it set. (A
            # reading tap holds such reads unsplit, which costs it less than these tests.)
            for needle in self._unread_needles():
                if data.find(needle) >= 0:
                    # Needles in reads before the end (usage, even null, on every chunk): these
                    # tests would only add to their cost. The long way from now on.
                    self._whole_reads = False
                    break
            else:
                return data
        kept: list[bytes] = []  # filters: what the client gets, in order
        if self._mode:
            if not data:  # (a compressed chunk may decode to nothing yet)
                return b"" if filters else None
            if self._mode == _SKIPPING:
                return self._feed_skipping(data)
            self._mode = False
            if data[:1] == b"\n":  # the LF of a CRLF whose CR ended the last event
                data = data[1:]
                if filters and self._last_kept:
                    kept.append(b"\n")
        buf = self._buf
        self._owed = len(kept)
        try:
            needles = self.quiet_needles()
            if needles is None:
                buf += data
                self._split(None, kept)  # (it stops once only needles can matter)
                needles = self.quiet_needles()
                if needles is None or not buf or self._mode == _SKIPPING:
                    return b"".join(kept) if filters else None
                self._hit_at = -1
                lo = 0  # quiet from here: no byte held is searched for needles yet
            else:
                lo = max(len(buf) - _NEEDLE_OVERLAP, 0)
                buf += data
            self._quiet(needles, lo, kept, False)
        except Exception:
            if filters:  # `abandon` owes the client what left the buffer for `kept`
                self._unsent = b"".join(kept[: self._owed])
            raise
        return b"".join(kept) if filters else None

    _owed = 0  # filters: how many of `kept`'s first pieces are bytes no longer in `_buf`
    _whole_reads = True  # filters: a quiet read of whole events may pass untouched (`feed`)

    def _quiet(self, needles: tuple[bytes, ...], lo: int, kept: list[bytes], end: bool) -> None:
        """Only events holding a needle can matter now: look for one from `lo` in the buffer
        (the new bytes and the few before them, where one may have been split). Without one,
        split nothing: a filtering tap forwards every complete event as one slice (and holds
        the unfinished last one: it may be the usage chunk to strip); a reading one holds them
        all, up to `_QUIET_HOLD` (or the stream's `end`). With one, forward (or drop) in one
        search every event that ends before the first needle, then split the rest."""
        buf = self._buf
        first, last = -1, self._hit_at
        closing = self.closing if self.record.usage is None else None
        for needle in needles:
            if needle is closing:  # (the last needle: `first` is the others' first hit)
                if first < 0:
                    continue  # no usage can be read here: a [DONE] in it changes nothing
                hit = buf.find(needle, first)
            else:
                hit = buf.find(needle, lo)
            if hit >= 0:
                if first < 0 or hit < first:
                    first = hit
                hit = buf.rfind(needle, hit)
                if hit > last:
                    last = hit
        if last < 0:
            if self.filters or end or len(buf) >= _QUIET_HOLD:
                self._pass_events_before(len(buf), kept)
                if len(buf) > self.max_scan_bytes:
                    self._begin_skip(kept)
            return
        if self._hit_at < 0:  # the first needle since the last split
            last -= self._pass_events_before(first, kept)
            if self._read_end(kept):
                return
        self._hit_at = last
        self._split(needles, kept)
        if closing is not None and self.record.usage is not None and self._mode != _SKIPPING:
            # Usage was read in this split: a [DONE] in the event still held counts from now on.
            at = buf.rfind(closing)
            if at > self._hit_at:
                self._hit_at = at

    def _pass_events_before(self, limit: int, kept: list[bytes]) -> int:
        """Take, unread, the events that end before `limit` (none of them can matter) out of
        the buffer, as one slice to forward (filters); return how many bytes went."""
        buf = self._buf
        scan = self._scan_from
        if buf.find(b"\r", scan, limit) < 0:  # LF endings only: the last LF LF ends it
            cut = buf.rfind(b"\n\n", scan, limit) + 2
        else:
            m = _LAST_EVENT_END.match(buf, scan, limit)
            cut = 1 if m is None else m.end()
        if cut < 2:
            self._scan_from = max(_resume_at(buf, limit), scan)
            return 0
        cut = _paired(buf, cut)
        if cut == len(buf) and buf[cut - 1] == 13:
            self._mode = _AFTER_CR  # ends in CR: an LF may follow
        if self.filters:
            kept.append(_take(buf, 0, cut))
            self._owed = len(kept)
            self._last_kept = True
        del buf[:cut]
        # The match was the last event end before `limit`: no other ends between it and there.
        self._scan_from = _resume_at(buf, limit - cut)
        return cut

    def _split(self, needles: tuple[bytes, ...] | None, kept: list[bytes]) -> None:
        """Read (or, `needles` given, skip) every complete event in the buffer, from where the
        last search stopped; keep the partial last one. Without `needles`, stop after the
        event that makes `quiet_needles` say only needles can matter. Filters: `kept` gets
        what to forward, one slice per run of events kept. An event over the cap is not read
        (`_skip_event`; filters forward it as it is), and a partial one over it is skipped
        from now on (`_begin_skip`). Events the tap `_defers` are read in one go, at the next
        event that is not, or at the end of the split (`_read_deferred`)."""
        buf = self._buf
        filters = self.filters
        search = EVENT_END.search
        cap = self.max_scan_bytes
        big = len(buf) > cap  # only then may an event in it, or the partial one, pass the cap
        start = end = run = dropped = 0  # run: filters' first byte not yet in `kept`
        deferred = last = last_end = -1  # the first and the last deferred event (-1: none)
        # A tap that defers events holding its first needle reads any holding another in
        # turn: where the next of those is (found once per run of events, not per event)
        defers = needles is not None and self.defers
        sync = -1
        nexts: list[int] = []  # where each of those needles is next (len(buf): nowhere)
        quiet = False
        judged = 0  # `_take_run` judged the events before this: none starts a run
        # Without a CR in the bytes to search, every EVENT_END is an LF LF: found by `find`
        # (memchr), several times faster than the pattern.
        lf_only = buf.find(b"\r", self._scan_from) < 0
        while True:
            if lf_only:
                end = buf.find(b"\n\n", self._scan_from) + 2
                if end < 2:
                    break
            elif (m := search(buf, self._scan_from)) is not None:
                end = m.end()
            else:
                break
            self._scan_from = end
            if needles is not None:
                for needle in needles:
                    if (hit := buf.find(needle, start, end)) >= 0:
                        break
                else:  # nothing here can matter: skip it uncopied
                    start = end
                    continue
                if defers and sync < start:
                    if not nexts:
                        nexts = [-1] * (len(needles) - 1)
                    for i, at in enumerate(nexts):
                        if at < start:  # (each byte searched once per needle)
                            at = buf.find(needles[i + 1], start)
                            nexts[i] = at if at >= 0 else len(buf)
                    sync = min(nexts, default=len(buf))
                if defers and deferred < 0 and lf_only and not big and start >= judged:
                    stop = self._take_run(buf, start, hit, min(sync, len(buf)))
                    if stop > 0:  # a run read in one go: on from its end
                        start = self._scan_from = stop
                        continue
                    judged = -stop  # (tried again from there only: each byte judged once)
                if (
                    defers
                    and end <= sync
                    and self._defers(buf, start, end, hit)
                    and not (big and end - start > cap)
                ):
                    if deferred < 0:
                        deferred = start
                    last, last_end = start, end
                    start = end
                    continue
                if deferred >= 0:  # read them before this one
                    self._read_deferred(buf, deferred, last, last_end)
                    deferred = -1
            if big and end - start > cap:
                self._skip_event(buf, start, end)
                start = end
                continue
            if not self.on_event(bytes(buf[start:end])):  # (only a filtering tap drops)
                if run < start:
                    kept.append(_take(buf, run, start))
                run = dropped = end
            start = end
            if needles is None and self.quiet_needles() is not None:
                quiet = True  # the rest is `feed`'s to read quietly
                break
        if deferred >= 0:
            self._read_deferred(buf, deferred, last, last_end)
        if not start:
            if not quiet:
                self._scan_from = _resume_at(buf, len(buf))
            if big and not quiet and len(buf) > cap:
                self._begin_skip(kept)
            return
        if filters:
            if run < start:
                kept.append(_take(buf, run, start))
            self._last_kept = dropped != start
        if buf[start - 1] == 13 and start == len(buf):  # ends in CR: an LF may follow
            self._mode = _AFTER_CR
        del buf[:start]  # in place (CPython moves the start, not the bytes)
        if filters:
            self._owed = len(kept)
        self._hit_at = max(self._hit_at - start, -1)  # a needle in the partial event stays
        if quiet:
            self._scan_from = 0
            return
        scan = max(len(buf) - _LONGEST_PARTIAL, 0)  # (`_resume_at`, inlined: the hot path)
        if scan and buf[scan] == 10 and buf[scan - 1] == 13:
            scan -= 1  # never resume between the CR and LF of one CRLF
        self._scan_from = scan
        if big and len(buf) > cap:
            self._begin_skip(kept)

    def _read_end(self, kept: list[bytes]) -> bool:
        """The buffer, whose first event holds the first needle, is the stream's end in a
        shape the tap reads in one go, as `_split` would read it event by event: then read
        it, empty the buffer, and return True. The base tap knows no such shape."""
        return False

    # Whether the tap may let events wait (`_defers`): only those holding its first needle
    # and no other one.
    defers = False

    def _defers(self, buf: bytearray, start: int, end: int, hit: int) -> bool:
        """Whether the event ``buf[start:end]``, whose first needle (the first of `needles`,
        and no other) is at `hit`, may be read later, with the others deferred beside it, by
        `_read_deferred`. The base tap defers none."""
        return False

    def _take_run(self, buf: bytearray, start: int, hit: int, limit: int) -> int:
        """A run of whole events from ``buf[start:]`` (LF endings, none over the cap, no needle
        but the first before `limit`), whose first holds the first needle at `hit`, that the
        tap may read in one go, without splitting it; return where it ends, having read it.
        Not taken: 0 or less, minus where the events it judged end (`_split` reads them event
        by event and asks again only after them, so a long read is judged in linear time).
        The base tap takes none."""
        return 0

    def _read_deferred(self, buf: bytearray, first: int, last: int, end: int) -> None:
        """Read the events `_defers` let wait, from ``buf[first:]`` to the last one,
        ``buf[last:end]``: here, each in turn (`_read_events`)."""
        self._read_events(buf, first, end)

    def _read_events(self, buf: bytearray, start: int, end: int) -> None:
        """Read, in turn, each event holding a needle in ``buf[start:end]`` (whole events, none
        over the cap that holds a needle: `_split` never defers one)."""
        search = EVENT_END.search
        needles = self.needles
        while start < end and (m := search(buf, start, end)) is not None:
            stop = m.end()
            if any(buf.find(needle, start, stop) >= 0 for needle in needles):
                self.on_event(bytes(buf[start:stop]))
            start = stop

    def _skip_event(self, event: bytes | bytearray, start: int, end: int) -> None:
        """``event[start:end]``, one whole event over the cap, goes unread: its first token is
        looked for in its first `max_scan_bytes` bytes (as the raw event: `first_token` is
        written to find it there too), and a needle in it makes it `too_large_event`."""
        self._note_first_token(event, start, min(end, start + self.max_scan_bytes))
        for needle in self._unread_needles():
            if event.find(needle, start, end) >= 0:
                self.too_large_event()
                return

    def _unread_needles(self) -> tuple[bytes, ...]:
        """The needles that make an event over the cap, unread, `too_large_event`, and keep a
        quiet read of whole events from passing untouched (`feed`): all of them, but `closing`
        while no usage is read (it would close nothing; and the quiet path passes such an
        event unread without looking for it)."""
        return self.needles if self.record.usage is not None else self._named_needles

    def _note_first_token(self, event: bytes | bytearray, start: int, end: int) -> None:
        token = self.first_token
        if self.record.ttft_ms is None and token is not None and token.search(event, start, end):
            self.mark_first_token()

    def _begin_skip(self, kept: list[bytes]) -> None:
        """The partial event (all of `_buf`, searched up to `_scan_from`) passed the cap: note
        its first token and whether it names a needle, forward it (filters), and keep only its
        last few bytes, so that an end or a needle split by the next chunk is still found."""
        buf = self._buf
        self._note_first_token(buf, 0, self.max_scan_bytes)
        self._skip_hit = any(buf.find(needle) >= 0 for needle in self._unread_needles())
        if self.filters:
            self._last_kept = True
            kept.append(bytes(buf))
            self._owed = len(kept)
        scan = self._scan_from
        cut = max(min(scan, len(buf) - _NEEDLE_OVERLAP), 0)
        del buf[:cut]
        self._scan_from = scan - cut
        self._hit_at = -1
        self._mode = _SKIPPING

    def _feed_skipping(self, data: bytes) -> bytes | None:
        """`feed` inside an event over the cap: find its end (and any needle) in the new bytes
        and the few kept before them; the bytes after its end are fed as usual."""
        buf = self._buf
        held = len(buf)
        buf += data
        m = EVENT_END.search(buf, self._scan_from) if b"\n" in data or b"\r" in data else None
        end = len(buf) if m is None else m.end()
        if not self._skip_hit:
            self._skip_hit = any(buf.find(needle, 0, end) >= 0 for needle in self._unread_needles())
        if m is None:
            scan = _resume_at(buf, end)
            cut = max(min(scan, end - _NEEDLE_OVERLAP), 0)
            del buf[:cut]
            self._scan_from = scan - cut
            return data if self.filters else None
        self._mode = _AFTER_CR if end == len(buf) and buf[end - 1] == 13 else False
        buf.clear()
        self._scan_from = 0
        if self._skip_hit:
            self._skip_hit = False
            self.too_large_event()
        end -= held  # (an end is never found in the bytes held: they were searched)
        if end == len(data):
            return data if self.filters else None
        decode, self._decode = self._decode, None  # the rest is decoded already
        try:
            out = self.feed(data[end:])
        except Exception:
            if self.filters:  # `abandon` owes the client these too
                self._unsent = data[:end] + self._unsent
            raise
        finally:
            self._decode = decode
        return data[:end] + (out or b"") if self.filters else None

    def abandon(self) -> bytes | None:
        if not self.filters:
            return None
        # Skipping: the bytes held went to the client already.
        return self._unsent + (b"" if self._mode == _SKIPPING else bytes(self._buf))

    def passthrough(self, chunk: bytes) -> bytes:
        """After the tap broke: what the client gets for a chunk (decoded, if `decodes`)."""
        return self._decode(chunk) if self.decodes and self._decode else chunk

    def finish(self, complete: bool) -> bytes | None:
        buf = self._buf
        if not self.filters and buf and self._mode != _SKIPPING:
            # Read what quiet feeds held unsplit: every complete event holding a needle.
            needles = self.quiet_needles()
            lo = len(buf)  # (held bytes were searched for needles as they came)
            if needles is None:
                self._split(None, [])
                needles, lo = self.quiet_needles(), 0
                self._hit_at = -1
            if needles is not None and buf and self._mode != _SKIPPING:
                self._quiet(needles, lo, [], True)
        if self._mode == _SKIPPING:  # the body ended inside an event over the cap
            self._mode = False
            buf.clear()
            if self._skip_hit:
                self.too_large_event()
            self.end_of_stream(complete)
            return None  # (filters: its bytes went out as they came)
        rest = bytes(buf)  # (at most the cap: `_split` skips a longer one)
        buf.clear()
        keep = self.on_event(rest) if rest.strip() else True  # a last event without its blank line
        self.end_of_stream(complete)
        return rest if self.filters and keep else None

    # An event holding generated text (its arrival is the time to first token).
    first_token: re.Pattern[bytes] | None = None
    # Once the first event is read and the first token seen, only events holding one of these
    # byte strings are read (usage, errors); the rest are skipped without being split.
    needles: tuple[bytes, ...] = ()
    # The last of `needles`, if its event changes nothing while no usage is read (chat's
    # ``[DONE]``: it makes the usage read before it final) and it is read only as the marker
    # (`names_needle`). While no usage is read, `_quiet` looks for it only after another
    # needle, not in every byte: one search fewer over a burst.
    closing: bytes | None = None
    # `needles` but `closing`: what `names_needle` looks for (derived once per class).
    _named_needles: tuple[bytes, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._named_needles = tuple(needle for needle in cls.needles if needle is not cls.closing)

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
        if self._seen_first and not self.names_needle(data):
            return True  # nothing in it can matter
        obj = loads_object(data)
        if obj is None:
            self.malformed = True
            return True
        self._seen_first = True
        return self.read(obj)

    def names_needle(self, data: bytes) -> bool:
        """Whether an event's data (`sse_data`) names a needle: after the first event, only
        such an event is decoded and read (`on_event`). The `closing` needle counts only as the
        marker itself: a chunk whose text says ``[DONE]`` is content like any other."""
        return any(needle in data for needle in self._named_needles)

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

    def too_large_event(self) -> None:
        """An event over the cap that names a needle went unread: it may have carried usage
        (or a newer count, or the one that made it final), so usage read before it is dropped
        and not final. A later event that brings usage again makes the call metered as usual
        (a dialect that sums events keeps what it summed: `end_of_stream` still needs it to
        be made final after this); else the call is unmetered ``too_large``."""
        self.too_large = True
        self.usage_final = False
        self.record.usage = None

    def end_of_stream(self, complete: bool) -> None:
        """All events were read: missing usage on a billable 2xx is unmetered, saying why.

        Usage read but never confirmed final (`usage_final`) is provisional, a lower bound: it
        is dropped, never booked, and the call is unmetered as ``incomplete`` (``too_large``
        when an event over the cap left it so, in a stream that ended whole)."""
        record = self.record
        large = self.too_large and complete
        if record.usage is not None and not self.usage_final:
            record.usage = None
            if record.billable and is_ok(record):
                record.mark_unmetered(Unmetered.TOO_LARGE if large else Unmetered.INCOMPLETE)
        if record.usage is None and record.billable and is_ok(record):
            if not complete:
                record.mark_unmetered(Unmetered.INCOMPLETE)
            elif large:
                record.mark_unmetered(Unmetered.TOO_LARGE)
            elif self.malformed:
                record.mark_unmetered(Unmetered.MALFORMED)
            else:
                record.mark_unmetered(Unmetered.NO_USAGE)
