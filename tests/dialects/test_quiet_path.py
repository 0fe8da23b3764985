"""The quiet path of the SSE tap (`daemon.dialects.sse`): once only events holding a needle can
matter, a tap neither splits nor copies the others (a filtering tap forwards them as one slice,
and cuts the usage chunk out by slicing), and a chat stream with usage on every chunk reads only
the last of a run. Whatever the stream, the splits, the line endings and the cap, it must give
the client the very bytes, and the record the very values, that reading every event in turn
gives (the slow path: a tap that is never quiet)."""

from __future__ import annotations

import gzip
import itertools
import json
import re
import zlib
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.dialects import sse
from daemon.dialects.base import MAX_SCAN_BYTES
from daemon.dialects.chat import ChatStream
from daemon.dialects.coerce import loads_object
from daemon.dialects.sse import split_events, sse_data
from daemon.record import CallRecord, Unmetered, Usage
from daemon.testing import (
    SlowChatStream,
    booked,
    cap_clear_of_the_edge,
    event_ends,
    make_record,
    meter_chat_stream,
    quiet_as_slow,
)

LF, CRLF, CR = b"\n", b"\r\n", b"\r"
_ENDINGS = re.compile(rb"[\r\n]+")  # a run of line endings
HEAD = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "model": "grok-4.7"}


def _ending(previous: bytes | None) -> st.SearchStrategy[bytes]:
    # An LF after a CR ending would make one CRLF of the two: no server writes that.
    return st.sampled_from([CRLF, CR] if previous == CR else [LF, CRLF, CR])


def frames(draw: st.DrawFn, events: list[list[bytes]]) -> bytes:
    """Each event's lines, each with a drawn line ending, then a blank line; sometimes one
    more blank line after it (an odd run of endings: the next event opens with it)."""
    out, previous = [], None
    for lines in events:
        for line in [*lines, b""]:
            previous = draw(_ending(previous))
            out.append(line + previous)
        if draw(st.integers(0, 5)) == 0:
            previous = draw(_ending(previous))
            out.append(previous)
    return b"".join(out)


def data(obj: object, compact: bool = True) -> bytes:
    return b"data: " + (orjson.dumps(obj) if compact else json.dumps(obj).encode())


@st.composite
def streams(draw: st.DrawFn) -> list[list[bytes]]:
    """A chat stream: a first content chunk, then content chunks (some with cumulative usage,
    or usage null, a fingerprint or service tier that may change, compact JSON or not),
    comments (one naming a needle), an error event, malformed ones, the usage chunk,
    ``[DONE]``, a padding event of some size (with a needle or not), in a drawn order after
    the first chunk."""
    every = draw(st.booleans())  # cumulative usage on every content chunk (Nov 2024)
    nulls = draw(st.booleans())  # "usage": null on content chunks (OpenAI with include_usage)
    events: list[list[bytes]] = [
        [data({**HEAD, "choices": [{"index": 0, "delta": {"content": "Hi"}}]})]
    ]
    rest: list[list[bytes]] = []
    tokens = 0
    for _ in range(draw(st.integers(0, 12))):
        tokens += draw(st.integers(0, 3))
        chunk: dict[str, Any] = {**HEAD, "choices": [{"index": 0, "delta": {"content": "x"}}]}
        if every or draw(st.integers(0, 6)) == 0:
            chunk["usage"] = {"prompt_tokens": 9, "completion_tokens": tokens}
        elif nulls and draw(st.integers(0, 5)):
            chunk["usage"] = None
        if draw(st.booleans()):
            chunk["system_fingerprint"] = draw(st.sampled_from(["fp_a", "fp_b", "", None]))
        if draw(st.integers(0, 4)) == 0:
            chunk["service_tier"] = draw(st.sampled_from(["default", "priority", None]))
        rest.append([data(chunk, compact=draw(st.integers(0, 4)) > 0)])
    extras: list[list[bytes]] = [
        [b": keep-alive"],
        [b': a "usage" in a comment'],
        [b"event: note", data({"note": "no needle"})],
        [data({"code": "overloaded", "error": "try later"})],
        [b'data: {"usage": {"prompt_tokens": 1,'],  # not JSON
        [data({**HEAD, "choices": [{"index": 0, "delta": {}}], "usage": None})],
        # a chunk that would wait with the nulls (usage null, choices once) but is not JSON,
        # and one whose null usage is nested while its own comes after, spaced
        [b'data: {"id":"chatcmpl-7","choices":[{"index":0}],"usage":null,'],
        [b'data: {"choices":[{"x":{"usage":null}}],"usage": {"prompt_tokens":3}}'],
        [b"data: " + b"z" * draw(st.integers(1, 600))],
        [data({"pad": "y" * draw(st.integers(1, 600)), "error": None})],
        # usage beside an error (read as the error: no top-level choices), or beside "[DONE]"
        [data({"x": {"choices": [{}]}, "error": {"code": "e"}, "usage": {"prompt_tokens": 4}})],
        [data({**HEAD, "choices": [{"delta": {"content": "[DONE]"}}], "usage": {}})],
    ]
    for extra in draw(st.lists(st.sampled_from(extras), max_size=4)):
        rest.insert(draw(st.integers(0, len(rest))), extra)
    if draw(st.integers(0, 5)):
        usage = {"prompt_tokens": 9, "completion_tokens": tokens + 1, "total_tokens": tokens + 10}
        rest.append([data({**HEAD, "choices": [], "usage": usage})])
    if draw(st.integers(0, 5)):
        rest.append([b"data: [DONE]"])
    return events + rest


