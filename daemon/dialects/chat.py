"""Chat completions (`POST /v1/chat/completions`), streamed or not, and deferred results.

Shapes read (xai-api.md, "Chat completions"):

- body: ``{id, model, system_fingerprint, service_tier, choices, usage}``; ``usage`` is
  ``{prompt_tokens, completion_tokens, total_tokens, prompt_tokens_details{cached_tokens,
  image_tokens}, completion_tokens_details{reasoning_tokens}, num_sources_used,
  cost_in_usd_ticks | cost_in_nano_usd}`` (ticks = nano * 10; ticks win when both come);
- stream: ``data: {chunk}`` events ending ``data: [DONE]``; usage only on one extra chunk with
  ``choices: []``, sent when the request asks ``stream_options.include_usage``. The relay adds
  that to requests without it and removes the extra chunk from what the client gets. Streams of
  Nov 2024 sent cumulative usage on every chunk: the last wins. An error may come as an event,
  ``{"code", "error"}``;
- deferred: the POST answers ``{"request_id"}`` (kept as the response id, not billed);
  ``GET /v1/chat/deferred-completion/{id}`` answers 202 while pending, then one 200 with a normal
  completion, billed then.

xAI puts reasoning tokens *outside* `completion_tokens` (total = prompt + completion + reasoning);
OpenAI puts them inside (total = prompt + completion). `chat_usage` tells the two apart by the
total, so `Usage.output_tokens` is billable output including reasoning either way.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from daemon.dialects.base import (
    Clock,
    Dialect,
    Tap,
    note_model_and_id,
    note_served,
    read_error,
    read_json_request,
)
from daemon.dialects.body import BodyTap
from daemon.dialects.coerce import as_int, loads_object, opt_int, opt_str, reported_ticks
from daemon.dialects.sse import EventTap, lf_events_end, split_events, sse_data
from daemon.record import CallRecord, Usage

_FIRST_TOKEN = re.compile(rb'"(?:reasoning_)?content"\s*:\s*"[^"]')
_EMPTY: dict[str, Any] = {}
_INCLUDE_USAGE = b'"stream_options":{"include_usage":true},'
_DONE_EVENT = b"data: [DONE]\n\n"  # the end of a stream, as xAI and OpenAI send it


def chat_usage(u: dict[str, Any]) -> Usage:
    """Normalize a chat-completions `usage` object (xAI's or OpenAI's). Runs once per call."""
    get = u.get
    prompt = as_int(get("prompt_tokens"))
    completion = as_int(get("completion_tokens"))
    prompt_details = get("prompt_tokens_details")
    if type(prompt_details) is not dict:
        prompt_details = _EMPTY
    completion_details = get("completion_tokens_details")
    if type(completion_details) is not dict:
        completion_details = _EMPTY
    reasoning = as_int(completion_details.get("reasoning_tokens"))
    total = opt_int(get("total_tokens"))
    # xAI: reasoning outside completion_tokens; add it only when the total proves it, or when
    # reasoning exceeds completion (inside it, as OpenAI counts, it never could).
    outside = reasoning > 0 and (reasoning > completion or total == prompt + completion + reasoning)
    output = completion + reasoning if outside else completion
    return Usage(
        input_tokens=prompt,
        cached_input_tokens=min(as_int(prompt_details.get("cached_tokens")), prompt),
        output_tokens=output,
        reasoning_tokens=min(reasoning, output),
        image_input_tokens=as_int(prompt_details.get("image_tokens")),
        sources=as_int(get("num_sources_used")),
        reported_cost_ticks=reported_ticks(u),
    )


def read_chat_completion(record: CallRecord, obj: dict[str, Any]) -> None:
    """Fill the record from one chat completion object (or a stream chunk)."""
    note_model_and_id(record, obj.get("model"), obj.get("id"))
    note_served(record, obj.get("system_fingerprint"), obj.get("service_tier"))
    usage = obj.get("usage")
    if isinstance(usage, dict):
        record.usage = chat_usage(usage)


class ChatBody(BodyTap):
    """A whole chat completion body: model, id, fingerprint, service tier and `chat_usage`.
    A deferred POST's ``{"request_id"}`` answer only notes that id as the response id."""

    def parse(self, body: bytes) -> None:
        record = self.record
        obj = self.success_object(body)
        if obj is None:
            return
        if record.deferred and "request_id" in obj and "choices" not in obj:
            note_model_and_id(record, None, obj.get("request_id"))
            return
        read_chat_completion(record, obj)


