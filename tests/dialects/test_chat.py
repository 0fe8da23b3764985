"""The chat dialect on its own: usage normalization, request rewriting, and its taps fed bytes
split at any boundary, plain or encoded (xai-api.md, "Chat completions")."""

from __future__ import annotations

import gzip
import json
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.dialects.chat import ChatDialect, chat_usage
from daemon.record import CallRecord, Unmetered, Usage
from daemon.testing import XAI_CHAT_USAGE, make_record

XAI_USAGE = XAI_CHAT_USAGE  # real grok-4-fast-reasoning sample from xai-api.md


def test_xai_reasoning_is_outside_completion_tokens() -> None:
    assert chat_usage(XAI_USAGE) == Usage(
        input_tokens=165,
        cached_input_tokens=156,
        output_tokens=127,
        reasoning_tokens=125,
        reported_cost_ticks=731000,
    )


def test_openai_reasoning_is_inside_completion_tokens() -> None:
    u = {
        "prompt_tokens": 10,
        "completion_tokens": 50,
        "total_tokens": 60,
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    assert chat_usage(u) == Usage(input_tokens=10, output_tokens=50, reasoning_tokens=30)


def test_garbage_usage_values_count_as_zero() -> None:
    u = {"prompt_tokens": "12", "completion_tokens": -3, "prompt_tokens_details": None}
    assert chat_usage(u) == Usage()


def test_injects_include_usage_without_touching_other_bytes() -> None:
    body = b'{"model":"grok-4","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    r = make_record()
    out = ChatDialect().inspect_request(r, body)
    assert out is not None and r.usage_injected and r.stream
    assert json.loads(out)["stream_options"] == {"include_usage": True}
    assert out.replace(b'"stream_options":{"include_usage":true},', b"") == body


def test_client_that_asked_for_usage_is_left_alone() -> None:
    body = b'{"model":"grok-4","stream":true,"stream_options":{"include_usage":true}}'
    r = make_record()
    assert ChatDialect().inspect_request(r, body) is None and not r.usage_injected


def test_stream_options_without_include_usage_is_completed() -> None:
    body = b'{"model":"grok-4","stream":true,"stream_options":{"include_obfuscation":false}}'
    r = make_record()
    out = ChatDialect().inspect_request(r, body)
    assert out is not None
    assert json.loads(out)["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }


def test_deferred_post_is_not_billable() -> None:
    r = make_record()
    ChatDialect().inspect_request(r, b'{"model":"grok-4","deferred":true}')
    assert r.deferred and not r.billable


def chunk(content: str | None, **extra: object) -> dict[str, object]:
    c: dict[str, object] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "grok-4-fast-reasoning",
        "system_fingerprint": "fp_abc",
        **extra,
    }
    if content is not None:
        c["choices"] = [{"index": 0, "delta": {"content": content}}]
    return c


def sse(events: list[dict[str, object]], sep: bytes = b"\n\n") -> bytes:
    frames = [b"data: " + json.dumps(e).encode() + sep for e in events]
    return b"".join(frames) + b"data: [DONE]" + sep


STREAM_EVENTS = [chunk("Hello"), chunk(" world"), chunk(None, choices=[], usage=XAI_USAGE)]
STREAM = sse(STREAM_EVENTS)
STREAM_WITHOUT_USAGE = sse(STREAM_EVENTS[:2])


def run_tap(
    body: bytes,
    cuts: list[int],
    *,
    filtering: bool,
    encoding: str = "",
    content_type: str = "text/event-stream",
) -> tuple[CallRecord, bytes]:
    r = make_record(usage_injected=filtering, stream=True)
    tap = ChatDialect().tap(r, content_type, lambda: 0.5, encoding)
    forwarded = []
    points = sorted({c for c in cuts if 0 < c < len(body)})
    for start, end in zip([0, *points], [*points, len(body)], strict=True):
        piece = body[start:end]
        out = tap.feed(piece)
        forwarded.append(piece if out is None else out)
    tail = tap.finish(True)
    forwarded.append(tail or b"")
    return r, b"".join(forwarded)


@settings(max_examples=300, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12),
    filtering=st.booleans(),
    crlf=st.booleans(),
)
def test_sse_split_anywhere_meters_exactly(cuts: list[int], filtering: bool, crlf: bool) -> None:
    body = sse(STREAM_EVENTS, b"\r\n\r\n") if crlf else STREAM
    r, forwarded = run_tap(body, cuts, filtering=filtering)
    assert r.usage == chat_usage(XAI_USAGE)
    assert (r.model, r.fingerprint, r.response_id) == (
        "grok-4-fast-reasoning",
        "fp_abc",
        "chatcmpl-1",
    )
    assert r.metered and r.ttft_ms == 500.0
    expected = (
        (sse(STREAM_EVENTS[:2], b"\r\n\r\n") if crlf else STREAM_WITHOUT_USAGE)
        if filtering
        else body
    )
    assert forwarded == expected


def test_cumulative_usage_on_every_chunk_keeps_the_last() -> None:
    u1 = {**XAI_USAGE, "completion_tokens": 1, "total_tokens": 291}
    body = sse([chunk("a", usage=u1), chunk("b", usage=XAI_USAGE)])
    r, _ = run_tap(body, [], filtering=False)
    assert r.usage == chat_usage(XAI_USAGE)


def test_stream_without_usage_is_unmetered() -> None:
    r, _ = run_tap(STREAM_WITHOUT_USAGE, [], filtering=False)
    assert r.usage is None and r.unmetered_reason is Unmetered.NO_USAGE