@settings(max_examples=150, deadline=None)
@given(events=streams(), filtering=st.booleans(), draw=st.data())
def test_a_compressed_stream_quietly_read_gives_the_same(
    events: list[list[bytes]], filtering: bool, draw: st.DataObject
) -> None:
    """gzip: a filtering tap forwards the decoded bytes, less the usage chunk."""
    body = frames(draw.draw, events)
    cuts = draw.draw(st.lists(st.integers(0, len(gzip.compress(body))), max_size=12))
    quiet_as_slow(body, cuts, filtering, gzipped=True)


@settings(max_examples=1000, deadline=None)
@given(
    events=streams(),
    filtering=st.booleans(),
    cap=st.sampled_from([MAX_SCAN_BYTES, 300, 700]),
    hold=st.sampled_from([sse._QUIET_HOLD, 1, 90]),
    draw=st.data(),
)
def test_the_quiet_path_gives_what_reading_every_event_gives(
    events: list[list[bytes]], filtering: bool, cap: int, hold: int, draw: st.DataObject
) -> None:
    """Reads cut anywhere, or as a paced stream's are: whole events (each event alone, or a
    drawn few together, or each end a byte or two off, or anywhere in a run of line endings:
    between the CR and LF of a CRLF, inside an odd run), which a quiet filtering tap passes on
    as they came when they name no needle (`EventTap.feed`'s first test)."""
    body = frames(draw.draw, events)
    cap = cap_clear_of_the_edge(body, cap)
    ends = event_ends(body)
    how = draw.draw(st.integers(0, 4))
    if how == 0:
        cuts = draw.draw(st.lists(st.integers(0, len(body)), max_size=12))
    elif how == 1:
        cuts = ends
    elif how == 2:
        cuts = draw.draw(st.lists(st.sampled_from(ends), max_size=len(ends)))
    elif how == 3:
        cuts = [end + draw.draw(st.integers(-2, 2)) for end in ends]
    else:
        runs = [i for m in _ENDINGS.finditer(body) for i in range(m.start() + 1, m.end() + 1)]
        cuts = draw.draw(st.lists(st.sampled_from(runs), min_size=len(runs) // 2))
    quiet_as_slow(body, cuts, filtering, cap, quiet_hold=hold)


@settings(max_examples=150, deadline=None)
@given(events=streams(), filtering=st.booleans(), draw=st.data())
def test_a_compressed_stream_flushed_per_event_gives_the_same(
    events: list[list[bytes]], filtering: bool, draw: st.DataObject
) -> None:
    """gzip flushed after each event (as a server compressing a stream does), read a flush at
    a time: each read decodes to whole events."""
    body = frames(draw.draw, events)
    gz = zlib.compressobj(wbits=31)
    pieces = [gz.compress(event) + gz.flush(zlib.Z_SYNC_FLUSH) for event in split_events(body)]
    sent = b"".join([*pieces, gz.flush()])
    cuts = list(itertools.accumulate(map(len, pieces)))
    quiet, out = meter_chat_stream(ChatStream, sent, cuts, filtering, coding="gzip")
    slow, slow_out = meter_chat_stream(SlowChatStream, sent, cuts, filtering, coding="gzip")
    assert out == slow_out
    assert booked(quiet) == booked(slow)


def _chunk(word: str) -> bytes:
    return data({**HEAD, "choices": [{"index": 0, "delta": {"content": word}}]}) + LF + LF


_USAGE_CHUNK = data({**HEAD, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
_USAGE_READ = _USAGE_CHUNK + LF + LF
# Reads ending in LF LF with no needle, but not at an event's end as `EVENT_END` pairs
# endings (or left in a mode by the read before): each must go the long way.
NEAR_WHOLE = {
    "an odd run of LFs, then the usage chunk": [_chunk("a") + LF, _USAGE_READ],
    "an odd run through a CRLF": [_chunk("a")[:-2] + LF + CRLF + LF, _USAGE_READ],
    "a lone CR, then LF LF": [_chunk("a")[:-2] + CR + LF + LF, _USAGE_READ],
    "the LF of a CRLF cut from its CR": [
        _chunk("a")[:-2] + CRLF + CR,
        LF + _chunk("b"),
        LF + _USAGE_READ,
    ],
    "after the usage chunk, a CRLF cut": [
        _USAGE_READ,
        _chunk("a"),
        _chunk("b")[:-2] + CRLF + CR,
        LF + _chunk("c"),
        _USAGE_READ,
    ],
}


@pytest.mark.parametrize("filtering", [True, False], ids=["filters", "reads"])
@pytest.mark.parametrize("reads", list(NEAR_WHOLE))
def test_reads_near_whole_events_give_what_reading_every_event_gives(
    reads: str, filtering: bool
) -> None:
    pieces = [_chunk("Hi"), *NEAR_WHOLE[reads], b"data: [DONE]" + LF + LF]
    quiet_as_slow(b"".join(pieces), list(itertools.accumulate(map(len, pieces))), filtering)


@pytest.mark.parametrize("filtering", [True, False], ids=["filters", "reads"])
def test_a_paced_streams_reads_without_a_needle_go_out_as_they_came(filtering: bool) -> None:
    """Once quiet, a read of whole events naming no needle is neither split nor copied: a
    filtering tap hands back the very bytes it got (nothing held), a reading one None (it
    holds them unsplit). Reads that name one (usage, ``[DONE]`` once usage is read) still
    go the long way."""
    chunks = [
        data({**HEAD, "choices": [{"index": 0, "delta": {"content": w}}],
              "system_fingerprint": "fp"}) + b"\n\n"
        for w in ("Hi", " there", ",", " you")
    ]  # fmt: skip
    two = chunks[2] + chunks[3]  # two events in one read
    usage = data({**HEAD, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}})
    reads = [chunks[0], chunks[1], two, usage + b"\n\n", b"data: [DONE]\n\n"]
    record = make_record(stream=True)
    record.usage_injected = filtering
    tap = ChatStream(record, lambda: 2.0, "", filtering=filtering)
    with patch.object(ChatStream, "_split", autospec=True, side_effect=ChatStream._split) as split:
        outs = [tap.feed(read) for read in reads]
    for read, out in zip(reads[1:3], outs[1:3], strict=True):
        assert out is (read if filtering else None)
    # Split: the first read (the tap is not quiet yet), then the usage chunk and the [DONE]
    # after it (usage is read: it closes the count), each with the needles.
    assert [call.args[1] is None for call in split.call_args_list] == [True, False, False]
    assert not tap.finish(True)  # nothing held back
    if filtering:
        assert outs[3:] == [b"", b"data: [DONE]\n\n"]
    assert record.usage == Usage(input_tokens=5, output_tokens=4)
    assert (record.metered, record.fingerprint) == (True, "fp")


def test_the_usage_chunk_is_stripped_wherever_the_chunks_cut_it() -> None:
    """A burst's usage chunk, cut at every byte (and at every pair of bytes nearby): the
    client gets every other byte, the record the final usage."""
    content = [
        data({**HEAD, "choices": [{"index": 0, "delta": {"content": w}}]}) + b"\r\n\r\n"
        for w in ("Hi", " there", "!")
    ]
    usage = data({**HEAD, "choices": [], "usage": {"prompt_tokens": 31, "completion_tokens": 9}})
    body = b"".join(content) + usage + b"\n\n" + b"data: [DONE]\r\r"
    at = body.index(usage)
    for i in range(at - 3, len(body)):
        for j in (i + 1, i + 2, len(body) - 1):
            record, out = meter_chat_stream(ChatStream, body, [i, j], True, MAX_SCAN_BYTES, "")
            assert out == body.replace(usage + b"\n\n", b""), (i, j)
            assert record.usage == Usage(input_tokens=31, output_tokens=9), (i, j)
            assert record.metered and record.ttft_ms == 2000.0


def test_a_burst_is_forwarded_in_one_slice_and_usage_on_every_chunk_read_once() -> None:
    """Usage on every chunk, the whole stream in one read: the tap reads the first chunk and
    the last usage-bearing one (and ``[DONE]``), not the ones between."""
    chunks = [
        data({**HEAD, "choices": [{"index": 0, "delta": {"content": "w"}}],
              "usage": {"prompt_tokens": 9, "completion_tokens": n}, "system_fingerprint": "fp"})
        + b"\n\n"
        for n in range(1, 101)
    ]  # fmt: skip
    body = b"".join(chunks) + b"data: [DONE]\n\n"
    record = make_record(stream=True)
    record.usage_injected = True
    tap = ChatStream(record, lambda: 2.0, "", filtering=True)
    reads: list[bytes] = []
    on_event = tap.on_event

    def counting(event: bytes) -> bool:
        reads.append(event)
        return on_event(event)

    tap.on_event = counting  # type: ignore[method-assign]
    assert tap.feed(body) + (tap.finish(True) or b"") == body
    assert reads == [chunks[0], b"data: [DONE]\n\n"]  # (the last chunk: read in one go)
    assert record.usage == Usage(input_tokens=9, output_tokens=100)
    assert (record.metered, record.fingerprint) == (True, "fp")


def _null_chunk(n: int, fingerprint: str = "fp") -> bytes:
    """An OpenAI-style content chunk of a stream asked ``include_usage``: usage null."""
    chunk = {**HEAD, "choices": [{"index": 0, "delta": {"content": f"w{n}"}}]}
    return data({**chunk, "system_fingerprint": fingerprint, "usage": None}) + b"\n\n"


def _both(body: bytes, filtering: bool, cuts: list[int] | None = None) -> CallRecord:
    """The quiet tap's record, checked against the slow one's (and the bytes out)."""
    return quiet_as_slow(body, cuts or [], filtering)


def test_a_burst_of_null_usage_chunks_is_read_once_and_metered_by_its_usage_chunk() -> None:
    """OpenAI's streams with ``include_usage``: ``"usage":null`` on every content chunk, the
    usage chunk last. In one read, the tap decodes the first chunk, the last null one (its
    fingerprint), the usage chunk and ``[DONE]``: not the 98 between."""
    chunks = [_null_chunk(n) for n in range(100)]
    usage = data({**HEAD, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 7}})
    body = b"".join(chunks) + usage + b"\n\ndata: [DONE]\n\n"
    record = make_record(stream=True)
    record.usage_injected = True
    tap = ChatStream(record, lambda: 2.0, "", filtering=True)
    decoded: list[bytes] = []

    def counting(data: bytes) -> dict[str, Any] | None:
        decoded.append(data)
        return loads_object(data)

    with (
        patch("daemon.dialects.sse.loads_object", counting),
        patch("daemon.dialects.chat.loads_object", counting),
    ):
        assert tap.feed(body) + (tap.finish(True) or b"") == b"".join(chunks) + b"data: [DONE]\n\n"
    assert decoded == [sse_data(chunks[0]), sse_data(chunks[-1]), sse_data(usage)]
    assert record.usage == Usage(input_tokens=9, output_tokens=7)
    assert (record.metered, record.fingerprint) == (True, "fp")
    for filtering in (False, True):
        _both(body, filtering)


@pytest.mark.parametrize("filtering", [False, True])
def test_a_null_run_that_hid_a_chunk_that_is_not_json_still_says_malformed(
    filtering: bool,
) -> None:
    """A chunk of a null run that is not JSON, read by none, still makes a stream that ends
    without usage ``malformed`` (as reading it would have), not ``no_usage``: the run is held
    and checked at the end. Usage read later makes it moot."""
    broken = b'data: {"id":"chatcmpl-7","choices":[{"index":0}],"usage":null,\n\n'
    chunks = [_null_chunk(n) for n in range(5)]
    body = b"".join(chunks[:2]) + broken + b"".join(chunks[2:]) + b"data: [DONE]\n\n"
    record = _both(body, filtering)
    assert record.unmetered_reason is Unmetered.MALFORMED
    usage = data({**HEAD, "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}})
    record = _both(body.replace(b"data: [DONE]", usage + b"\n\ndata: [DONE]"), filtering)
    assert record.usage == Usage(input_tokens=2, output_tokens=1)


@pytest.mark.parametrize("filtering", [False, True])
def test_usage_in_a_null_run_spaced_or_beside_a_nested_null_is_read(filtering: bool) -> None:
    """A chunk that waits with the nulls (its first "usage" is a nested null) but carries its
    own usage after it, spaced: the run is read in turn, so that usage counts."""
    odd = data({**HEAD, "choices": [{"index": 0, "x": {"usage": None}}]})[:-1]
    odd += b',"usage": {"prompt_tokens": 4, "completion_tokens": 3}}\n\n'
    chunks = [_null_chunk(n) for n in range(4)]
    body = b"".join(chunks[:2]) + odd + b"".join(chunks[2:]) + b"data: [DONE]\n\n"
    assert _both(body, filtering).usage == Usage(input_tokens=4, output_tokens=3)


@pytest.mark.parametrize("filtering", [False, True])
def test_a_fingerprint_that_changes_inside_a_null_burst_is_the_last_non_empty(
    filtering: bool,
) -> None:
    """The backend changes mid-burst and the last chunk names an empty fingerprint: the
    record keeps the last non-empty one, as reading every chunk would."""
    chunks = [_null_chunk(0, "fp_a"), *(_null_chunk(n, "fp_b") for n in range(1, 6))]
    chunks.append(_null_chunk(6, ""))
    body = b"".join(chunks) + b"data: [DONE]\n\n"
    assert _both(body, filtering).fingerprint == "fp_b"


@pytest.mark.parametrize("extra", [1, 2, 3])
def test_a_null_burst_ends_where_splitting_it_would_before_an_odd_run_of_lfs(
    extra: int,
) -> None:
    """A blank line or two more after the last null chunk (an odd run of LFs opens the next
    event with a blank line of its own): the usage chunk stripped is the very bytes splitting
    the stream event by event strips, the extra LFs with it or not."""
    chunks = [_null_chunk(n) for n in range(6)]
    usage = data({**HEAD, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}})
    body = b"".join(chunks) + b"\n" * extra + usage + b"\n\ndata: [DONE]\n\n"
    for filtering in (False, True):
        assert _both(body, filtering).usage == Usage(input_tokens=5, output_tokens=6)


def _counted_chunk(n: int, usage: object = "cumulative") -> bytes:
    """A Nov 2024-style content chunk: cumulative usage on it (or the `usage` given)."""
    chunk = {**HEAD, "choices": [{"index": 0, "delta": {"content": f"w{n}"}}]}
    counted = {"prompt_tokens": 9, "completion_tokens": n} if usage == "cumulative" else usage
    return data({**chunk, "system_fingerprint": "fp", "usage": counted}) + b"\n\n"


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize(
    "middle",
    [
        # a usage chunk among them, spaced (not where a run is cut): stripped, and final
        b'data: {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 50}}\n\n',
        # a chunk without choices, with a usage the last one replaces
        data({**HEAD, "usage": {"prompt_tokens": 1, "completion_tokens": 99}}) + b"\n\n",
        # a chunk with choices as an empty list, spaced, and no usage
        b'data: {"choices": [ ], "usage": null}\n\n',
    ],
)
def test_a_cumulative_burst_read_in_one_go_gives_what_reading_each_gives(
    filtering: bool, middle: bytes
) -> None:
    """Usage on every chunk in one read: the last chunk's usage replaces theirs, unless a
    chunk among them may be a usage chunk (choices not a non-empty list): then each is read."""
    chunks = [_counted_chunk(n) for n in range(1, 40)]
    body = b"".join(chunks[:20]) + middle + b"".join(chunks[20:]) + b"data: [DONE]\n\n"
    _both(body, filtering)


@pytest.mark.parametrize("filtering", [False, True])
def test_a_burst_whose_last_usage_is_null_keeps_the_last_usage_object(filtering: bool) -> None:
    """Cumulative usage on the chunks, then null on the last ones: the last object counts."""
    chunks = [_counted_chunk(n) for n in range(1, 8)] + [_counted_chunk(8, None)] * 3
    body = b"".join(chunks) + b"data: [DONE]\n\n"
    assert _both(body, filtering).usage == Usage(input_tokens=9, output_tokens=7)


def _plain_null(n: int, extra: bytes = b"") -> bytes:
    """A null chunk without a fingerprint (`extra`: more members, written as given)."""
    return b'data: {"id":"c","choices":[{"index":0}],' + extra + b'"usage":null}\n\n'


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize(
    "body",
    [
        # usage under an escaped key beside a nested null, in a run whose last chunk settles
        # the fingerprint: reading each in turn counts it
        b"".join(_null_chunk(n) for n in range(3))
        + b'data: {"id":"c","choices":[{"index":0,"usage":null}],'
        b'"\\u0075sage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
        + b"".join(_null_chunk(n) for n in range(3, 6))
        + b"data: [DONE]\n\n",
        # a fingerprint under an escaped key; the last chunk names an empty one
        _null_chunk(0)
        + b"".join(_plain_null(n) for n in range(3))
        + _plain_null(3, b'"system_\\u0066ingerprint":"fp_x",')
        + _plain_null(4, b'"system_fingerprint":"",')
        + b"data: [DONE]\n\n",
        # usage named only on an event's own line: its data (a service tier) is never decoded
        # in turn, not even as the last of a run; spaced nulls after it
        _null_chunk(0)
        + b'event: "usage":null\ndata: {"id":"c","choices":[{}],"service_tier":"flex"}\n\n'
        + _null_chunk(1).replace(b'"usage":null', b'"usage": null') * 2
        + b"data: [DONE]\n\n",
    ],
)
def test_a_run_read_in_one_go_is_not_fooled_by_escapes_or_other_lines(
    filtering: bool, body: bytes
) -> None:
    """Runs are judged by their bytes: an escaped key could hide usage or a fingerprint (any
    ``\\u`` among them: read each in turn), and a needle outside an event's data lines does not
    make reading in turn decode it (nor may the run's last chunk be read for it)."""
    _both(body, filtering)


def test_a_long_read_that_is_no_run_is_judged_once_not_once_per_event() -> None:
    """Thousands of null events no run can take (the last is not JSON): the read is judged
    once, not again from each event after it (that was quadratic: 109 ms for 88 KB, every
    event decoding the same last one)."""
    events = [b'data: {"usage":null}\n\n'] * 2000 + [b'data: {"usage":null,\n\n']
    body = _null_chunk(0) + b"".join(events) + b"data: [DONE]\n\n"
    with patch.object(ChatStream, "_decoded", autospec=True, return_value=None) as decoded:
        _both(body, True)
    assert decoded.call_count == 1


def test_a_long_null_stream_holds_at_most_the_hold_unchecked() -> None:
    """A null run that never meets usage is held only up to `unverified_hold` bytes: past it,
    what is held is checked at once (a chunk not JSON among it still counts) and dropped."""
    broken = b'data: {"id":"chatcmpl-7","choices":[{"index":0}],"usage":null,\n\n'
    chunks = [_null_chunk(n) for n in range(400)]
    body = chunks[0] + broken + b"".join(chunks[1:]) + b"data: [DONE]\n\n"
    record = make_record(stream=True)
    tap = ChatStream(record, lambda: 2.0, "")
    tap.unverified_hold = 4096
    for at in range(0, len(body), 5000):
        tap.feed(body[at : at + 5000])
        assert tap._unverified_bytes <= tap.unverified_hold
    tap.finish(True)
    assert record.unmetered_reason is Unmetered.MALFORMED
    assert _both(body, False, list(range(0, len(body), 5000))).unmetered_reason is (
        Unmetered.MALFORMED
    )


def test_a_tap_that_breaks_after_the_lf_of_a_split_crlf_still_owes_it() -> None:
    """The relay writes `abandon()` in place of a chunk a filtering tap raised on: the LF that
    ends the last event (its CR came in the chunk before) is owed as well as the rest."""

    class Breaking(ChatStream):
        def read(self, obj: dict[str, Any]) -> bool:
            if "usage" in obj:
                raise RuntimeError("a tap bug")
            return super().read(obj)

    record = make_record(stream=True)
    tap = Breaking(record, lambda: 2.0, "", filtering=True)
    first = data({**HEAD, "choices": [{"index": 0, "delta": {"content": "Hi"}}]}) + b"\r\n\r"
    rest = b"\n" + data({**HEAD, "choices": [], "usage": {"prompt_tokens": 1}}) + b"\n\n"
    assert tap.feed(first) == first
    with pytest.raises(RuntimeError):
        tap.feed(rest)
    assert tap.abandon() == rest
