"""One definition of where an SSE event ends (`daemon.dialects.sse.EVENT_END`), used by every
tap: LF, CRLF or CR line endings, mixed per line, split anywhere (even inside a CRLF), read in
one pass (xai-api.md, "Chat completions": event boundaries)."""

from __future__ import annotations

import json
import re
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.dialects import sse
from daemon.dialects.base import Dialect
from daemon.dialects.chat import ChatDialect
from daemon.dialects.messages import MessagesDialect
from daemon.dialects.responses import ResponsesDialect
from daemon.dialects.sse import split_events
from daemon.record import CallRecord, Unmetered, Usage
from daemon.testing import event_ends, feed_in_pieces, make_record

LF, CRLF, CR = b"\n", b"\r\n", b"\r"


@pytest.mark.parametrize(
    ("body", "events"),
    [
        (b"a\n\nb\n\n", [b"a\n\n", b"b\n\n"]),
        (b"a\r\n\r\nb\r\n\r\n", [b"a\r\n\r\n", b"b\r\n\r\n"]),
        (b"a\r\rb\r\r", [b"a\r\r", b"b\r\r"]),
        (b"a\n\r\nb\r\n\nc\r\r\nd", [b"a\n\r\n", b"b\r\n\n", b"c\r\r\n", b"d"]),
        (b"a\r\n\rb\n\rc", [b"a\r\n\r", b"b\n\r", b"c"]),
        (b"a\r\nb\nc\rd\n\n", [b"a\r\nb\nc\rd\n\n"]),  # one event of four lines
    ],
)
def test_event_ends_at_a_blank_line_whatever_the_endings(body: bytes, events: list[bytes]) -> None:
    assert split_events(body) == events


def _ending(previous: bytes | None) -> st.SearchStrategy[bytes]:
    # A CR line followed by an empty LF line reads as one CRLF (the stream itself is ambiguous):
    # no server writes that, so neither do we.
    return st.sampled_from([CRLF, CR] if previous == CR else [LF, CRLF, CR])


def frame(draw: st.DrawFn, lines: list[bytes]) -> bytes:
    """One event: its lines, each ended by a drawn line ending, then a blank line."""
    out, previous = [], None
    for line in [*lines, b""]:
        previous = draw(_ending(previous))
        out.append(line + previous)
    return b"".join(out)


def data(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode()


def chat_stream(draw: st.DrawFn, p: int, c: int, cached: int) -> list[list[bytes]]:
    head = {"id": "chatcmpl-7", "model": "grok-4.7", "object": "chat.completion.chunk"}
    usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    usage["prompt_tokens_details"] = {"cached_tokens": cached}  # type: ignore[assignment]
    return [
        [data({**head, "choices": [{"index": 0, "delta": {"content": "Hi"}}]})],
        [b": keep-alive comment"],
        [data({**head, "choices": [{"index": 0, "delta": {"content": " there"}}]})],
        [data({**head, "choices": [], "usage": usage})],
        [b"data: [DONE]"],
    ]


def responses_stream(draw: st.DrawFn, p: int, c: int, cached: int) -> list[list[bytes]]:
    rid = "3f1c2a9e-5b7d-4e21-9a0c-6d8e2f4b1a37"
    response = {"id": rid, "object": "response", "model": "grok-4.7", "status": "in_progress"}
    usage = {
        "input_tokens": p,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": c,
        "total_tokens": p + c,
    }
    done = {**response, "status": "completed", "usage": usage}
    delta = {"type": "response.output_text.delta", "delta": "Hi"}
    return [
        [b"event: response.created", data({"type": "response.created", "response": response})],
        [b"event: response.output_text.delta", data(delta)],
        [b"event: response.completed", data({"type": "response.completed", "response": done})],
    ]


def messages_stream(draw: st.DrawFn, p: int, c: int, cached: int) -> list[list[bytes]]:
    message = {
        "id": "msg_5e0b", "type": "message", "model": "grok-4.7",
        "usage": {"input_tokens": p, "output_tokens": 0},
    }  # fmt: skip
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}
    final = {"type": "message_delta", "usage": {"output_tokens": c}}
    return [
        [b"event: message_start", data({"type": "message_start", "message": message})],
        [b"event: content_block_delta", data(delta)],
        [b"event: message_delta", data(final)],
        [b"event: message_stop", data({"type": "message_stop"})],
    ]