def test_malformed_stream_is_relayed_as_is_and_unmetered() -> None:
    body = b"data: {not json\n\ndata: [DONE]\n\n"
    r, forwarded = run_tap(body, [7], filtering=False)
    assert forwarded == body and r.unmetered_reason is Unmetered.MALFORMED


def test_gzip_stream_unfiltered_is_relayed_as_sent() -> None:
    body = gzip.compress(STREAM)
    r, forwarded = run_tap(body, [10, 50], filtering=False, encoding="gzip")
    assert forwarded == body and r.usage == chat_usage(XAI_USAGE)


COMPRESS = {
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}


@pytest.mark.parametrize("coding", list(COMPRESS))
def test_compressed_stream_is_filtered_and_forwarded_decoded(coding: str) -> None:
    """The injected usage chunk is removed from a compressed stream too: the tap decodes it and
    forwards the rest decoded (the relay drops Content-Encoding), so the client never sees it."""
    body = COMPRESS[coding](STREAM)
    r, forwarded = run_tap(body, [3, 10, 50, len(body) - 2], filtering=True, encoding=coding)
    assert forwarded == STREAM_WITHOUT_USAGE
    assert r.usage == chat_usage(XAI_USAGE) and r.metered


def test_json_body_split_and_gzipped() -> None:
    obj = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "model": "grok-3",
        "system_fingerprint": "fp_x",
        "choices": [],
        "usage": XAI_USAGE,
    }
    body = gzip.compress(json.dumps(obj).encode())
    r = make_record()
    tap = ChatDialect().tap(r, "application/json", lambda: 0.0, "gzip")
    for i in range(0, len(body), 7):
        assert tap.feed(body[i : i + 7]) is None
    tap.finish(True)
    assert r.usage == chat_usage(XAI_USAGE) and r.model == "grok-3" and r.ttft_ms is None


def test_malformed_json_body_is_unmetered() -> None:
    r = make_record()
    tap = ChatDialect().tap(r, "application/json", lambda: 0.0)
    tap.feed(b"<html>oops")
    tap.finish(True)
    assert r.unmetered_reason is Unmetered.MALFORMED


def test_error_body_keeps_the_code_not_the_message() -> None:
    r = make_record(status=400)
    tap = ChatDialect().tap(r, "application/json", lambda: 0.0)
    tap.feed(
        b'{"code":"Client specified an invalid argument","error":"Incorrect API key '
        b'provided: xa***yz"}'
    )
    tap.finish(True)
    assert r.upstream_error == "Client specified an invalid argument" and r.metered
    assert r.error_detail is None  # the relay itself saw nothing wrong


@pytest.mark.parametrize("encoding", ["br", "zstd", "deflate"])
def test_other_encodings_are_decoded_for_the_meter(encoding: str) -> None:
    obj = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "model": "grok-3",
        "system_fingerprint": "fp_x",
        "choices": [],
        "usage": XAI_USAGE,
    }
    raw = json.dumps(obj).encode()
    body = {
        "br": lambda b: brotli.compress(b),
        "zstd": lambda b: zstandard.compress(b),
        "deflate": lambda b: zlib.compress(b),
    }[encoding](raw)
    r = make_record()
    tap = ChatDialect().tap(r, "application/json", lambda: 0.0, encoding)
    for i in range(0, len(body), 5):
        assert tap.feed(body[i : i + 5]) is None  # the client's bytes are never touched
    tap.finish(True)
    assert r.usage == chat_usage(XAI_USAGE) and r.metered


def test_stream_in_brotli_is_metered() -> None:
    body = brotli.compress(STREAM)
    r, forwarded = run_tap(body, [3, 40, 41], filtering=False, encoding="br")
    assert forwarded == body and r.usage == chat_usage(XAI_USAGE)


def test_error_event_mid_stream_is_kept_and_the_call_unmetered() -> None:
    body = (
        sse(STREAM_EVENTS[:2])[: -len(b"data: [DONE]\n\n")]
        + b'data: {"code":"Internal error","error":"The service is overloaded"}\n\n'
    )
    r, forwarded = run_tap(body, [5, 99], filtering=False)
    assert forwarded == body
    assert r.upstream_error == "Internal error" and r.unmetered_reason is Unmetered.NO_USAGE
    assert r.error_detail is None


def test_first_non_empty_model_and_id_win() -> None:
    """The one setter policy (daemon.dialects.base.note_model_and_id): a first chunk without a
    model or id leaves them open; the first chunk that names them fills them for good."""
    body = sse(
        [
            chunk("a", model="", id=None),
            chunk(None, choices=[], usage=XAI_USAGE, model="grok-4", id="chatcmpl-2"),
            chunk(None, choices=[], usage=XAI_USAGE, model="grok-other", id="chatcmpl-3"),
        ]
    )
    r, _ = run_tap(body, [], filtering=False)
    assert (r.model, r.response_id) == ("grok-4", "chatcmpl-2")


def test_reasoning_beyond_completion_proves_xais_convention_without_a_total() -> None:
    """No total_tokens to tell the conventions apart: reasoning larger than completion cannot be
    a part of it (OpenAI's way), so it is outside it (xAI's): output = completion + reasoning."""
    u = {
        "prompt_tokens": 165,
        "completion_tokens": 2,
        "completion_tokens_details": {"reasoning_tokens": 125},
    }
    assert chat_usage(u) == Usage(input_tokens=165, output_tokens=127, reasoning_tokens=125)
    inside = {**u, "completion_tokens": 200}  # no total, reasoning within: OpenAI's way
    assert chat_usage(inside).output_tokens == 200
    odd_total = {**u, "total_tokens": 228}  # a total that fits neither convention
    assert chat_usage(odd_total).output_tokens == 127
