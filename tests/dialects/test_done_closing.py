"""The chat tap's ``[DONE]`` as `EventTap.closing`: it makes final only the usage read before it,
and counts only as the marker itself (`EventTap.names_needle`), so while no usage is read the
quiet path looks for it only from the first other needle of the bytes it searches
(`EventTap._quiet`), and an event over the cap that names it is too large only once usage is
read (`EventTap._unread_needles`). Adversarial streams for that rule, from two fresh attacks:
``[DONE]`` before and after usage (cumulative, null, the usage chunk), beside errors, in content,
in comments, with other lines before or after its data line; runs of null, cumulative and plain
chunks that say "[DONE]" in their text (read in one go, deferred, held unchecked); usage read
feeds before ``[DONE]``; events over the cap; CR and CRLF endings; every cut; gzip; streams cut
short; a reading tap that finishes holding bytes. Whatever the stream, the quiet tap must give
the client the very bytes and the record the very values that reading every event in turn gives
(`SlowChatStream`). Each counterexample the attacks found is pinned below, fixed."""

from __future__ import annotations

import gzip
import json
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


def data(obj: object, compact: bool = True) -> bytes:
    return b"data: " + (orjson.dumps(obj) if compact else json.dumps(obj).encode())


def content(text: str, usage: object = "none", **extra: Any) -> bytes:
    """A content chunk saying `text`; `usage` None (a null chunk), an int (cumulative usage
    with that many completion tokens) or "none" (no usage named)."""
    chunk: dict[str, Any] = {**HEAD, "choices": [{"index": 0, "delta": {"content": text}}]}
    chunk.update(extra)
    if usage is None:
        chunk["usage"] = None
    elif isinstance(usage, int):
        chunk["usage"] = {"prompt_tokens": 9, "completion_tokens": usage}
    return data(chunk)


def counted(n: int, text: str = "x") -> bytes:
    """A Nov 2024 content chunk: cumulative usage on it (provisional until ``[DONE]``)."""
    return content(text, n)


def null(text: str = "n") -> bytes:
    return content(text, None)


FIRST = content("Hi")
DONE = b"data: [DONE]"
USAGE_CHUNK = data({**HEAD, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}})
NEEDLES = ChatStream.needles
PAD = "p" * 40  # a line long enough to push "[DONE]" out of the bytes kept for a split needle


def _body(*events: bytes, end: bytes = LF + LF) -> bytes:
    return b"".join(e + end for e in (FIRST, *events))


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
def marker_streams(draw: st.DrawFn) -> list[list[bytes]]:
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


# --- the first attack's counterexamples (fixed) ----------------------------------------------

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


# --- the second attack's counterexample (fixed): over the cap, naming [DONE], before usage ----

CAP = 300
_BIG_TEXT = content("[DONE] " + "z" * 400)  # a chunk over the cap that says [DONE]
_BIG_MARKER = DONE + LF + b": " + b"p" * 400  # the marker itself, with a long comment line
BIG_TEXT = _body(_BIG_TEXT)
BIG_MARKER = _body(_BIG_MARKER)
BIG_THEN_COUNT = _body(_BIG_TEXT, content("x", 3))  # a provisional count after it


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize(
    ("body", "cut"),
    [
        (BIG_TEXT, 0),
        (BIG_TEXT, len(FIRST) + 2),  # the big event whole in the second feed
        (BIG_TEXT, len(FIRST) + 2 + 150),  # under the cap in the first feed, past it in the next
        (BIG_MARKER, 0),
        (BIG_THEN_COUNT, 0),
    ],
    ids=["text-whole", "text-second-feed", "text-crosses-cap", "marker", "then-count"],
)
def test_an_event_over_the_cap_naming_done_before_usage(
    filtering: bool, body: bytes, cut: int
) -> None:
    """It closes nothing, read or not: not too large, whichever feed takes it past the cap."""
    record = quiet_as_slow(body, [cut], filtering, cap=CAP)
    provisional = body is BIG_THEN_COUNT
    assert record.unmetered_reason is (Unmetered.INCOMPLETE if provisional else Unmetered.NO_USAGE)


@pytest.mark.parametrize("filtering", [False, True])
def test_an_event_over_the_cap_naming_done_before_usage_gzipped(filtering: bool) -> None:
    record = quiet_as_slow(BIG_TEXT, [7], filtering, cap=CAP, gzipped=True)
    assert record.unmetered_reason is Unmetered.NO_USAGE


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize("big", [_BIG_TEXT, _BIG_MARKER], ids=["text", "marker"])
@pytest.mark.parametrize("before", [content("x", 2), USAGE_CHUNK], ids=["counted", "usage-chunk"])
def test_an_event_over_the_cap_naming_done_after_usage_agrees(
    filtering: bool, big: bytes, before: bytes
) -> None:
    """With usage read, [DONE] is looked for everywhere: both taps skip the event as too large
    and drop the usage (a [DONE] after it closes nothing: no usage is left to close)."""
    body = _body(before, big, DONE)
    for i in range(len(FIRST), len(body), 5):
        quiet_as_slow(body, [i, i + 40], filtering, cap=CAP)
    assert quiet_as_slow(body, [], filtering, cap=CAP).unmetered_reason is Unmetered.TOO_LARGE