class ChatStream(EventTap):
    """Reads the first chunk (model, id, fingerprint) and any chunk carrying usage or an error.

    Usage is final on the ``choices: []`` usage chunk, or once ``[DONE]`` follows it (Nov 2024
    streams repeat cumulative usage on every chunk: before ``[DONE]`` it is provisional, and a
    stream cut before it is unmetered, ``incomplete``; a ``[DONE]`` before any usage closes
    nothing).
    """

    first_token = _FIRST_TOKEN
    needles = (b'"usage"', b'"error"', b"[DONE]")

    def read(self, obj: dict[str, Any]) -> bool:
        if "error" in obj and "choices" not in obj:
            read_error(self.record, obj)  # an error sent as an event, mid-stream
            return True
        read_chat_completion(self.record, obj)
        if obj.get("choices") == [] and isinstance(obj.get("usage"), dict):
            self.usage_final = True
            # The usage-only chunk that exists only because the relay asked for it.
            return not self.filters
        return True

    closing = needles[2]

    def on_done(self) -> None:
        # It closes the count read before it. Before any, it closes nothing: usage read after
        # the stream said it was done is not known final (and the quiet path need not look
        # for a [DONE] while no usage is read: `EventTap.closing`).
        if self.record.usage is not None:
            self.usage_final = True

    defers = True  # (needles[0] is "usage": events with only it may wait)
    # Unread events of `"usage":null` runs held, unchecked, while only their being JSON could
    # still matter; past this many bytes they are checked at once and dropped.
    unverified_hold = 64 * 1024

    def __init__(
        self, record: CallRecord, clock: Clock, encoding: str = "", filtering: bool = False
    ) -> None:
        super().__init__(record, clock, encoding, filtering)
        self._unverified: list[bytes] = []  # runs of unread events not known to be JSON
        self._unverified_bytes = 0

    def _read_end(self, kept: list[bytes]) -> bool:
        """The buffer is one event and ``data: [DONE]``, the way most streams end (the usage
        chunk, then the marker), LF-ended, no CR, not over the cap: read the two as
        `EventTap._split` would, in turn, without its search for runs (one event makes none:
        `_take_run`; a ``"choices":[]`` chunk never waits: `_defers`). `on_event` decides what
        is read (the first needle is in that event: `_pass_events_before` passed the rest), and
        filters drop the usage chunk as `read` says; the marker is kept."""
        buf = self._buf
        end = len(buf) - len(_DONE_EVENT)  # where that event ends and the marker starts
        if (
            len(buf) > self.max_scan_bytes
            or not buf.endswith(_DONE_EVENT)
            or buf.find(b"\n\n") != end - 2  # one event, then the marker
            or buf.find(b"\r") >= 0  # (a CR ends lines, and events, too)
            or buf.find(b'"choices":[]', 0, end) < 0
        ):
            return False
        keep = self.on_event(bytes(buf[:end]))
        self.on_event(_DONE_EVENT)
        if self.filters:
            kept.append(bytes(buf) if keep else _DONE_EVENT)
            self._owed = len(kept)
            self._last_kept = True
        buf.clear()
        self._scan_from = 0
        return True

    def _may_wait(self, buf: bytearray, hit: int) -> bool:
        """Whether a chunk whose first ``"usage"`` is at `hit` may wait unread beside others:
        it names usage as an object or null, and the model and id are known (the first wins:
        no later chunk changes them)."""
        record = self.record
        return (
            record.model is not None
            and record.response_id is not None
            and (buf.startswith(b'"usage":{', hit) or buf.startswith(b'"usage":null', hit))
        )

    def _defers(self, buf: bytearray, start: int, end: int, hit: int) -> bool:
        """A content chunk that carries usage (Nov 2024 streams: cumulative usage on every
        chunk) or names it null (OpenAI's streams with ``include_usage``: ``"usage":null`` on
        every chunk but the last) waits, unread, while the next one may make it moot: one
        that may wait (`_may_wait`) and names choices once, as a non-empty list (so it is
        neither the final ``choices: []`` usage chunk nor one to strip), no error and no
        ``[DONE]`` (`EventTap._split` sees to those)."""
        if not self._may_wait(buf, hit):
            return False
        at = buf.find(b'"choices":[{', start, end)
        return (
            at >= 0
            and buf.find(b'"choices"', start, at) < 0
            and buf.find(b'"choices"', at + 9, end) < 0
        )

    def _take_run(self, buf: bytearray, start: int, hit: int, limit: int) -> int:
        """A burst of content chunks that each name usage, null (OpenAI's streams with
        ``include_usage``) or cumulative (Nov 2024 streams), up to the first usage chunk
        (``choices: []``) or other needle: read its last chunk alone when that books what
        reading each would (`_read_last`), and go on from its end, without a Python step per
        event. Else event by event, and minus where the events it judged end
        (`EventTap._take_run`)."""
        if not self._may_wait(buf, hit):
            return 0
        found = buf.find(b'"choices":[]', start, limit)
        stop = lf_events_end(buf, start, limit if found < 0 else found)
        # where the run's last event starts (none: it is one event, or a usage chunk first)
        last = lf_events_end(buf, start, stop - 1) if stop > start else 0
        if last <= start or not self._read_last(buf, start, last, stop, vetted=False):
            return -stop
        return stop

    def _read_deferred(self, buf: bytearray, first: int, last: int, end: int) -> None:
        """Read only the last deferred chunk when that books what reading each would
        (`_read_last`; each was vetted by `_defers`); else read each in turn, as if none had
        waited."""
        if not self._read_last(buf, first, last, end, vetted=True):
            self._read_events(buf, first, end)

    def _read_last(self, buf: bytearray, first: int, last: int, end: int, vetted: bool) -> bool:
        """Read the chunk ``buf[last:end]`` alone, if that books what reading every chunk of
        ``buf[first:end]`` in turn would; return whether it did. Read in turn, they would set
        the last non-empty fingerprint and service tier and the usage of the last that carries
        one, and nothing else, as long as none may be a usage chunk (to strip, or that makes
        the count final). So the last must be read in turn itself (`_decoded`), not have
        choices ``[]``, and settle the fingerprint and tier (`_settles`); its usage must be an
        object (none before it a usage chunk: each `vetted` by `_defers`, or every choices they
        name a non-empty list), or null like every usage they name. Unread, a chunk changes
        nothing but whether it was JSON, which decides only for a call left without usage
        (``malformed``): unless usage is read, the unread ones are held and checked then
        (`_hold_unverified`)."""
        obj = self._decoded(buf, last, end)
        if obj is None or obj.get("choices") == [] or not self._settles(obj, buf, first, last):
            return False
        usage = obj.get("usage")
        if type(usage) is dict:
            if not vetted and buf.count(b'"choices"', first, end) != buf.count(
                b'"choices":[{', first, end
            ):
                return False
        elif usage is not None or buf.count(b'"usage"', first, end) != buf.count(
            b'"usage":null', first, end
        ):
            return False
        self.read(obj)
        if first < last and self.record.usage is None:
            self._hold_unverified(bytes(buf[first:last]))
        return True

    def _decoded(self, buf: bytearray, start: int, end: int) -> dict[str, Any] | None:
        """The event ``buf[start:end]`` decoded, if reading it in turn would decode it: its
        data names a needle (`EventTap.names_needle`: one named only on another line of the
        event is skipped unread) and is a JSON object; else None."""
        data = sse_data(bytes(buf[start:end]))
        return loads_object(data) if self.names_needle(data) else None

    @staticmethod
    def _settles(obj: dict[str, Any], buf: bytearray, first: int, last: int) -> bool:
        """Whether the chunk `obj` alone gives the fingerprint and service tier that reading
        the chunks ``buf[first:last]`` before it and then it would: its own, non-empty (the
        last non-empty wins), or one none of them names. Their bytes are read, not decoded:
        a key written with an escape (``"\\u0075sage"``) could hide what they name, so any
        ``\\u`` among them says no (a backslash is looked for first: one `memchr`)."""
        if buf.find(b"\\", first, last) >= 0 and buf.find(b"\\u", first, last) >= 0:
            return False
        return bool(
            opt_str(obj.get("system_fingerprint"))
            or buf.find(b'"system_fingerprint"', first, last) < 0
        ) and bool(opt_str(obj.get("service_tier")) or buf.find(b'"service_tier"', first, last) < 0)

    def _hold_unverified(self, run: bytes) -> None:
        """Keep `run` (whole events, read by none) until usage is read or the stream ends;
        past `unverified_hold` bytes, check what is held now (`_check_unverified`)."""
        self._unverified.append(run)
        self._unverified_bytes += len(run)
        if self._unverified_bytes > self.unverified_hold:
            self._check_unverified()

    def _check_unverified(self) -> None:
        """Whether an event held unread was not JSON, as reading it would have found: each
        event naming a needle is decoded (`EventTap.on_event`'s rule); then drop them all."""
        for run in self._unverified:
            for event in split_events(run):
                data = sse_data(event)
                if data and self.names_needle(data) and loads_object(data) is None:
                    self.malformed = True
        self._unverified.clear()
        self._unverified_bytes = 0

    def end_of_stream(self, complete: bool) -> None:
        if self._unverified and self.record.usage is None:
            self._check_unverified()  # (with usage read, whether they were JSON is moot)
        super().end_of_stream(complete)


