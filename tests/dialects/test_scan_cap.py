"""The scan cap (`Tap.max_scan_bytes`, ``relay.max_scan_bytes``): an SSE event or a whole body
over it is relayed untouched and never read; the tap keeps at most the cap plus one chunk of it
(measured with tracemalloc, not timed), searches each byte a bounded number of times, and a
billable 2xx whose usage could have been in it is unmetered ``too_large``."""

from __future__ import annotations

import gzip
import hashlib
import tracemalloc
from collections.abc import Iterator

import orjson
import pytest

from daemon import config
from daemon.dialects.base import MAX_SCAN_BYTES, Clock, Tap
from daemon.dialects.chat import ChatDialect
from daemon.dialects.images import ImagesDialect
from daemon.dialects.responses import ResponsesDialect
from daemon.record import CallRecord, Unmetered, Usage
from daemon.testing import make_record

CAP = 1 << 20  # 1 MiB
CHUNK = 1 << 16  # 64 KiB, what the relay's reads are at most about
HUGE = 64 << 20  # 64 MiB
FILL = b"x" * CHUNK  # one chunk of an event's text, fed again and again (the test keeps no copy)

HEAD = {"id": "chatcmpl-9", "model": "grok-4.7", "object": "chat.completion.chunk"}
USAGE = {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}