# --- runs whose chunks say "[DONE]" ----------------------------------------------------------


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize("end", [LF + LF, CRLF + CRLF, CR + CR])
@pytest.mark.parametrize(
    "events",
    [
        # a null run, one chunk saying [DONE] with a new fingerprint, the usage chunk
        (
            content("a", None, system_fingerprint="fp_a"),
            content("b", None),
            content("[DONE]", None, system_fingerprint="fp_b"),
            content("c", None, service_tier="flex"),
            content("d", None),
            USAGE_CHUNK,
            DONE,
        ),
        # a cumulative run, one chunk saying [DONE] in its text (no marker after: provisional)
        (content("a", 1), content("b", 2), content("[DONE]", 3), content("c", 4)),
        # the same, then the marker
        (content("a", 1), content("[DONE]", 2, system_fingerprint="fp_c"), content("c", 3), DONE),
        # a plain chunk saying [DONE] (never decoded) between null chunks, no usage at all
        (content("a", None), content("[DONE]", service_tier="t"), content("b", None), DONE),
        # a null chunk saying [DONE] that is not JSON, in a run that ends without usage
        (
            content("a", None),
            content("[DONE]", None)[:-1] + b",",
            content("b", None),
            content("c", None),
            DONE,
        ),
        # a cumulative chunk saying "data: [DONE]" (escaped newlines in its JSON text)
        (content("a", 1), content("\n\ndata: [DONE]\n\n", 2), content("b", 3), DONE),
    ],
    ids=["null", "counted", "counted-done", "plain", "broken-null", "newlines"],
)
def test_runs_naming_done_at_every_cut(
    filtering: bool, end: bytes, events: tuple[bytes, ...]
) -> None:
    body = _body(*events, end=end)
    for i in range(len(FIRST), len(body), 3):
        for j in (i + 1, i + 31, i + 97):
            quiet_as_slow(body, [i, j], filtering, hold=1)
        quiet_as_slow(body, [i], filtering, complete=False)
    quiet_as_slow(body, [], filtering, quiet_hold=1)
    quiet_as_slow(body, list(range(0, len(body), 9)), filtering, quiet_hold=90, hold=200)


@pytest.mark.parametrize("filtering", [False, True])
def test_a_long_null_run_with_done_in_its_text_held_unchecked(filtering: bool) -> None:
    """Hundreds of null chunks, every tenth saying [DONE], one not JSON: runs read in one go,
    held unchecked past `unverified_hold` and checked; no usage, so ``malformed``."""
    chunks = [content("[DONE]" if n % 10 == 3 else f"w{n}", None) for n in range(300)]
    chunks[57] = chunks[57][:-1] + b","
    body = _body(*chunks, DONE)
    for step in (4096, 997, 64):
        record = quiet_as_slow(body, list(range(0, len(body), step)), filtering, hold=500)
        assert record.unmetered_reason is Unmetered.MALFORMED


# --- usage read in an early feed, [DONE] much later ------------------------------------------


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize("quiet_hold", [sse._QUIET_HOLD, 1, 500])
@pytest.mark.parametrize("end", [LF + LF, CRLF + CRLF, CR + LF + CR])
def test_usage_read_early_then_done_many_feeds_later(
    filtering: bool, quiet_hold: int, end: bytes
) -> None:
    """A count on the first feed, a long burst of plain chunks (some saying "[DONE]"), then the
    marker: cut in small even pieces and at every byte around the marker."""
    plain = [content("[DONE]" if n % 7 == 0 else "w") for n in range(60)]
    for tail in ((DONE,), (DONE, content("late", 8)), (content("[DONE]"),)):
        body = _body(content("a", 1), *plain, *tail, end=end)
        at = body.rindex(b"[DONE]")
        for step in (13, 64, 501):
            quiet_as_slow(
                body, list(range(step, len(body), step)), filtering, quiet_hold=quiet_hold
            )
        for i in range(at - 40, min(at + 40, len(body))):
            quiet_as_slow(body, [len(FIRST) + 40, i], filtering, quiet_hold=quiet_hold)
            quiet_as_slow(body, [i], filtering, quiet_hold=quiet_hold, complete=False)


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize(
    "done",
    [
        DONE,
        DONE + LF + b": " + b"p" * 60,  # a long line after it
        b"id: " + b"q" * 50 + LF + DONE,  # a long line before it
        b"data:[DONE]",
    ],
    ids=["plain", "long-after", "long-before", "no-space"],
)
@pytest.mark.parametrize("end", [LF + LF, CRLF + CRLF, CR + CR, LF + CRLF])
def test_done_cut_right_where_usage_is_read(filtering: bool, done: bytes, end: bytes) -> None:
    """The count's event ends, and the marker starts, at every pair of cuts around the seam
    (the marker held partial, complete, or split inside its bytes, as usage is read)."""
    count = content("x", 4)
    body = _body(content("a", None), count, done, end=end)
    seam = body.index(count) + len(count)
    lo, hi = body.index(b'"usage"', seam - len(count)), len(body)
    for i in range(lo, hi):
        for j in (i + 1, i + 2, i + 5, i + 8, i + 13, i + 21, i + 32, i + 44):
            quiet_as_slow(body, [i, j], filtering)
    assert quiet_as_slow(body, [], filtering).metered


