"""A request body with a Content-Encoding goes upstream exactly as the client sent it (the relay
reads a decoded copy only, to see the model and whether it streams). A body the relay must
change (a stream asked without usage: `stream_options` injected) goes plain, without the
header. A coding the relay cannot read, bytes that do not decode, or a body that inflates past
the request limit are relayed untouched and not inspected."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import brotli
import pytest
import zstandard
from aiohttp import web

from daemon.dialects.encoding import decode_request_body
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

MODEL = "grok-4-fast-reasoning"
REQUEST = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
COMPLETION = {
    "id": "c1",
    "object": "chat.completion",
    "model": MODEL,
    "choices": [],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
}
STREAM = (
    b'data: {"id":"c1","model":"' + MODEL.encode() + b'","choices":[{"index":0,"delta":'
    b'{"content":"ok"}}]}\n\n'
    b'data: {"id":"c1","model":"' + MODEL.encode() + b'","choices":[],"usage":'
    b'{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}\n\n'
    b"data: [DONE]\n\n"
)


class RawUpstream:
    """Records each request's body as its bytes came (no decoding) and its Content-Encoding."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, str | None]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((body, request.headers.get("Content-Encoding")))
        if request.headers.get("Content-Encoding") is None and json.loads(body).get("stream"):
            return web.Response(body=STREAM, content_type="text/event-stream")
        return web.json_response(COMPLETION)


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.handle)
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    upstream.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield upstream
    finally:
        await runner.cleanup()


async def post(meter: RunningDaemon, body: bytes, coding: str) -> int:
    headers = {
        "Authorization": f"Bearer {TEST_KEY}",
        "Content-Type": "application/json",
        "Content-Encoding": coding,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(meter.base_url + "/chat/completions", data=body, headers=headers) as answer,
    ):
        await answer.read()
        return answer.status


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("zstd", zstandard.ZstdCompressor().compress),
        ("gzip, br", lambda b: brotli.compress(gzip.compress(b))),
    ],
)
async def test_a_coded_body_goes_upstream_as_sent_and_its_model_is_read(
    start_daemon: DaemonFactory, raw_upstream: RawUpstream, coding: str, encode: Any
) -> None:
    meter = await start_daemon(raw_upstream.url)
    body = encode(REQUEST)
    assert await post(meter, body, coding) == 200
    assert raw_upstream.seen == [(body, coding)]
    (row,) = await meter.rows(1)
    assert (row["requested_model"], row["input_tokens"], row["output_tokens"]) == (MODEL, 7, 3)


async def test_a_stream_whose_body_the_relay_changes_goes_plain(
    start_daemon: DaemonFactory, raw_upstream: RawUpstream
) -> None:
    meter = await start_daemon(raw_upstream.url)
    streamed = json.dumps({**json.loads(REQUEST), "stream": True}).encode()
    assert await post(meter, gzip.compress(streamed), "gzip") == 200
    ((sent, coding),) = raw_upstream.seen
    assert coding is None
    assert json.loads(sent)["stream_options"] == {"include_usage": True}
    (row,) = await meter.rows(1)
    assert (row["input_tokens"], row["output_tokens"], row["metered"]) == (7, 3, 1)


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", b"not gzip at all"),  # does not decode
        ("compress", REQUEST),  # a coding the relay cannot read
        ("gzip", gzip.compress(b"{" + b" " * 40_000_000 + b"}")),  # inflates past the limit
    ],
)
async def test_a_body_that_cannot_be_read_is_relayed_untouched_and_not_inspected(
    start_daemon: DaemonFactory, raw_upstream: RawUpstream, coding: str, body: bytes
) -> None:
    meter = await start_daemon(raw_upstream.url, relay__max_body_bytes_in_flight=20_000_000)
    assert await post(meter, body, coding) == 200
    assert raw_upstream.seen == [(body, coding)]
    (row,) = await meter.rows(1)
    assert (row["requested_model"], row["model"], row["input_tokens"]) == (None, MODEL, 7)


def test_decoding_gives_up_as_soon_as_the_body_passes_the_limit() -> None:
    bomb = gzip.compress(b"0" * 10_000_000)
    assert decode_request_body(bomb, "gzip", 10_000_000) == b"0" * 10_000_000
    assert decode_request_body(bomb, "gzip", 9_999_999) is None
    assert decode_request_body(b"x", "identity", 1) == b"x"
    assert decode_request_body(gzip.compress(b"x"), "x-gzip , identity", 1) == b"x"
