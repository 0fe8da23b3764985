"""A chat stream's end read in one go (`ChatStream._read_end`): one event and ``data: [DONE]``
held together (the usual last read of a fast model's stream, and the tail of every burst) are read
without `_split`'s search for runs, and must book and send exactly what reading them event by
event does. Each case runs three taps: the quiet tap, the quiet tap with `_read_end` switched
off (`NoEndTap`: `_split` reads the end, as before it existed) and the slow tap that reads every
event (`SlowChatStream`; and `quiet_as_slow`'s own check of the bytes). Ends holding
``"choices":[]`` beside other shapes (both kinds of choices, escaped keys, usage null / a string
/ a number / a list, errors, other fields and comment lines, several data lines, needles on
non-data lines, ``[DONE]`` inside the event), tails near that shape that must be left to
`_split` (CRs, other markers, blank lines, more events), after preambles that leave the tap in
different states (usage read before, null or cumulative runs, an error event, an earlier usage
chunk or [DONE], an odd LF run), with more after the marker; cut at every byte, small caps,
gzip, streams cut short, and a property over drawn streams. (Written against the fast path by a
fresh reviewer; no counterexample found.)"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.dialects import sse
from daemon.dialects.base import MAX_SCAN_BYTES
from daemon.dialects.chat import ChatStream
from daemon.record import CallRecord, Unmetered
from daemon.testing import SlowChatStream, booked, drawn_cuts, meter_chat_stream, quiet_as_slow

HEAD: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "grok-4"}
USAGE = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
EARLIER = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
U = json.dumps(USAGE, separators=(",", ":")).encode()
DONE = b"data: [DONE]\n\n"
# The properties run few examples (the suite stays fast); END_ATTACK_SCALE=20 runs thousands.
SCALE = int(os.environ.get("END_ATTACK_SCALE", "1"))


def data(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def content(word: str, **more: Any) -> bytes:
    return data({**HEAD, "choices": [{"index": 0, "delta": {"content": word}}], **more})


FIRST = content("Hi", system_fingerprint="fp_a")

# What comes before the end (the tap is quiet after the first chunk).
PRES = {
    "content": FIRST + content(" there"),
    "first chunk only": FIRST,
    "null run": FIRST + content("a", usage=None) + content("b", usage=None),
    "cumulative run": FIRST + content("a", usage=EARLIER) + content("b", usage=EARLIER),
    "cumulative, then content": FIRST + content("a", usage=EARLIER) + content("b"),
    "a usage chunk before": FIRST + data({**HEAD, "choices": [], "usage": EARLIER}) + content("z"),
    "an error event": FIRST + data({"error": {"message": "x"}}) + content("z"),
    "a [DONE] before": FIRST + DONE + content("z"),
    "fingerprint and tier change": FIRST
    + content("a", system_fingerprint="fp_b", service_tier="t"),
    "not JSON": FIRST + b'data: {"usage":\n\n' + content("z"),
    "an odd LF run": FIRST + b"\n" + content("z"),
}

# One event holding "choices":[] (then the marker): the shape `_read_end` takes, and its kin.
ENDS = {
    "usual": data({**HEAD, "choices": [], "usage": USAGE}),
    "fingerprint and tier": data(
        {**HEAD, "choices": [], "usage": USAGE, "system_fingerprint": "fp_z", "service_tier": "s"}
    ),
    "empty fingerprint, null tier": data(
        {**HEAD, "choices": [], "usage": USAGE, "system_fingerprint": "", "service_tier": None}
    ),
    "usage null": data({**HEAD, "choices": [], "usage": None}),
    "usage a string": data({**HEAD, "choices": [], "usage": "10"}),
    "usage a number": data({**HEAD, "choices": [], "usage": 10}),
    "usage a list": data({**HEAD, "choices": [], "usage": [USAGE]}),
    "usage empty": data({**HEAD, "choices": [], "usage": {}}),
    "content choices, then []": b'data: {"choices":[{"index":0,"delta":{"content":"y"}}],'
    b'"choices":[],"usage":' + U + b"}\n\n",
    "[], then content choices": b'data: {"choices":[],"choices":[{"index":0,"delta":{}}],'
    b'"usage":' + U + b"}\n\n",
    "[], then content choices, null": b'data: {"choices":[],"choices":[{"delta":{}}],'
    b'"usage":null}\n\n',
    "escaped usage key": b'data: {"choices":[],"\\u0075sage":' + U + b"}\n\n",
    "null usage, then an escaped usage key": b'data: {"choices":[],"usage":null,'
    b'"\\u0075sage":' + U + b"}\n\n",
    "choices:[] inside a key": b'data: {"x\\"choices":[],"choices":[{"delta":{"content":"k"}}],'
    b'"usage":' + U + b"}\n\n",
    "choices:[] inside a key, usage null": b'data: {"x\\"choices":[],'
    b'"choices":[{"delta":{"content":"k"}}],"usage":null}\n\n',
    "escaped choices key": b'data: {"\\u0063hoices":[{"delta":{}}],"choices":[],"usage":'
    + U
    + b"}\n\n",
    "choices [] nested in a choice": data(
        {**HEAD, "choices": [{"delta": {}, "x": {"choices": []}}], "usage": USAGE}
    ),
    "choices [] nested, usage null": data(
        {**HEAD, "choices": [{"delta": {}, "x": {"choices": []}}], "usage": None}
    ),
    "error and choices []": data({"error": {"message": "boom"}, "choices": []}),
    "choices [] inside the error": data({"error": {"message": "boom", "choices": []}}),
    "error string": data({"error": "boom", "x": {"choices": []}}),
    "an id line": b"id: 7\n" + data({**HEAD, "choices": [], "usage": USAGE}),
    "an event line": b"event: message\n" + data({**HEAD, "choices": [], "usage": USAGE}),
    "a retry line": b"retry: 100\n" + data({**HEAD, "choices": [], "usage": USAGE}),
    "needles in a comment": b': {"choices":[],"usage":{}}\n'
    + data({**HEAD, "choices": [{"delta": {"content": "c"}}]}),
    "a comment only": b': {"choices":[],"usage":{}}\n\n',
    "usage in a comment, choices [] in data": b': "usage"\n' + data({**HEAD, "choices": []}),
    "two data lines": b'data: {"choices":[],\ndata: "usage":' + U + b"}\n\n",
    "the usage key split by a line": b'data: {"choices":[],"us\ndata: age":' + U + b"}\n\n",
    "data without a space": b'data:{"choices":[],"usage":' + U + b"}\n\n",
    "data with two spaces": b'data:  {"choices":[],"usage":' + U + b"}\n\n",
    "not JSON": b'data: {"choices":[],"usage":{\n\n',
    "a JSON array": b'data: [{"choices":[],"usage":{}}]\n\n',
    "a leading LF": b"\n" + data({**HEAD, "choices": [], "usage": USAGE}),
    "[DONE] in its text": data({**HEAD, "choices": [], "usage": USAGE, "n": "[DONE]"}),
    "[DONE] and another data line": b'data: [DONE]\ndata: "choices":[] "usage"\n\n',
    "[DONE] and a comment": b'data: [DONE]\n: "choices":[] "usage"\n\n',
    "needles in another field": b'usage: "usage" "choices":[]\ndata: {"choices":[],"usage":'
    + U
    + b"}\n\n",
    "spaced usage": b'data: {"choices":[],"usage" : ' + U + b"}\n\n",
    "another model and id": data({"id": "other", "model": "other", "choices": [], "usage": USAGE}),
    "content beside it": data({**HEAD, "choices": [], "usage": USAGE, "content": "hello"}),
    "trailing spaces": b'data: {"choices":[],"usage":' + U + b"}   \n\n",
    "invalid UTF-8": b'data: {"choices":[],"usage":' + U + b',"x":"\xff"}\n\n',
    "a BOM": b'data: \xef\xbb\xbf{"choices":[],"usage":' + U + b"}\n\n",
}

POSTS = {
    "nothing": b"",
    "more after the marker": content("after")
    + data({**HEAD, "choices": [], "usage": EARLIER})
    + DONE,
    "an unended event": b"data: {",
}


# Tails (from the end event on) near the shape `_read_end` takes, most of them left to `_split`.
USUAL = ENDS["usual"]
TAILS = {
    "the usual end": USUAL + DONE,
    "CRLF endings": USUAL.replace(b"\n", b"\r\n") + DONE.replace(b"\n", b"\r\n"),
    "CR in the chunk only": USUAL[:-2] + b"\r\r" + DONE,
    "a CR-ended event, then one more": USUAL[:-2] + b"\r\rdata: y\n\n" + DONE,
    "a lone CR in a line": USUAL.replace(b',"usage"', b',\r"usage"', 1) + DONE,
    "a marker without a space": USUAL + b"data:[DONE]\n\n",
    "a blank line more": USUAL + b"\n" + DONE,
    "a blank line after": USUAL + DONE + b"\n",
    "no marker": USUAL,
    "the marker alone": DONE,
    "two usage chunks": USUAL + USUAL + DONE,
    "more events after the marker": USUAL + DONE + FIRST + USUAL + DONE,
    "a comment and the end again after it": USUAL + DONE + b": p\n\n" + USUAL + DONE,
    "cumulative usage, then a null usage chunk": content("!", usage=USAGE)
    + ENDS["usage null"]
    + DONE,
    "cumulative usage, then the usage chunk": content("!", usage=EARLIER) + USUAL + DONE,
}


class NoEndTap(ChatStream):
    """The quiet tap as it was before `_read_end`: `_split` reads the end event by event."""

    def _read_end(self, kept: list[bytes]) -> bool:
        return False


class CountingTap(ChatStream):
    """The quiet tap, counting the ends `_read_end` read in one go."""

    taken = 0

    def _read_end(self, kept: list[bytes]) -> bool:
        took = super()._read_end(kept)
        CountingTap.taken += took
        return took


def as_before(body: bytes, cuts: list[int], filtering: bool, **kw: Any) -> bool:
    """The tap with `_read_end` books and sends what it did without it, and what reading every
    event does (`SlowChatStream`; and, but for usage keys written with escapes, which no tap
    reads, `quiet_as_slow`'s own check of the bytes); return whether `_read_end` took the end."""
    if b"\\u0075" not in body:
        quiet_as_slow(body, cuts, filtering, **kw)
    coding = "gzip" if kw.pop("gzipped", False) else ""
    sent = gzip.compress(body) if coding else body
    args = (sent, cuts, filtering, kw.get("cap", MAX_SCAN_BYTES), coding, None)
    complete = kw.get("complete", True)
    before = CountingTap.taken
    with mock.patch.object(sse, "_QUIET_HOLD", kw.get("quiet_hold") or sse._QUIET_HOLD):
        new, new_out = meter_chat_stream(CountingTap, *args, complete)
        old, old_out = meter_chat_stream(NoEndTap, *args, complete)
        slow, slow_out = meter_chat_stream(SlowChatStream, *args, complete)
    assert new_out == old_out == slow_out
    assert booked(new) == booked(old) == booked(slow)
    return CountingTap.taken > before


def the_end_cuts(body: bytes, at: int) -> list[list[int]]:
    """Whole, cut once at every byte from a little before the end, and the end apart and cut
    once more at each of its bytes."""
    return (
        [[]]
        + [[cut] for cut in range(max(at - 8, 1), len(body))]
        + [[at, cut] for cut in range(at + 1, len(body))]
    )


@pytest.mark.parametrize("filtering", [True, False], ids=["filters", "reads"])
@pytest.mark.parametrize("end", list(ENDS))
def test_each_end_shape_books_what_reading_each_event_books(end: str, filtering: bool) -> None:
    pre = PRES["content"]
    body = pre + ENDS[end] + DONE
    for cuts in the_end_cuts(body, len(pre)):
        as_before(body, cuts, filtering)


@pytest.mark.parametrize("filtering", [True, False], ids=["filters", "reads"])
@pytest.mark.parametrize("tail", list(TAILS))
def test_each_tail_near_the_shape_books_the_same(tail: str, filtering: bool) -> None:
    pre = PRES["content"]
    body = pre + TAILS[tail]
    for cuts in the_end_cuts(body, len(pre)) + [[cut] for cut in range(1, len(pre) - 8)]:
        as_before(body, cuts, filtering)


@pytest.mark.parametrize("filtering", [True, False], ids=["filters", "reads"])
def test_the_usual_end_in_one_read_is_read_in_one_go_and_metered(filtering: bool) -> None:
    body = PRES["content"] + USUAL + DONE
    split_each = mock.patch.object(
        ChatStream, "_split", autospec=True, side_effect=ChatStream._split
    )
    with split_each as split:
        record, out = meter_chat_stream(ChatStream, body, [], filtering)
    # Split once: the first event alone (until the tap goes quiet); the end in one go.
    assert [call.args[1] for call in split.call_args_list] == [None]
    assert record.usage is not None and record.usage.input_tokens == 10
    assert record.unmetered_reason is None
    assert out == (PRES["content"] + DONE if filtering else body)


@pytest.mark.parametrize("filtering", [True, False], ids=["filters", "reads"])
@pytest.mark.parametrize("pre", list(PRES))
@pytest.mark.parametrize("post", list(POSTS))
def test_each_end_after_each_preamble_books_the_same(pre: str, post: str, filtering: bool) -> None:
    for end in ENDS.values():
        body = PRES[pre] + end + DONE + POSTS[post]
        at = len(PRES[pre])
        for cuts in ([at], [at, at + len(end)], [at - 1, at + 1]):
            as_before(body, cuts, filtering)
        as_before(body, [at, at + len(end) + 5], filtering, complete=False)


def test_the_fast_path_takes_the_ends_it_is_meant_to() -> None:
    """Not vacuous: `_read_end` reads these ends in one go when they come in one read."""
    pre = PRES["content"]
    for end in (
        "usual",
        "usage null",
        "content choices, then []",
        "[], then content choices",
        "choices:[] inside a key",
        "an id line",
        "two data lines",
        "[DONE] in its text",
    ):
        for filtering in (True, False):
            assert as_before(pre + ENDS[end] + DONE, [len(pre)], filtering), end


def the_end_apart(pre: str, end: str, filtering: bool) -> tuple[bytes, CallRecord]:
    """The stream of preamble `pre` and end event `end` (then the marker), its end in a read of
    its own: the body, and the record the quiet tap books (checked by `quiet_as_slow`)."""
    body = PRES[pre] + ENDS[end] + DONE
    return body, quiet_as_slow(body, [len(PRES[pre])], filtering)


@pytest.mark.parametrize("filtering", [True, False], ids=["filters", "reads"])
def test_duplicate_choices_keys_book_what_the_last_key_says(filtering: bool) -> None:
    # orjson keeps the last of duplicate keys: choices [] last makes it the usage chunk.
    _, record = the_end_apart("content", "content choices, then []", filtering)
    assert record.usage is not None and record.usage.input_tokens == 10
    assert record.unmetered_reason is None
    # Content choices last: a content chunk with usage, final at [DONE]; never stripped.
    body, record = the_end_apart("content", "[], then content choices", filtering)
    assert record.usage is not None and record.usage.output_tokens == 3
    _, out = meter_chat_stream(ChatStream, body, [len(PRES["content"])], filtering)
    assert out == body


@pytest.mark.parametrize("filtering", [True, False], ids=["filters", "reads"])
def test_an_escaped_usage_key_goes_unread_by_either_tap(filtering: bool) -> None:
    # Needles are raw bytes: "\u0075sage" names no usage, so neither the quiet tap (fast path or
    # not) nor the slow one decodes it: no usage, and the chunk goes to the client unstripped.
    pre = PRES["content"]
    body = pre + ENDS["escaped usage key"] + DONE
    assert not as_before(body, [len(pre)], filtering)  # (no needle: passed unread)
    record, out = meter_chat_stream(ChatStream, body, [len(pre)], filtering)
    assert record.usage is None and record.unmetered_reason is Unmetered.NO_USAGE
    assert out == body


@pytest.mark.parametrize("filtering", [True, False], ids=["filters", "reads"])
def test_usage_read_before_and_a_null_end_keeps_the_earlier_count(filtering: bool) -> None:
    _, record = the_end_apart("cumulative run", "usage null", filtering)
    assert record.usage is not None and record.usage.input_tokens == 11
    assert record.unmetered_reason is None


def test_ends_near_the_cap_book_the_same() -> None:
    pre = PRES["content"]
    for end in ("usual", "usage null", "content choices, then []", "an id line"):
        body = pre + ENDS[end] + DONE
        size = len(ENDS[end])
        for cap in range(size - 3, size + len(DONE) + 3):
            for filtering in (True, False):
                for cuts in ([], [len(pre)], [len(pre), len(pre) + size], [len(pre) + 5]):
                    as_before(body, cuts, filtering, cap=cap)


@pytest.mark.parametrize("filtering", [True, False], ids=["filters", "reads"])
def test_gzipped_ends_book_the_same(filtering: bool) -> None:
    pre = PRES["null run"]
    for end in ENDS.values():
        body = pre + end + DONE
        sent = gzip.compress(body)
        for cut in range(1, len(sent), 7):
            as_before(body, [cut], filtering, gzipped=True)


def test_a_tiny_quiet_hold_books_the_same() -> None:
    pre = PRES["content"] * 3
    for end in ENDS.values():
        body = pre + end + DONE
        for filtering in (True, False):
            for cut in range(len(pre) - 20, len(body), 7):
                as_before(body, [cut], filtering, quiet_hold=16)


# --- a property over drawn streams ------------------------------------------------------------

_CHUNKS = [
    content("w"),
    content("n", usage=None),
    content("c", usage=EARLIER),
    content("f", system_fingerprint="fp_q", service_tier="t2"),
    data({"error": {"message": "e"}}),
    data({**HEAD, "choices": [], "usage": EARLIER}),
    b": ping\n\n",
    b"\n",
    DONE,
    b'data: {"usage":\n\n',
]


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    pre = FIRST + b"".join(draw(st.lists(st.sampled_from(_CHUNKS), max_size=6)))
    ends = draw(st.lists(st.sampled_from(list(ENDS.values())), min_size=1, max_size=2))
    body = pre + b"".join(end + DONE for end in ends)
    return body + draw(st.sampled_from(list(POSTS.values())))


@settings(max_examples=400 * SCALE, deadline=None)
@given(
    body=streams(),
    filtering=st.booleans(),
    complete=st.booleans(),
    small_cap=st.booleans(),
    draw=st.data(),
)
def test_drawn_ends_book_what_reading_each_event_books(
    body: bytes, filtering: bool, complete: bool, small_cap: bool, draw: st.DataObject
) -> None:
    cuts = drawn_cuts(draw.draw, body, (b'"usage"', b'"choices":[]', b"[DONE]", b"\n\n"))
    cap = draw.draw(st.integers(60, 200)) if small_cap else MAX_SCAN_BYTES
    as_before(body, cuts, filtering, cap=cap, complete=complete)


@settings(max_examples=100 * SCALE, deadline=None)
@given(body=streams(), filtering=st.booleans(), draw=st.data())
def test_drawn_gzipped_ends_book_the_same(
    body: bytes, filtering: bool, draw: st.DataObject
) -> None:
    sent = gzip.compress(body)
    cuts = draw.draw(st.lists(st.integers(0, len(sent)), max_size=6))
    as_before(body, cuts, filtering, gzipped=True)


def test_a_null_end_after_nothing_but_content_is_no_usage() -> None:
    _, record = the_end_apart("content", "usage null", True)
    assert record.usage is None and record.unmetered_reason is Unmetered.NO_USAGE