# --- too large, then [DONE]s -----------------------------------------------------------------


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize(
    "events",
    [
        # a count, dropped by a big event naming usage, then [DONE] (closes nothing), a count
        (content("a", 1), data({"pad": "u" * 500, "usage": None}), DONE, content("b", 2)),
        # the same with a [DONE] after the new count: final
        (content("a", 1), data({"pad": "u" * 500, "usage": None}), DONE, content("b", 2), DONE),
        # a count, a big error, a chunk saying [DONE], the usage chunk, [DONE]
        (content("a", 1), data({"error": "e" * 500}), content("[DONE]"), USAGE_CHUNK, DONE),
        # big events naming usage on a comment line only, around [DONE]s
        (DONE, b': "usage"' + b"p" * 500, content("a", 1), DONE, b': "usage"' + b"q" * 500),
    ],
    ids=["dropped", "dropped-then-final", "error", "comments"],
)
def test_usage_dropped_by_an_event_over_the_cap_then_done(
    filtering: bool, events: tuple[bytes, ...]
) -> None:
    body = _body(*events)
    for i in range(len(FIRST), len(body), 3):
        for j in (i + 1, i + 29, i + 333):
            quiet_as_slow(body, [i, j], filtering, cap=CAP)
        quiet_as_slow(body, [i], filtering, cap=CAP, complete=False)
        quiet_as_slow(body, [i], filtering, cap=CAP, quiet_hold=1)


# --- a reading tap that finishes holding bytes -----------------------------------------------


@pytest.mark.parametrize("last", [DONE, b"data:[DONE]", DONE + CR, content("[DONE]"), b": [DONE]"])
@pytest.mark.parametrize("usage", [None, 3], ids=["null", "counted"])
def test_a_reading_tap_finishes_holding_an_unended_last_event(
    last: bytes, usage: int | None
) -> None:
    """No blank line after the last event: a reading tap holds it (and the plain chunks before
    it, under `_QUIET_HOLD`) to the end, and `finish` reads it."""
    body = _body(content("a", usage), *(content("w") for _ in range(5))) + last
    for i in range(len(FIRST), len(body)):
        quiet_as_slow(body, [i], False)
        quiet_as_slow(body, [i, i + 3], False, quiet_hold=100)
        quiet_as_slow(body, [i], False, complete=False)


# --- the properties: over both attacks' streams -----------------------------------------------

_TEXTS = ["x", "[DONE]", "say [DONE] now", "data: [DONE]", '"usage"', "[DONE]\n\n", ""]
_RUN_DONES: list[list[bytes]] = [  # (run_streams' own mix of markers)
    [DONE],
    [b"data:[DONE]"],
    [b": c", DONE],
    [DONE, b": " + b"p" * 40],
    [DONE, b"id: " + b"q" * 50],
    [b"data: [DONE] "],
    [b": [DONE]"],
    [DONE, DONE],
    [b"event: done", DONE],
]
_OTHERS: list[list[bytes]] = [
    [b": keep-alive"],
    [data({"code": "overloaded", "error": "later"})],
    [b'data: {"usage":null,"content":"[DONE]"'],  # not JSON, names usage and [DONE]
    [content("[DONE]", None)[:-1] + b","],  # a null chunk saying [DONE], not JSON
    [b'data: {"choices":[{"delta":{"content":"[DONE]"}}],"\\u0075sage":{"prompt_tokens":4}}'],
    [b'data: {"choices":[{"x":{"usage":null}}],"\\u0075sage":{"prompt_tokens":5},"c":"[DONE]"}'],
    [b': "usage"', content("[DONE]", system_fingerprint="fp_c")],
    [DONE, b'data: {"usage":{"prompt_tokens":1}}'],  # data "[DONE]\n{...}": names usage, no JSON
    [data({**HEAD, "choices": [], "usage": None, "system_fingerprint": "fp_z"})],
]
_FIRSTS = [
    FIRST,
    content("Hi", None),
    content("Hi", 1),
    data({**HEAD, "choices": [{"index": 0, "delta": {"role": "assistant"}}], "usage": None}),
]


