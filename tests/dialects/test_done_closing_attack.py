"""The chat tap's ``[DONE]`` as `EventTap.closing`: it makes final only the usage read before it,
so while no usage is read the quiet path looks for it only from the first other needle of the
bytes it searches (`EventTap._quiet`). Adversarial streams for that rule: ``[DONE]`` before and
after usage (cumulative, null, the usage chunk), beside errors, in content, in comments, with
other lines before or after its data line, events over the cap, CR and CRLF endings, every cut,
gzip, streams cut short. Whatever the stream, the quiet tap must give the client the very bytes
and the record the very values that reading every event in turn gives (`SlowChatStream`)."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.dialects import sse
from daemon.dialects.base import MAX_SCAN_BYTES
from daemon.dialects.chat import ChatStream
from daemon.record import Unmetered
from daemon.testing import SlowChatStream as SlowStream
from daemon.testing import (
    cap_clear_of_the_edge,
    drawn_cuts,
    meter_chat_stream,
    quiet_as_slow,
    sse_frames,
)

LF, CRLF, CR = b"\n", b"\r\n", b"\r"
HEAD: dict[str, Any] = {"id": "chatcmpl-d", "object": "chat.completion.chunk", "model": "grok-4.7"}


def data(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj)


FIRST = data({**HEAD, "choices": [{"index": 0, "delta": {"content": "Hi"}}]})


def counted(n: int, content: str = "x") -> bytes:
    """A Nov 2024 content chunk: cumulative usage on it (provisional until ``[DONE]``)."""
    usage = {"prompt_tokens": 9, "completion_tokens": n}
    return data({**HEAD, "choices": [{"index": 0, "delta": {"content": content}}], "usage": usage})


def null(content: str = "n") -> bytes:
    return data({**HEAD, "choices": [{"index": 0, "delta": {"content": content}}], "usage": None})


USAGE_CHUNK = data({**HEAD, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}})
NEEDLES = ChatStream.needles
PAD = "p" * 40  # a line long enough to push "[DONE]" out of the bytes kept for a split needle

# The ways an event may say [DONE] (its data is exactly that) or seem to (it is not).
_DONES: list[list[bytes]] = [
    [b"data: [DONE]"],
    [b"data:[DONE]"],
    [b": before", b"data: [DONE]"],
    [b"event: done", b"id: 1", b"data: [DONE]"],
    [b"data: [DONE]", b'event: "usage"'],  # a needle after it, outside its data
    [b': "error"', b"data: [DONE]"],
    [b": [DONE]"],  # a comment
    [b"data: [DONE]", b": short"],
    # (the shapes of the counterexamples below: a long line after the data line, and events
    # whose data names [DONE] but is not it)
    [b"data: [DONE]", b": " + PAD.encode()],
    [b"data: [DONE]", b"id: " + PAD.encode()],
    [b"data: [DONE] "],
    [b"data: [DONE]", b"data: more"],
    [data({**HEAD, "choices": [{"delta": {"content": "[DONE]"}}], "service_tier": "flex"})],
    [b"data: " + b"[DONE]" * 30],
]


@st.composite
def done_streams(draw: st.DrawFn) -> list[list[bytes]]:
    """A first chunk, then a drawn mix of cumulative and null content chunks, plain chunks,
    errors, comments, ``[DONE]`` events of many shapes (often several, before and after usage),
    chunks with "[DONE]" in their content beside usage, the usage chunk, a big event (with a
    needle or not)."""
    n = 0
    events: list[list[bytes]] = [[FIRST]]
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.integers(0, 11))
        if kind <= 2:
            n += 1
            events.append([counted(n, draw(st.sampled_from(["x", "[DONE]", "usage"])))])
        elif kind == 3:
            events.append([null(draw(st.sampled_from(["n", "[DONE]"])))])
        elif kind == 4:
            events.append([data({"code": "overloaded", "error": "try later"})])
        elif kind == 5:
            events.append([USAGE_CHUNK])
        elif kind == 6:
            events.append(
                [draw(st.sampled_from([b': "usage"', b": keep-alive", b'data: {"usage":']))]
            )
        elif kind == 7:
            size = draw(st.integers(100, 700))
            pad = draw(st.sampled_from([b"z", b'"usage"', b'"error"']))
            events.append([b"data: " + (pad * size)[:size]])
        else:
            events.append(draw(st.sampled_from(_DONES)))
    return events


# --- the counterexamples a helper found in the rule's first cut (fixed) ----------------------

# A: a cumulative usage chunk whose "usage" came in the chunk before (the tap holds it, unread),
# then a [DONE] event with a long line after its data line, ended only in the next chunk. The
# chunk that completes the usage chunk names no usage or error, so [DONE] is not looked for in
# it; the split reads the usage, and the held [DONE] event must then be marked as holding a
# needle: the next chunk looks for one only in its last 31 bytes. (It went unread in the first
# cut of the rule, and the call was booked `incomplete`.)
_COUNTED = counted(3)
_LONG_DONE = b"data: [DONE]\n: " + PAD.encode() + b"\n\n"
HELD_DONE = FIRST + b"\n\n" + _COUNTED + b"\n\n" + _LONG_DONE
HELD_DONE_CUTS = [
    len(FIRST) + 2 + _COUNTED.index(b'"usage"') + 32,  # after "usage", beyond the overlap
    len(HELD_DONE) - len(_LONG_DONE) + 6 + 32,  # after [DONE], beyond the overlap
]
# B: an event whose data names "[DONE]" but is not the marker (a chunk with "[DONE]" in its
# content, beside a fingerprint and a service tier; data that is not JSON). It is content like
# any other (`EventTap.names_needle`): neither tap reads it. (In the first cut of the rule the
# slow tap still decoded it, and the quiet one, no longer looking for [DONE] before usage, did
# not: the fingerprint, the tier and `malformed` differed.) Whole, uncut.
_FP_FIRST = data({**HEAD, "system_fingerprint": "fp_a", "choices": [{"delta": {"content": "Hi"}}]})
_DONE_IN_CONTENT = data(
    {**HEAD, "system_fingerprint": "fp_b", "service_tier": "priority",
     "choices": [{"index": 0, "delta": {"content": "[DONE]"}}]}
)  # fmt: skip
DONE_IN_CONTENT = b"".join(e + b"\n\n" for e in (_FP_FIRST, _DONE_IN_CONTENT, USAGE_CHUNK))
NOT_QUITE_DONE = FIRST + b"\n\ndata: [DONE] \n\n"  # not the marker, not JSON: unread


@pytest.mark.parametrize("filtering", [False, True])
def test_a_done_held_while_its_usage_is_read_makes_it_final(filtering: bool) -> None:
    assert quiet_as_slow(HELD_DONE, HELD_DONE_CUTS, filtering).metered


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize("body", [DONE_IN_CONTENT, NOT_QUITE_DONE], ids=["content", "malformed"])
def test_an_event_naming_done_before_usage_is_read(filtering: bool, body: bytes) -> None:
    quiet_as_slow(body, [], filtering)


@pytest.mark.parametrize("filtering", [False, True])
def test_what_both_taps_book_for_the_counterexamples(filtering: bool) -> None:
    for kind in (ChatStream, SlowStream):
        record, _ = meter_chat_stream(kind, HELD_DONE, HELD_DONE_CUTS, filtering)
        assert record.metered and record.unmetered_reason is None
        record, _ = meter_chat_stream(kind, DONE_IN_CONTENT, [], filtering)
        assert (record.fingerprint, record.service_tier) == ("fp_a", None)
        assert record.metered
        record, _ = meter_chat_stream(kind, NOT_QUITE_DONE, [], filtering)
        assert record.unmetered_reason is Unmetered.NO_USAGE


# --- the examples ----------------------------------------------------------------------------


def _body(*events: bytes, end: bytes = LF + LF) -> bytes:
    return b"".join(e + end for e in (FIRST, *events))


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize("end", [LF + LF, CRLF + CRLF, CR + CR])
@pytest.mark.parametrize(
    ("events", "metered"),
    [
        ((b"data: [DONE]", counted(1)), False),  # [DONE] first closes nothing
        ((b"data: [DONE]", counted(1), b"data: [DONE]"), True),
        ((counted(1), b"data: [DONE]", counted(2)), True),  # final once: stays final
        ((null(), b"data: [DONE]", counted(1)), False),  # null usage is no usage
        ((counted(1, "[DONE]"), counted(2)), False),  # [DONE] in content closes nothing
        ((data({"code": "e", "error": "x"}), b"data: [DONE]", counted(1)), False),
        ((counted(1), data({"code": "e", "error": "x"}), b"data: [DONE]"), True),
        ((counted(1), b"data: " + b'"usage"' * 120, b"data: [DONE]"), False),  # too large
        ((b"data: [DONE]", USAGE_CHUNK), True),  # the usage chunk is final by itself
    ],
)
def test_done_before_and_after_usage_at_every_cut(
    filtering: bool, end: bytes, events: tuple[bytes, ...], metered: bool
) -> None:
    """Every single cut and every pair a few bytes apart (and one far): same as the slow tap."""
    body = _body(*events, end=end)
    for i in range(len(FIRST), len(body)):
        for j in (i + 1, i + 7, i + 33):
            quiet_as_slow(body, [i, j], filtering, cap=700)
        quiet_as_slow(body, [i], filtering, cap=700, complete=False)
    assert quiet_as_slow(body, [], filtering, cap=700).metered is metered


# --- the properties --------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    events=done_streams(),
    endings=st.sampled_from(["lf", "mixed"]),
    filtering=st.booleans(),
    cap=st.sampled_from([MAX_SCAN_BYTES, 300, 700]),
    quiet_hold=st.sampled_from([sse._QUIET_HOLD, 1, 90]),
    complete=st.booleans(),
    draw=st.data(),
)
def test_done_closing_gives_what_reading_every_event_gives(
    events: list[list[bytes]],
    endings: str,
    filtering: bool,
    cap: int,
    quiet_hold: int,
    complete: bool,
    draw: st.DataObject,
) -> None:
    body = sse_frames(draw.draw, events, endings)
    cap = cap_clear_of_the_edge(body, cap)
    quiet_as_slow(
        body,
        drawn_cuts(draw.draw, body, NEEDLES, 40),
        filtering,
        cap,
        quiet_hold=quiet_hold,
        complete=complete,
    )


@settings(max_examples=80, deadline=None)
@given(events=done_streams(), filtering=st.booleans(), draw=st.data())
def test_compressed_done_streams_give_the_same(
    events: list[list[bytes]], filtering: bool, draw: st.DataObject
) -> None:
    body = sse_frames(draw.draw, events, "lf")
    cuts = draw.draw(st.lists(st.integers(0, len(gzip.compress(body))), max_size=8))
    quiet_as_slow(body, cuts, filtering, gzipped=True)


def test_unmetered_reason_of_a_stream_that_goes_on_after_done() -> None:
    record = quiet_as_slow(_body(b"data: [DONE]", counted(4)), [], False)
    assert record.unmetered_reason is Unmetered.INCOMPLETE