def sse(obj: dict[str, object]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


FIRST = sse({**HEAD, "choices": [{"index": 0, "delta": {"content": "Hi"}}]})
USAGE_EVENT = sse({**HEAD, "choices": [], "usage": USAGE})
DONE = b"data: [DONE]\n\n"


def huge_event(size: int, usage: bool) -> Iterator[bytes]:
    """A chat chunk of about `size` bytes of content, in CHUNK-sized pieces; with `usage`, it
    carries the call's usage too (as the last chunk of a stream may)."""
    yield b'data: {"id":"chatcmpl-9","model":"grok-4.7","choices":[{"index":0,"delta":{"content":"'
    for _ in range(size // CHUNK):
        yield FILL
    yield b'"}}]' + (b',"usage":' + orjson.dumps(USAGE) if usage else b"") + b"}\n\n"


def chat_tap(filtering: bool, cap: int = CAP) -> tuple[Tap, CallRecord]:
    record = make_record(endpoint="chat.completions", path="/v1/chat/completions", stream=True)
    record.usage_injected = filtering
    tap = ChatDialect().tap(record, "text/event-stream", lambda: 2.0)
    tap.max_scan_bytes = cap
    return tap, record


def feed_all(tap: Tap, pieces: Iterator[bytes]) -> tuple[int, str]:
    """Feed every piece; the length and sha256 of what the client gets (nothing kept)."""
    digest, size = hashlib.sha256(), 0
    for piece in pieces:
        out = tap.feed(piece)
        out = piece if out is None else out
        digest.update(out)
        size += len(out)
    rest = tap.finish(True) or b""
    digest.update(rest)
    return size + len(rest), digest.hexdigest()


def expected(pieces: Iterator[bytes]) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    for piece in pieces:
        digest.update(piece)
        size += len(piece)
    return size, digest.hexdigest()


def stream_of(size: int, usage_in_huge: bool, usage_after: bool) -> Iterator[bytes]:
    yield FIRST
    yield from huge_event(size, usage_in_huge)
    if usage_after:
        yield USAGE_EVENT
    yield DONE


@pytest.mark.parametrize("filtering", [False, True])
def test_a_huge_event_costs_the_tap_at_most_the_cap_and_a_chunk(filtering: bool) -> None:
    """64 MiB in one event, fed in 64 KiB chunks: the tap's own allocations peak under
    2 x cap + chunk (passing through) or 3 x cap + 2 chunks (filtering: it forwards what it
    held once the event passes the cap), whatever the event's size."""
    tap, record = chat_tap(filtering)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        got = feed_all(tap, stream_of(HUGE, usage_in_huge=True, usage_after=True))
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    bound = 2 * CAP + CHUNK if not filtering else 3 * CAP + 2 * CHUNK
    assert peak < bound, f"peak {peak} bytes"
    # (filtering: the usage event after the huge one is removed)
    want = stream_of(HUGE, usage_in_huge=True, usage_after=not filtering)
    assert got == expected(want)
    assert record.usage == Usage(input_tokens=1234, output_tokens=56)
    assert (record.metered, record.model, record.response_id) == (True, "grok-4.7", "chatcmpl-9")


@pytest.mark.parametrize("filtering", [False, True])
@pytest.mark.parametrize(
    ("usage_in_huge", "usage_after", "reason"),
    [
        (True, False, Unmetered.TOO_LARGE),  # the usage was in the event over the cap
        (True, True, None),  # ... and came again after it: metered
        (False, True, None),  # an event over the cap naming no needle: cannot matter
        (False, False, Unmetered.NO_USAGE),  # no usage anywhere, none could have been unread
    ],
)
def test_an_event_over_the_cap_is_unmetered_only_if_usage_could_be_in_it(
    filtering: bool, usage_in_huge: bool, usage_after: bool, reason: Unmetered | None
) -> None:
    tap, record = chat_tap(filtering, cap=4 * CHUNK)
    pieces = [FIRST, *huge_event(8 * CHUNK, usage_in_huge), *([USAGE_EVENT] * usage_after), DONE]
    out = [tap.feed(p) for p in pieces] + [tap.finish(True)]
    forwarded = b"".join(p if o is None else o for p, o in zip([*pieces, b""], out, strict=True))
    dropped = USAGE_EVENT if filtering and usage_after else b""
    assert forwarded == b"".join(pieces).replace(dropped, b"")  # the huge event, untouched
    assert record.unmetered_reason is reason
    assert record.usage == (None if reason else Usage(input_tokens=1234, output_tokens=56))


def test_an_event_of_exactly_the_cap_is_read_and_one_byte_more_is_not() -> None:
    """The cap counts the event's bytes with its ending, however the chunks cut it."""
    for over, reason in ((0, None), (1, Unmetered.TOO_LARGE)):
        for step in (1, 7, len(USAGE_EVENT) + 1):
            tap, record = chat_tap(filtering=False, cap=len(USAGE_EVENT) - over)
            body = FIRST + USAGE_EVENT + DONE
            for i in range(0, len(body), step):
                assert tap.feed(body[i : i + step]) is None
            tap.finish(True)
            assert record.unmetered_reason is reason, (over, step)


def test_a_terminal_responses_event_over_the_cap_leaves_the_call_too_large() -> None:
    """Responses repeat the whole output in ``response.completed``, the event with the usage:
    an answer longer than the cap is relayed, and unmetered ``too_large``."""
    record = make_record(endpoint="responses", path="/v1/responses", stream=True)
    tap = ResponsesDialect().tap(record, "text/event-stream", lambda: 2.0)
    tap.max_scan_bytes = 4 * CHUNK
    created = {"type": "response.created", "response": {"id": "r1", "model": "grok-4.7"}}
    text = "y" * (6 * CHUNK)
    done = {
        "type": "response.completed",
        "response": {"id": "r1", "model": "grok-4.7", "output": [{"text": text}],
                     "usage": {"input_tokens": 5, "output_tokens": 6}},
    }  # fmt: skip
    body = b"event: response.created\n" + sse(created) + b"event: response.completed\n" + sse(done)
    for i in range(0, len(body), 5000):
        assert tap.feed(body[i : i + 5000]) is None
    tap.finish(True)
    assert (record.unmetered_reason, record.usage) == (Unmetered.TOO_LARGE, None)
    assert (record.model, record.response_id) == ("grok-4.7", "r1")


def test_a_stream_cut_inside_an_event_over_the_cap_is_incomplete() -> None:
    tap, record = chat_tap(filtering=True, cap=4 * CHUNK)
    pieces = [FIRST, *list(huge_event(8 * CHUNK, True))[:-1]]
    assert b"".join(tap.feed(p) or b"" for p in pieces) == b"".join(pieces)
    assert tap.finish(False) is None  # its bytes went out as they came
    assert record.unmetered_reason is Unmetered.INCOMPLETE


def test_the_first_token_of_an_event_over_the_cap_is_seen_in_its_first_bytes() -> None:
    tap, record = chat_tap(filtering=False, cap=4 * CHUNK)
    for piece in [*huge_event(8 * CHUNK, False), USAGE_EVENT, DONE]:
        tap.feed(piece)
    tap.finish(True)
    assert (record.ttft_ms, record.metered, record.model) == (2000.0, True, "grok-4.7")


def test_a_last_unended_event_over_the_cap_held_by_a_quiet_tap_is_skipped() -> None:
    """A quiet tap holds needle-less bytes unsplit (up to `_QUIET_HOLD`): an unended last event
    over the cap is still skipped at the end, and names a needle: ``too_large``."""
    tap, record = chat_tap(filtering=False, cap=300)
    assert tap.feed(FIRST + USAGE_EVENT + DONE) is None
    assert tap.feed(b'data: {"error": "' + b"e" * 200) is None  # quiet: one needle-free feed
    assert tap.feed(b"e" * 200 + b'"}') is None
    assert tap.finish(True) is None
    assert (record.usage, record.unmetered_reason) == (None, Unmetered.TOO_LARGE)


def test_a_compressed_filtered_stream_forwards_an_event_over_the_cap_decoded() -> None:
    """A filtering tap on gzip forwards decoded bytes; pieces that decode to nothing yet, an
    event over the cap among them, change nothing."""
    record = make_record(endpoint="chat.completions", path="/v1/chat/completions", stream=True)
    record.usage_injected = True
    tap = ChatDialect().tap(record, "text/event-stream", lambda: 2.0, "gzip")
    tap.max_scan_bytes = 4 * CHUNK
    body = b"".join(stream_of(8 * CHUNK, usage_in_huge=True, usage_after=True))
    sent = gzip.compress(body)  # fed a byte at a time: many decode to nothing yet
    out = b"".join(tap.feed(sent[i : i + 1]) or b"" for i in range(len(sent)))
    assert out + (tap.finish(True) or b"") == body.replace(USAGE_EVENT, b"")
    assert record.usage == Usage(input_tokens=1234, output_tokens=56)


class _Exploding(ChatDialect):
    """Chat, but its tap raises on the usage event (a tap bug, for the relay's net)."""

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        tap = super().tap(record, content_type, clock, encoding)

        def explode(obj: dict[str, object]) -> bool:
            raise RuntimeError("a tap bug")

        tap.read = explode  # type: ignore[method-assign]
        return tap


def test_a_tap_that_breaks_right_after_an_event_over_the_cap_still_owes_every_byte() -> None:
    """The relay writes `abandon()` instead of the chunk a filtering tap raised on: the end of
    the event over the cap, in that chunk, is owed as well as what follows it."""
    record = make_record(endpoint="chat.completions", path="/v1/chat/completions", stream=True)
    record.usage_injected = True
    tap = _Exploding().tap(record, "text/event-stream", lambda: 2.0)
    tap.max_scan_bytes = 4 * CHUNK
    *head, end = huge_event(8 * CHUNK, usage=False)
    client = [tap.feed(piece) or b"" for piece in head]  # (the huge event opens the stream)
    with pytest.raises(RuntimeError):
        tap.feed(end + USAGE_EVENT)
    client.append(tap.abandon() or b"")
    assert b"".join(client) == b"".join([*head, end, USAGE_EVENT])


# --- whole bodies ------------------------------------------------------------------------


def images_body(size: int) -> bytes:
    image = {"b64_json": "A" * size, "mime_type": "image/jpeg"}
    return orjson.dumps({"data": [image], "usage": {"cost_in_usd_ticks": 700000000}})


@pytest.mark.parametrize("coding", ["", "gzip"])
@pytest.mark.parametrize("over", [False, True])
@pytest.mark.parametrize("step", [CHUNK, 10 * CHUNK])  # the first chunk alone may pass the cap
def test_a_body_over_the_cap_is_not_kept_and_is_too_large(
    coding: str, over: bool, step: int
) -> None:
    body = images_body(4 * CHUNK)
    cap = len(body) - 1 if over else len(body)  # decoded: a compressed body counts decoded
    sent = gzip.compress(body) if coding else body
    record = make_record(endpoint="images.generations", path="/v1/images/generations")
    tap = ImagesDialect("images.generations").tap(record, "application/json", lambda: 0.0, coding)
    tap.max_scan_bytes = cap
    for i in range(0, len(sent), step):
        assert tap.feed(sent[i : i + step]) is None
    assert tap.finish(True) is None
    if over:
        assert (record.unmetered_reason, record.usage) == (Unmetered.TOO_LARGE, None)
    else:
        assert record.usage == Usage(images=1, reported_cost_ticks=700000000)


def test_an_error_body_over_the_cap_is_not_a_metering_failure() -> None:
    record = make_record(endpoint="images.generations", path="/v1/images/generations", status=500)
    tap = ImagesDialect("images.generations").tap(record, "application/json", lambda: 0.0)
    tap.max_scan_bytes = 1 << 16
    tap.feed(orjson.dumps({"code": "internal", "error": "e" * (1 << 17)}))
    tap.finish(True)
    assert record.unmetered_reason is None


def test_the_setting_defaults_to_the_taps_cap() -> None:
    assert config.SETTINGS_BY_KEY["relay.max_scan_bytes"].default == MAX_SCAN_BYTES
    assert config.from_mapping({}).relay.max_scan_bytes == MAX_SCAN_BYTES == Tap.max_scan_bytes
    with pytest.raises(config.ConfigError, match=r"relay\.max_scan_bytes"):
        config.from_mapping({"relay": {"max_scan_bytes": 1000}})