@st.composite
def _chunk(draw: st.DrawFn, kind: str) -> bytes:
    extra: dict[str, Any] = {}
    if draw(st.integers(0, 2)) == 0:
        extra["system_fingerprint"] = draw(st.sampled_from(["fp_a", "fp_b", "", None]))
    if draw(st.integers(0, 4)) == 0:
        extra["service_tier"] = draw(st.sampled_from(["flex", "", None]))
    usage: object = {"null": None, "plain": "none"}.get(kind, draw(st.integers(0, 50)))
    raw = content(draw(st.sampled_from(_TEXTS)), usage, **extra)
    return raw if draw(st.integers(0, 5)) else data(json.loads(raw[6:]), compact=False)


@st.composite
def _big(draw: st.DrawFn) -> list[bytes]:
    size = draw(st.integers(120, 900))
    fill = (draw(st.sampled_from([b"z", b"[DONE]", b'"usage"', b'"error"'])) * size)[:size]
    where = draw(st.sampled_from(["data", "comment", "chunk"]))
    if where == "data":
        return [b"data: " + fill]
    if where == "comment":
        return [b": " + fill, DONE] if draw(st.booleans()) else [DONE, b": " + fill]
    return [_chunk_with(fill.decode(), draw(st.sampled_from(["null", "counted", "plain"])))]


def _chunk_with(text: str, kind: str) -> bytes:
    return content(text, {"null": None, "counted": 77}.get(kind, "none"))


@st.composite
def run_streams(draw: st.DrawFn) -> list[list[bytes]]:
    """Runs of null, cumulative or plain chunks saying "[DONE]" or not, [DONE] markers of many
    shapes, usage chunks, errors, broken and escaped chunks, events over the small caps."""
    events: list[list[bytes]] = [[draw(st.sampled_from(_FIRSTS))]]
    for _ in range(draw(st.integers(1, 18))):
        k = draw(st.integers(0, 15))
        if k <= 3:
            kind = draw(st.sampled_from(["null", "counted", "plain"]))
            events += [[draw(_chunk(kind))] for _ in range(draw(st.integers(1, 6)))]
        elif k <= 5:
            events.append(draw(st.sampled_from(_RUN_DONES)))
        elif k <= 7:
            events.append(draw(st.sampled_from(_OTHERS)))
        elif k == 8:
            usage = {"prompt_tokens": 9, "completion_tokens": draw(st.integers(0, 9))}
            events.append([data({**HEAD, "choices": [], "usage": usage})])
        elif k == 9:
            events.append(draw(_big()))
        else:
            events.append([draw(_chunk(draw(st.sampled_from(["null", "counted", "plain"]))))])
    return events


@settings(max_examples=600, deadline=None)
@given(
    events=st.one_of(marker_streams(), run_streams()),
    endings=st.sampled_from(["lf", "lf", "mixed"]),
    filtering=st.booleans(),
    cap=st.sampled_from([MAX_SCAN_BYTES, 150, 300, 700]),
    quiet_hold=st.sampled_from([sse._QUIET_HOLD, 1, 90, 400]),
    complete=st.booleans(),
    hold=st.sampled_from([None, 1, 200]),
    draw=st.data(),
)
def test_done_closing_gives_what_reading_every_event_gives(
    events: list[list[bytes]],
    endings: str,
    filtering: bool,
    cap: int,
    quiet_hold: int,
    complete: bool,
    hold: int | None,
    draw: st.DataObject,
) -> None:
    body = sse_frames(draw.draw, events, endings, 3)
    cap = cap_clear_of_the_edge(body, cap)
    quiet_as_slow(
        body,
        drawn_cuts(draw.draw, body, NEEDLES, 40),
        filtering,
        cap,
        hold,
        quiet_hold,
        complete,
    )


@settings(max_examples=120, deadline=None)
@given(events=st.one_of(marker_streams(), run_streams()), filtering=st.booleans(), draw=st.data())
def test_compressed_done_streams_give_the_same(
    events: list[list[bytes]], filtering: bool, draw: st.DataObject
) -> None:
    body = sse_frames(draw.draw, events, "lf")
    cuts = draw.draw(st.lists(st.integers(0, len(gzip.compress(body))), max_size=8))
    quiet_as_slow(body, cuts, filtering, gzipped=True)


def test_unmetered_reason_of_a_stream_that_goes_on_after_done() -> None:
    record = quiet_as_slow(_body(b"data: [DONE]", counted(4)), [], False)
    assert record.unmetered_reason is Unmetered.INCOMPLETE
