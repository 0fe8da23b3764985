"""A chat stream's end read in one go: the usage chunk and ``data: [DONE]`` held together (the
usual last read of a fast model's stream, and the tail of every burst) are read without the
search for runs (`ChatStream._read_end`), and book exactly what reading them event by event
books (`daemon.testing.quiet_as_slow` against the slow tap), whole and cut at every byte, for
the usual end and for each shape near it that must be left to the event-by-event reading.
"""

from __future__ import annotations

import json
from unittest import mock

import pytest

from daemon.dialects.chat import ChatStream
from daemon.record import Unmetered
from daemon.testing import meter_chat_stream, quiet_as_slow

ID = "3b0f1c3e-8a43-4f0e-9a39-2e6d9d0c5b71"
HEAD = {"id": ID, "object": "chat.completion.chunk", "model": "grok-4-fast-reasoning"}
FP = {"system_fingerprint": "fp_9362061f30"}
USAGE = {"prompt_tokens": 165, "completion_tokens": 2, "total_tokens": 167}
DONE = b"data: [DONE]\n\n"


def data(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


CONTENT = b"".join(
    data({**HEAD, "choices": [{"index": 0, "delta": {"content": word}}], **FP})
    for word in ("The", " answer", " is", " 42")
)
USAGE_CHUNK = data({**HEAD, "choices": [], "usage": USAGE, **FP})

# The end of a stream after CONTENT: the usual one first, then shapes around it.
ENDS = {
    "usual": USAGE_CHUNK + DONE,
    "usage null, choices []": data({**HEAD, "choices": [], "usage": None}) + DONE,
    "usage a string": data({**HEAD, "choices": [], "usage": "165"}) + DONE,
    "error key beside usage": data({**HEAD, "choices": [], "usage": USAGE, "error": "x"}) + DONE,
    "an error event, choices []": data({"code": "internal", "error": "boom", "choices": []}) + DONE,
    "two data lines": USAGE_CHUNK.replace(b',"usage"', b'\ndata: ,"usage"', 1) + DONE,
    "a comment line first": b": keep-alive\n" + USAGE_CHUNK + DONE,
    "an event name": b"event: usage\n" + USAGE_CHUNK + DONE,
    "not JSON": b'data: {"choices":[],"usage":{\n\n' + DONE,
    "CRLF endings": USAGE_CHUNK.replace(b"\n", b"\r\n") + DONE.replace(b"\n", b"\r\n"),
    "CR in the chunk only": USAGE_CHUNK[:-2] + b"\r\r" + DONE,
    "a CR-ended event, then one more": USAGE_CHUNK[:-2] + b"\r\rdata: y\n\n" + DONE,
    "a lone CR in a line": USAGE_CHUNK.replace(b',"usage"', b',\r"usage"', 1) + DONE,
    "marker without a space": USAGE_CHUNK + b"data:[DONE]\n\n",
    "a blank line more": USAGE_CHUNK + b"\n" + DONE,
    "a blank line after": USAGE_CHUNK + DONE + b"\n",
    "more events after the marker": USAGE_CHUNK + DONE + CONTENT + USAGE_CHUNK + DONE,
    "a comment and the end again after it": USAGE_CHUNK + DONE + b": p\n\n" + USAGE_CHUNK + DONE,
    "no marker": USAGE_CHUNK,
    "marker alone": DONE,
    "two usage chunks": USAGE_CHUNK + USAGE_CHUNK + DONE,
    "usage in the text only": data({**HEAD, "choices": [], "note": '"usage"'}) + DONE,
    "[DONE] in the chunk's text": data({**HEAD, "choices": [], "usage": USAGE, "n": "[DONE]"})
    + DONE,
    "cumulative usage, then a null usage chunk": data(
        {**HEAD, "choices": [{"index": 0, "delta": {"content": "!"}}], "usage": USAGE}
    )
    + data({**HEAD, "choices": [], "usage": None})
    + DONE,
    "cumulative usage before": data(
        {**HEAD, "choices": [{"index": 0, "delta": {"content": "!"}}], "usage": USAGE}
    )
    + USAGE_CHUNK
    + DONE,
}


@pytest.mark.parametrize("filtering", [True, False], ids=["filters", "reads"])
@pytest.mark.parametrize("end", list(ENDS))
def test_the_end_books_what_reading_each_event_books(end: str, filtering: bool) -> None:
    body = CONTENT + ENDS[end]
    quiet_as_slow(body, [], filtering)  # all in one read
    for cut in range(1, len(body)):
        quiet_as_slow(body, [cut], filtering)
    at = len(CONTENT)  # the content and the end apart, then the end cut once more
    for cut in range(at + 1, len(body)):
        quiet_as_slow(body, [at, cut], filtering)


@pytest.mark.parametrize("cap", [len(USAGE_CHUNK) - 1, len(USAGE_CHUNK), len(USAGE_CHUNK) + 14])
def test_an_end_near_the_scan_cap_books_what_reading_each_event_books(cap: int) -> None:
    body = CONTENT + USAGE_CHUNK + DONE
    for filtering in (True, False):
        quiet_as_slow(body, [], filtering, cap=cap)
        quiet_as_slow(body, [len(CONTENT)], filtering, cap=cap)


@pytest.mark.parametrize("filtering", [True, False], ids=["filters", "reads"])
def test_the_usual_end_is_read_in_one_go_and_metered(filtering: bool) -> None:
    body = CONTENT + USAGE_CHUNK + DONE
    split_each = mock.patch.object(
        ChatStream, "_split", autospec=True, side_effect=ChatStream._split
    )
    with split_each as split:
        record, out = meter_chat_stream(ChatStream, body, [], filtering)
    # Read in turn: the first event alone (until the tap goes quiet); the end in one go.
    assert [call.args[1] for call in split.call_args_list] == [None]
    assert record.usage is not None and record.usage.input_tokens == 165
    assert record.unmetered_reason is None
    assert out == (CONTENT + DONE if filtering else body)


def test_a_null_usage_chunk_books_no_usage() -> None:
    record = quiet_as_slow(CONTENT + data({**HEAD, "choices": [], "usage": None}) + DONE, [], True)
    assert record.usage is None
    assert record.unmetered_reason is Unmetered.NO_USAGE
