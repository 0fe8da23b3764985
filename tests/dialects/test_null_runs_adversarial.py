"""Adversarial streams for the chat tap's ``"usage":null`` runs (`ChatStream._take_run`,
`ChatStream._read_deferred`'s null branch, `ChatStream._hold_unverified`): long runs of null
chunks, fingerprints and service tiers that change, go empty or null, nested and spaced nulls,
usage objects inside a run, chunks that are not JSON, chunks that name no usage, needles in
comments, escaped keys, errors, ``[DONE]`` anywhere, odd runs of blank lines, CRLF and CR
endings, every cut, small caps, small holds, gzip. Whatever the stream, the quiet tap must give
the client the very bytes and the record the very values that reading every event in turn gives
(`SlowStream`, as in tests/dialects/test_quiet_path.py)."""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.dialects import sse
from daemon.dialects.base import MAX_SCAN_BYTES
from daemon.testing import (
    cap_clear_of_the_edge,
    drawn_cuts,
    quiet_as_slow,
    sse_frames,
)

LF, CRLF, CR = b"\n", b"\r\n", b"\r"
HEAD: dict[str, Any] = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "grok-4.7"}
FIRST = b"data: " + orjson.dumps({**HEAD, "choices": [{"index": 0, "delta": {"content": "Hi"}}]})
# First chunks: content (the tap goes quiet after it), a role only (quiet from the first null
# chunk with content), no id (model and id known only later), usage null on it already.
_FIRSTS = [
    FIRST,
    b"data: "
    + orjson.dumps(
        {**HEAD, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    ),
    b"data: " + orjson.dumps({"model": "grok-4.7", "choices": [{"delta": {"content": "Hi"}}]}),
    b"data: "
    + orjson.dumps(
        {**HEAD, "system_fingerprint": "fp_0", "choices": [{"delta": {}}], "usage": None}
    ),
]
DONE = b"data: [DONE]"
# The properties run few examples (the suite stays fast); NULL_RUNS_SCALE=30 runs thousands.
SCALE = int(os.environ.get("NULL_RUNS_SCALE", "1"))


# --- the chunks ------------------------------------------------------------------------------


def _spaced(raw: bytes, how: int) -> bytes:
    """``"usage":null`` as the server wrote it: compact, or spaced one of two ways."""
    if how == 1:
        return raw.replace(b'"usage":null', b'"usage": null')
    if how == 2:
        return raw.replace(b'"usage":null', b'"usage" :null', 1)
    return raw


@st.composite
def null_chunk(draw: st.DrawFn) -> bytes:
    """A content chunk naming usage null (mostly compact, last or first), with a fingerprint
    and service tier that may change, go empty or null, or be absent; sometimes a nested null
    in its choice, two choices, a finish reason, content that names a needle."""
    choice: dict[str, Any] = {"index": 0, "delta": {"content": draw(_CONTENT)}}
    if draw(st.integers(0, 6)) == 0:
        choice["usage"] = None  # a nested null (the first "usage" of the chunk, if it leads)
    if draw(st.integers(0, 8)) == 0:
        choice["finish_reason"] = "stop"
    choices = [choice]
    if draw(st.integers(0, 12)) == 0:
        choices.append({"index": 1, "delta": {"content": "y"}})
    chunk: dict[str, Any] = {}
    where = draw(st.sampled_from(["last"] * 4 + ["first", "middle"]))  # where usage goes
    if where == "first":
        chunk["usage"] = None
    chunk.update(HEAD)
    chunk["choices"] = choices
    if where == "middle":
        chunk["usage"] = None
    if draw(st.integers(0, 2)) == 0:
        chunk["system_fingerprint"] = draw(_FINGERPRINT)
    if draw(st.integers(0, 4)) == 0:
        chunk["service_tier"] = draw(_TIER)
    chunk["usage"] = None  # (where it went first, or last)
    raw = b"data: " + orjson.dumps(chunk)
    return _spaced(raw, draw(st.sampled_from([0] * 12 + [1, 2])))


_CONTENT = st.sampled_from(
    ["w", "", " there", "[DONE]", 'say "usage":null', "error", "usage", "x" * 40]
)
_FINGERPRINT = st.sampled_from(["fp_a", "fp_b", "", None, 7])
_TIER = st.sampled_from(["default", "priority", "", None])


@st.composite
def usage_chunk(draw: st.DrawFn) -> bytes:
    """A chunk carrying a usage object: cumulative on a content chunk (Nov 2024), or the
    final ``choices: []`` chunk (stripped by a filtering tap); compact or spaced."""
    usage = {
        "prompt_tokens": draw(st.integers(0, 50)),
        "completion_tokens": draw(st.integers(0, 9)),
    }
    final = draw(st.booleans())
    choices: list[Any] = [] if final else [{"index": 0, "delta": {"content": "u"}}]
    chunk: dict[str, Any] = {**HEAD, "choices": choices, "usage": usage}
    if draw(st.booleans()):
        chunk["system_fingerprint"] = draw(_FINGERPRINT)
    compact = draw(st.integers(0, 3)) > 0
    return b"data: " + (orjson.dumps(chunk) if compact else json.dumps(chunk).encode())


def _plain(**extra: Any) -> bytes:
    return b"data: " + orjson.dumps(
        {**HEAD, "choices": [{"index": 0, "delta": {"content": "p"}}], **extra}
    )


# Events that are not null chunks, each as its lines (an event is one or more lines).
_BROKEN = b'data: {"id":"chatcmpl-9","choices":[{"index":0}],"usage":null,'  # not JSON
_OTHERS: list[list[bytes]] = [
    [b": keep-alive"],
    [b': "usage":null in a comment'],
    [_BROKEN],
    [b'data: {"choices":[{"index":0}],"usage":null'],  # not JSON, no model or id
    [b"data: " + orjson.dumps({"code": "overloaded", "error": "try later"})],
    [DONE],
    # a null chunk split over two data lines, and one with an event and an id line
    [b'data: {"id":"chatcmpl-9","model":"grok-4.7",', b'data: "choices":[{}],"usage":null}'],
    [b"event: chunk", b"id: 4", _plain(usage=None, system_fingerprint="fp_c")],
    # a null chunk with an empty choice list (not the usage chunk: its usage is null)
    [b"data: " + orjson.dumps({**HEAD, "choices": [], "usage": None})],
    # a nested null before its own usage object, spaced (reads as usage)
    [b'data: {"choices":[{"x":{"usage":null}}],"usage": {"prompt_tokens":3}}'],
    # a null chunk that is not a chat chunk at all
    [b'data: {"usage":null}'],
    [b'data: {"usage":null,"system_fingerprint":"fp_d","service_tier":"flex"}'],
    [b"data: " + b"z" * 280],  # near the small caps (no needle)
    [b"data: " + orjson.dumps({**HEAD, "pad": "q" * 260, "usage": None})],  # (a needle)
]
# Null events a chat tap does not let wait (`ChatStream._defers`): no choices, empty
# choices, choices twice, no model or id, usage null only nested, usage null in a comment.
_ODD_NULLS: list[list[bytes]] = [
    [b'data: {"usage":null}'],
    [b"data: " + orjson.dumps({**HEAD, "choices": [], "usage": None})],
    [b'data: {"id":"x","choices":[{"choices":[{}]}],"usage":null,"system_fingerprint":"fp_t"}'],
    [b'data: {"choices":[{"index":0,"delta":{"content":"o"}}],"usage":null}'],
    [b'data: {"id":"chatcmpl-9","choices":[{"index":0,"usage":null}]}'],
    [b': "usage":null', b'data: {"usage":null,"service_tier":"flex"}'],
    [b"data: " + orjson.dumps({**HEAD, "choices": [], "usage": None}), b"data: "],
]
# Chunks that name no usage, or name it only outside their data: reading every event in turn
# never decodes them after the first, so they must set nothing.
_UNNAMED: list[list[bytes]] = [
    [_plain(system_fingerprint="fp_n")],
    [_plain(service_tier="scale")],
    [_plain()],
    [b': "usage":null', _plain(system_fingerprint="fp_m")],
    [b'event: "usage":null', _plain(system_fingerprint="fp_e", service_tier="tier_e")],
]
# Keys written with an escape: the same object, other bytes.
_ESCAPED: list[list[bytes]] = [
    [  # usage in a run under an escaped key (beside a nested null: read in turn, it counts)
        b'data: {"id":"chatcmpl-9","choices":[{"index":0,"usage":null}],'
        b'"\\u0075sage":{"prompt_tokens":5,"completion_tokens":2}}'
    ],
    [  # the usage chunk itself, escaped (a filtering tap strips it)
        b'data: {"id":"chatcmpl-9","x":{"usage":null},"\\u0063hoices":[],'
        b'"\\u0075sage":{"prompt_tokens":6,"completion_tokens":1}}'
    ],
    [b'data: {"\\u0065rror":"x","code":"escaped_error","usage":null}'],
    [_plain(usage=None).replace(b'"usage"', b'"system_\\u0066ingerprint":"fp_x","usage"')],
    [_plain(usage=None).replace(b'"usage"', b'"service_\\u0074ier":"tier_x","usage"')],
]


@st.composite
def null_streams(
    draw: st.DrawFn,
    shortest: int = 2,
    longest: int = 30,
    unnamed: bool = True,
    escaped: bool = True,
) -> list[list[bytes]]:
    """A stream of runs of null chunks with other events between and inside them; the usage
    chunk and ``[DONE]`` at the end, or not. `unnamed` and `escaped` add `_UNNAMED`'s and
    `_ESCAPED`'s events to the others."""
    others = _OTHERS + (_UNNAMED if unnamed else []) + (_ESCAPED if escaped else [])
    events: list[list[bytes]] = [[draw(st.sampled_from(_FIRSTS))]]
    for _ in range(draw(st.integers(1, 4))):
        size = draw(st.integers(shortest, longest))
        if draw(st.integers(0, 3)):  # each chunk drawn
            run = [[draw(null_chunk())] for _ in range(size)]
        else:  # one chunk, or one odd null event, over and over
            one = draw(st.one_of(null_chunk().map(lambda c: [c]), st.sampled_from(_ODD_NULLS)))
            run = [one] * size
        for _ in range(draw(st.integers(0, 3))):
            extra = [draw(usage_chunk())] if draw(st.integers(0, 3)) == 0 else None
            run.insert(draw(st.integers(0, len(run))), extra or draw(st.sampled_from(others)))
        if draw(st.integers(0, 2)) == 0:  # the run's last event (often, before [DONE])
            run.append(draw(st.sampled_from(others)))
        events += run
    if draw(st.integers(0, 4)):
        usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
        events.append([b"data: " + orjson.dumps({**HEAD, "choices": [], "usage": usage})])
    if draw(st.integers(0, 4)):
        events.append([DONE])
    return events


# --- the meters ------------------------------------------------------------------------------


# --- the properties --------------------------------------------------------------------------


@settings(max_examples=150 * SCALE, deadline=None)
@given(
    events=null_streams(),
    endings=st.sampled_from(["lf", "lf", "mixed"]),
    filtering=st.booleans(),
    cap=st.sampled_from([MAX_SCAN_BYTES, MAX_SCAN_BYTES, 300, 700]),
    hold=st.sampled_from([None, 1, 200, 4096]),
    quiet_hold=st.sampled_from([sse._QUIET_HOLD, 1, 90]),
    complete=st.booleans(),
    draw=st.data(),
)
def test_null_runs_quietly_read_give_what_reading_every_event_gives(
    events: list[list[bytes]],
    endings: str,
    filtering: bool,
    cap: int,
    hold: int | None,
    quiet_hold: int,
    complete: bool,
    draw: st.DataObject,
) -> None:
    """Also with the body cut short after its last chunk (the tap finished as incomplete)."""
    body = sse_frames(draw.draw, events, endings, 3)
    cap = cap_clear_of_the_edge(body, cap)
    quiet_as_slow(body, drawn_cuts(draw.draw, body), filtering, cap, hold, quiet_hold, complete)


@settings(max_examples=60 * SCALE, deadline=None)
@given(
    events=null_streams(unnamed=False, escaped=False),
    endings=st.sampled_from(["lf", "mixed"]),
    filtering=st.booleans(),
    cap=st.sampled_from([MAX_SCAN_BYTES, 300, 700]),
    hold=st.sampled_from([None, 1, 200]),
    draw=st.data(),
)
def test_null_runs_of_plain_chat_chunks_give_the_same(
    events: list[list[bytes]],
    endings: str,
    filtering: bool,
    cap: int,
    hold: int | None,
    draw: st.DataObject,
) -> None:
    """The same, with only the events a chat server writes (no unnamed chunks, no escapes)."""
    body = sse_frames(draw.draw, events, endings, 3)
    cap = cap_clear_of_the_edge(body, cap)
    quiet_as_slow(body, drawn_cuts(draw.draw, body), filtering, cap, hold)


@settings(max_examples=4 * SCALE, deadline=None)
@given(
    events=null_streams(shortest=100, longest=300),
    endings=st.sampled_from(["lf", "lf", "mixed"]),
    filtering=st.booleans(),
    hold=st.sampled_from([None, 1, 4096]),
    draw=st.data(),
)
def test_long_null_runs_give_the_same(
    events: list[list[bytes]],
    endings: str,
    filtering: bool,
    hold: int | None,
    draw: st.DataObject,
) -> None:
    body = sse_frames(draw.draw, events, endings, 3)
    quiet_as_slow(body, drawn_cuts(draw.draw, body), filtering, hold=hold)


@settings(max_examples=25 * SCALE, deadline=None)
@given(events=null_streams(), filtering=st.booleans(), draw=st.data())
def test_compressed_null_runs_give_the_same(
    events: list[list[bytes]], filtering: bool, draw: st.DataObject
) -> None:
    """gzip: a filtering tap forwards the decoded bytes, less the usage chunk."""
    body = sse_frames(draw.draw, events, "lf", 3)
    cuts = draw.draw(st.lists(st.integers(0, len(gzip.compress(body))), max_size=10))
    quiet_as_slow(body, cuts, filtering, gzipped=True)


# --- the examples ----------------------------------------------------------------------------


def _null(n: int, **extra: Any) -> bytes:
    return _plain(**{"usage": None, **extra}).replace(b'"p"', f'"w{n}"'.encode())


def _body(*events: bytes, end: bytes = LF + LF) -> bytes:
    return b"".join(event + end for event in (FIRST, *events))


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize("end", [LF + LF, CRLF + CRLF])
def test_a_chunk_naming_no_usage_after_a_null_run_sets_no_fingerprint(
    filtering: bool, end: bytes
) -> None:
    """A null chunk, then a content chunk without usage (a new fingerprint), then ``[DONE]``:
    reading every event in turn never decodes the second (no needle in it), so the record
    keeps the first's fingerprint. `_take_run` (LF endings) must not read the run's last
    event as if it were a null chunk (with CRLF, `_read_deferred` reads the last null one)."""
    body = _body(_null(1, system_fingerprint="fp_a"), _plain(system_fingerprint="fp_b"), DONE)
    body = body.replace(LF + LF, end)
    assert quiet_as_slow(body, [], filtering).fingerprint == "fp_a"


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize("end", [LF + LF, CRLF + CRLF])
def test_a_chunk_naming_usage_only_in_a_comment_is_not_read(filtering: bool, end: bytes) -> None:
    """A chunk whose only ``"usage":null`` is in a comment line waits with the null chunks
    (its raw bytes name it) but its data names no needle: it must not be read."""
    odd = b': "usage":null' + end[: len(end) // 2] + _plain(service_tier="scale")
    body = _body(_null(1), _null(2), odd, DONE).replace(LF + LF, end)
    assert quiet_as_slow(body, [], filtering).service_tier is None


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize(
    "odd",
    [
        b'data: {"id":"chatcmpl-9","choices":[{"index":0,"usage":null}],'
        b'"\\u0075sage":{"prompt_tokens":5,"completion_tokens":2}}',
        b'data: {"id":"chatcmpl-9","x":{"usage":null},"\\u0063hoices":[],'
        b'"\\u0075sage":{"prompt_tokens":6,"completion_tokens":1}}',
        b'data: {"\\u0065rror":"x","code":"escaped_error","usage":null}',
        _null(0).replace(b'"usage"', b'"system_\\u0066ingerprint":"fp_x","usage"'),
    ],
    ids=["usage", "usage-chunk", "error", "fingerprint"],
)
def test_an_escaped_key_inside_a_null_run_is_read(filtering: bool, odd: bytes) -> None:
    """JSON may escape any character of a key: a chunk of a null run that carries usage, is
    the usage chunk, an error or a fingerprint under an escaped key is what reading it says."""
    quiet_as_slow(_body(_null(1), odd, _null(2), DONE), [], filtering)


@pytest.mark.parametrize("filtering", [False, True])
def test_a_null_run_cut_at_every_byte_gives_the_same(filtering: bool) -> None:
    """A run with a changing fingerprint, a broken chunk, a usage object, an odd run of LFs
    and the usage chunk, cut at every byte (and at a second place nearby)."""
    usage = b"data: " + orjson.dumps({**HEAD, "choices": [], "usage": {"prompt_tokens": 3}})
    body = _body(
        _null(1, system_fingerprint="fp_a"),
        _null(2, service_tier="priority"),
        _BROKEN,
        _null(3, system_fingerprint=""),
        _null(4) + LF,
        _null(5, usage={"prompt_tokens": 2}),
        _null(6, system_fingerprint="fp_b"),
        _null(7, system_fingerprint=None),
        usage,
        DONE,
    )
    for i in range(len(FIRST), len(body), 3):
        for j in (i + 1, i + 170):
            quiet_as_slow(body, [i, j], filtering, hold=200)


@pytest.mark.parametrize("extra", [b"", LF, LF * 2, LF * 3, LF * 5])
@pytest.mark.parametrize("cap", [MAX_SCAN_BYTES, 300])
def test_odd_blank_lines_around_a_run_and_its_usage_chunk(extra: bytes, cap: int) -> None:
    usage = b"data: " + orjson.dumps({**HEAD, "choices": [], "usage": {"prompt_tokens": 3}})
    events = [_null(n) + (extra if n % 2 else b"") for n in range(8)]
    body = _body(*events, extra + usage, DONE)
    for filtering in (False, True):
        for cuts in ([], [len(body) // 2], [body.index(usage) + k for k in (-2, -1, 0, 1)]):
            quiet_as_slow(body, cuts, filtering, cap)


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize("at", [0, 1, 3])
def test_a_chunk_with_a_nested_null_and_its_own_usage_compact_inside_a_run(
    filtering: bool, at: int
) -> None:
    """Its first "usage" is a nested null, its own usage object follows, compact: the run
    ends before it (or it opens the run: `_take_run` finds no event end before the object)."""
    odd = b'data: {"id":"chatcmpl-9","choices":[{"index":0,"usage":null}],'
    odd += b'"usage":{"prompt_tokens":4}}'
    events = [_null(n, system_fingerprint=f"fp_{n}") for n in range(4)]
    events.insert(at, odd)
    assert quiet_as_slow(_body(*events, DONE), [], filtering).usage is not None