CASES: dict[str, tuple[Dialect, str, Any, str]] = {
    "chat": (ChatDialect(), "/v1/chat/completions", chat_stream, "chatcmpl-7"),
    "responses": (
        ResponsesDialect(),
        "/v1/responses",
        responses_stream,
        "3f1c2a9e-5b7d-4e21-9a0c-6d8e2f4b1a37",
    ),
    "messages": (MessagesDialect(), "/v1/messages", messages_stream, "msg_5e0b"),
}


def run(
    name: str, body: bytes, cuts: list[int], filtering: bool = False, cap: int | None = None
) -> tuple[CallRecord, bytes]:
    dialect, path, _, _ = CASES[name]
    record = make_record(endpoint=dialect.endpoint, path=path, stream=True)
    record.usage_injected = filtering
    tap = dialect.tap(record, "text/event-stream", lambda: 2.0)
    if cap is not None:
        tap.max_scan_bytes = cap
    return record, feed_in_pieces(tap, body, cuts)


def _data_by_lines(event: bytes) -> bytes:
    """An event's data as the spec reads it, line by line: the reference for `sse_data`."""
    values = [line[5:] for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(v[1:] if v.startswith(b" ") else v for v in values)


@given(
    lines=st.lists(
        st.tuples(
            st.sampled_from([b"data:", b"data: ", b"data:  ", b"event: ", b": ", b"id:"]),
            st.binary(max_size=6).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
            st.sampled_from([LF, CRLF, CR, b""]),
        ),
        max_size=4,
    ),
    blank=st.sampled_from([b"", LF, CRLF, CR, LF + LF, CRLF + CRLF]),
)
def test_an_events_data_is_its_data_lines_joined_whatever_the_endings(
    lines: list[tuple[bytes, bytes, bytes]], blank: bytes
) -> None:
    """`sse_data`'s one-line fast path gives what reading the event line by line gives."""
    event = b"".join(field + value + ending for field, value, ending in lines) + blank
    assert sse.sse_data(event) == _data_by_lines(event)


@settings(max_examples=500, deadline=None)
@given(
    name=st.sampled_from(list(CASES)),
    prompt=st.integers(1, 10**7),  # a prompt is never empty; 0/0 is xAI's placeholder
    completion=st.integers(1, 10**6),
    cached_share=st.integers(0, 100),
    padding=st.integers(0, 12),
    hold=st.sampled_from([sse._QUIET_HOLD, 1, 90]),
    draw=st.data(),
)
def test_any_usage_any_split_any_ending_gives_the_same_row(
    name: str,
    prompt: int,
    completion: int,
    cached_share: int,
    padding: int,
    hold: int,
    draw: st.DataObject,
) -> None:
    """`padding` events that cannot matter sit after the first token (a quiet tap holds them
    unsplit, up to `hold` bytes, or passes a read of whole ones on as it came), before the
    events that carry usage."""
    cached = prompt * cached_share // 100
    _, _, build, response_id = CASES[name]
    if name == "messages":
        cached = 0
    events = build(draw.draw, prompt, completion, cached)
    events[2:2] = [[b": pad " + b"x" * n] for n in range(padding)]
    body = b"".join(frame(draw.draw, lines) for lines in events)
    if draw.draw(st.booleans()):
        cuts = draw.draw(st.lists(st.integers(0, len(body)), max_size=30))
    else:  # reads that end where events end (a paced stream), some of them taken together
        ends = event_ends(body)
        cuts = draw.draw(st.lists(st.sampled_from(ends), max_size=len(ends))) or ends
    with patch.object(sse, "_QUIET_HOLD", hold):
        record, forwarded = run(name, body, cuts)
    assert forwarded == body
    assert record.usage is not None
    assert (
        record.usage.input_tokens,
        record.usage.cached_input_tokens,
        record.usage.output_tokens,
    ) == (prompt, cached, completion)
    assert (record.model, record.response_id, record.metered) == ("grok-4.7", response_id, True)
    assert record.ttft_ms == 2000.0


@settings(max_examples=300, deadline=None)
@given(prompt=st.integers(0, 10**7), completion=st.integers(1, 10**6), draw=st.data())
def test_the_rewritten_stream_drops_exactly_the_usage_event_whatever_the_endings(
    prompt: int, completion: int, draw: st.DataObject
) -> None:
    """The relay's usage-injected path (filtering): the usage event goes, every other byte stays,
    whatever the line endings and splits (even between the CR and LF of a CRLF)."""
    frames = [frame(draw.draw, lines) for lines in chat_stream(draw.draw, prompt, completion, 0)]
    body = b"".join(frames)
    without_usage = b"".join(frames[:3] + frames[4:])
    cuts = draw.draw(st.lists(st.integers(0, len(body)), max_size=30))
    record, forwarded = run("chat", body, cuts, filtering=True)
    assert forwarded == without_usage
    assert record.usage == Usage(input_tokens=prompt, output_tokens=completion)
    assert (record.model, record.response_id, record.metered) == ("grok-4.7", "chatcmpl-7", True)


@settings(max_examples=500, deadline=None)
@given(
    name=st.sampled_from(list(CASES)),
    filtering=st.booleans(),
    where=st.sampled_from(["first", "before usage", "last", "last, unended"]),
    needle=st.booleans(),
    size=st.integers(1000, 4000),
    over=st.sampled_from([-1, 0, 1, 2, 500]),
    hold=st.sampled_from([sse._QUIET_HOLD, 1, 90]),
    draw=st.data(),
)
def test_an_event_over_the_cap_is_skipped_exactly_whatever_the_splits(
    name: str,
    filtering: bool,
    where: str,
    needle: bool,
    size: int,
    over: int,
    hold: int,
    draw: st.DataObject,
) -> None:
    """One padding event of `size` bytes (with its endings), the cap `over` bytes under it
    (over <= 0: the event fits). It is relayed untouched wherever the chunks cut it; fitting, or
    naming no needle, it changes nothing; over the cap and naming one (``"error"``: every
    dialect's needle) it could have held usage: metered if usage comes after it, else
    unmetered ``too_large``. Filtering (chat): exactly the usage event is removed."""
    filtering = filtering and name == "chat"
    _, _, build, response_id = CASES[name]
    events = build(draw.draw, 100, 20, 0)
    frames = [frame(draw.draw, lines) for lines in events]
    pad_lines = [b": pad", data({"type": "ping", "error" if needle else "note": None}), b": p"]
    empty = frame(draw.draw, pad_lines)
    pad = empty.replace(b"null", b'"' + b"x" * (size - len(empty) + 2) + b'"')
    if where == "last, unended":
        pad = pad.rstrip(b"\r\n")
    cap = len(pad) - over
    assert cap > max(map(len, frames))  # only the padding event can pass it
    at = {"first": 0, "before usage": 1}.get(where, len(frames))
    body = b"".join([*frames[:at], pad, *frames[at:]])
    cuts = draw.draw(st.lists(st.integers(0, len(body)), max_size=30))
    with patch.object(sse, "_QUIET_HOLD", hold):
        record, forwarded = run(name, body, cuts, filtering, cap)
    usage_frame = frames[3] if filtering else b""  # chat's usage event
    assert forwarded == body.replace(usage_frame, b"", 1)
    assert (record.model, record.response_id, record.ttft_ms) == ("grok-4.7", response_id, 2000.0)
    if over > 0 and needle and where.startswith("last"):
        assert (record.usage, record.unmetered_reason) == (None, Unmetered.TOO_LARGE)
    else:
        assert record.usage is not None and record.metered
        assert (record.usage.input_tokens, record.usage.output_tokens) == (100, 20)


@pytest.mark.parametrize("filtering", [False, True])
def test_an_event_over_the_cap_ends_exactly_wherever_the_chunks_cut(filtering: bool) -> None:
    """An event of mixed line endings, over the cap, with lines after the one that passes it,
    cut at every byte and every byte pair nearby: the event after it (the usage) is found, and
    every byte reaches the client (filtering: all but the usage event)."""
    head = b'data: {"id":"c1","model":"m","choices":[{"delta":{"content":"Hi"}}]}\r\n\n'
    pad = b'data: {"pad":"' + b"x" * 200 + b'"}\r\n: one\r: two\n: three\r\n\r'
    usage = {"prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40}
    tail = b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\r\n\r\n"
    body = head + pad + tail + b"data: [DONE]\n\n"
    for i in range(len(body)):
        for j in (i + 1, i + 2, i + 5):
            record, forwarded = run("chat", body, [i, j], filtering, cap=150)
            assert forwarded == (body.replace(tail, b"") if filtering else body), (i, j)
            assert record.usage == Usage(input_tokens=31, output_tokens=9), (i, j)
            assert (record.model, record.ttft_ms) == ("m", 2000.0)


def test_cr_endings_split_between_every_byte_pair() -> None:
    """Bare-CR events, every two-cut split: the usage is read, never glued into one event."""
    frames = [b"data: " + json.dumps({"id": "c1", "model": "m", "choices": []}).encode() + b"\r\r"]
    usage = {"prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40}
    frames.append(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\r\r")
    body = b"".join(frames) + b"data: [DONE]\r\r"
    for i in range(len(body)):
        for j in (i + 1, i + 2, len(body) - 1):
            record, _ = run("chat", body, [i, j])
            assert record.usage == Usage(input_tokens=31, output_tokens=9), (i, j)


class _CountingPattern:
    """A pattern, counting the bytes each search or match may look at."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.scanned = 0

    def search(self, buf: bytearray, pos: int) -> re.Match[bytes] | None:
        m = self.pattern.search(buf, pos)
        self.scanned += (m.end() if m else len(buf)) - pos
        return m

    def match(self, buf: bytearray, pos: int, endpos: int) -> re.Match[bytes] | None:
        self.scanned += endpos - pos
        return self.pattern.match(buf, pos, endpos)


@pytest.mark.parametrize("cap", [None, 64 * 1024])
@pytest.mark.parametrize("name", list(CASES))
def test_each_byte_is_searched_a_bounded_number_of_times(
    name: str, cap: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2 MB event in 1 kB chunks, then many small ones: the search reads each byte at most
    a few times (linear), never the buffer from its start per chunk (quadratic); with a cap
    under 2 MB too, where the big events are skipped as they come."""
    counter = _CountingPattern(sse.EVENT_END)
    last = _CountingPattern(sse._LAST_EVENT_END)
    monkeypatch.setattr(sse, "EVENT_END", counter)
    monkeypatch.setattr(sse, "_LAST_EVENT_END", last)
    _, _, build, _ = CASES[name]
    frames = [b"".join(line + CR for line in [*lines, b""]) for lines in build(None, 5, 6, 0)]
    big = b"data: " + json.dumps({"type": "ping", "pad": "x" * 2_000_000}).encode() + b"\r\r"
    ticks = b": tick\r\r" * 10_000
    body = frames[0] + big + frames[1] + ticks + big + b"".join(frames[2:]) + ticks
    record, _ = run(name, body, list(range(0, len(body), 1024)), cap=cap)
    assert record.usage is not None and record.usage.output_tokens == 6
    assert counter.scanned + last.scanned <= 2 * len(body)