class ChatDialect(Dialect):
    """`POST /v1/chat/completions` (xai-api.md, "Chat completions"). Reads the request's
    ``model``, ``stream``, ``deferred`` and ``stream_options`` (a stream without
    ``include_usage`` gets it added), and the answer's ``{id, model, system_fingerprint,
    service_tier, usage}`` from a body or the stream's chunks. A deferred POST is not billed."""

    def __init__(self) -> None:
        super().__init__("chat.completions", billable=True)

    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        record.billable = record.method == "POST"
        obj = read_json_request(record, body)
        if obj is None:
            return None
        record.deferred = obj.get("deferred") is True
        record.billable = not record.deferred  # billed when its result comes, not now
        if not record.stream:
            return None
        options = obj.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return None
        record.usage_injected = True
        if options is None and "stream_options" not in obj:
            # Insert at the front so every byte the client sent stays as it was.
            start = body.index(b"{") + 1
            return body[:start] + _INCLUDE_USAGE + body[start:]
        obj["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        return orjson.dumps(obj)

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if content_type.startswith("text/event-stream"):
            return ChatStream(record, clock, encoding, filtering=record.usage_injected)
        return ChatBody(record, clock, encoding)


class DeferredResultDialect(Dialect):
    """`GET /v1/chat/deferred-completion/{request_id}`: 202 (empty) while pending, not billed;
    one 200 with a normal chat completion, billed (and linked to its POST by the meter)."""

    def __init__(self) -> None:
        super().__init__("chat.deferred", billable=False)

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if record.status == 200 and record.method == "GET":
            record.billable = True
            return ChatBody(record, clock, encoding)
        return Tap(record, clock)
