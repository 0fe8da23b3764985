"""Answers over the scan cap (``relay.max_scan_bytes``) through the daemon: a stream with one
64 MiB event and a JSON body over the cap reach the client byte for byte, and the row says
whether usage could be read (``too_large`` when it was in what went unread).

The upstream is a loopback aiohttp server writing the huge event from one reused 64 KiB piece
(nothing here holds 64 MiB), optionally pausing inside it until the test lets it go on; the
client hashes what it gets as it comes."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from daemon.tasks import spawn
from daemon.testing import TEST_KEY, DaemonFactory

PIECE = 1 << 16
HUGE = 64 << 20  # one event of 64 MiB, over the default cap of 16 MiB
GATE_AT = 32 << 20  # a paused stream stops this far into the huge event
FILL = b"x" * PIECE
HEAD = {"id": "chatcmpl-big", "model": "grok-4.7", "object": "chat.completion.chunk"}
USAGE = {"prompt_tokens": 4321, "completion_tokens": 1024, "total_tokens": 5345}
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
BOUND = 60  # seconds: a guard against a hang, never a measure


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


FIRST = sse({**HEAD, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "A"}}]})
USAGE_EVENT = sse({**HEAD, "choices": [], "usage": USAGE})
DONE = b"data: [DONE]\n\n"


def huge_stream(usage_in_huge: bool, usage_after: bool) -> Iterator[bytes]:
    """FIRST, one chat chunk with 64 MiB of content (carrying the usage too, if asked), then
    the usage event (if asked) and ``[DONE]``."""
    yield FIRST
    yield b'data: {"id":"chatcmpl-big","model":"grok-4.7","choices":[{"delta":{"content":"'
    for _ in range(HUGE // PIECE):
        yield FILL
    yield b'"}}]' + (b',"usage":' + orjson.dumps(USAGE) if usage_in_huge else b"") + b"}\n\n"
    if usage_after:
        yield USAGE_EVENT
    yield DONE


def digest(pieces: Iterator[bytes]) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    for piece in pieces:
        h.update(piece)
        size += len(piece)
    return size, h.hexdigest()


class Upstream:
    """``POST /v1/chat/completions``: a stream (`huge_stream`, shaped by the X-Usage-In-Huge
    and X-Usage-After headers; X-Gate pauses it GATE_AT bytes into the huge event until
    `release` is set), or with ``"stream": false`` a small completion. ``POST
    /v1/images/generations``: one image of X-Image-Bytes base64 bytes, with its usage."""

    def __init__(self) -> None:
        self.url = ""
        self.release = asyncio.Event()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
            message = {"role": "assistant", "content": "ok"}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return web.json_response({**HEAD, "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sent = 0
        gate = request.headers.get("X-Gate") == "1"
        pieces = huge_stream(
            request.headers["X-Usage-In-Huge"] == "1", request.headers["X-Usage-After"] == "1"
        )
        for piece in pieces:
            await response.write(piece)
            sent += len(piece)
            if gate and sent >= GATE_AT:
                gate = False
                await self.release.wait()
        await response.write_eof()
        return response

    async def images(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=images_body(int(request.headers["X-Image-Bytes"])))


def images_body(size: int) -> bytes:
    image = {"b64_json": "A" * size, "mime_type": "image/jpeg"}
    return orjson.dumps({"data": [image], "usage": {"cost_in_usd_ticks": 700000000}})


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.chat)
    app.router.add_post("/v1/images/generations", server.images)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    yield server
    server.release.set()
    await runner.cleanup()


async def read_stream(
    resp: aiohttp.ClientResponse, seen: int = 0, got: asyncio.Event | None = None
) -> tuple[int, str]:
    """What the client got (length, sha256), read as it comes; `got` is set once `seen`
    bytes came."""
    h, size = hashlib.sha256(), 0
    async for piece in resp.content.iter_any():
        h.update(piece)
        size += len(piece)
        if got is not None and size >= seen:
            got.set()
    return size, h.hexdigest()


def stream_request(include_usage: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "grok-4.7", "messages": [], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


@pytest.mark.parametrize(
    ("usage_after", "metered"),
    [(False, False), (True, True)],
    ids=["usage only in the huge event", "usage again after it"],
)
async def test_a_64_mib_event_reaches_the_client_whole_and_the_row_says_what_was_read(
    upstream: Upstream, start_daemon: DaemonFactory, usage_after: bool, metered: bool
) -> None:
    """Passed through (the client asked for usage): every byte arrives; the huge event is not
    read, so usage in it alone leaves the call unmetered ``too_large``, and usage again in a
    later event meters it exactly."""
    meter = await start_daemon(upstream.url)
    headers = {**AUTH, "X-Usage-In-Huge": "1", "X-Usage-After": "1" if usage_after else "0"}
    async with (
        asyncio.timeout(BOUND),
        aiohttp.ClientSession() as http,
        http.post(
            f"{meter.base_url}/chat/completions", json=stream_request(True), headers=headers
        ) as resp,
    ):
        assert resp.status == 200
        got = await read_stream(resp)
    assert got == digest(huge_stream(usage_in_huge=True, usage_after=usage_after))
    [row] = await meter.rows(1)
    if metered:
        assert (row["metered"], row["unmetered_reason"]) == (1, None)
        assert (row["input_tokens"], row["output_tokens"]) == (4321, 1024)
    else:
        assert (row["metered"], row["unmetered_reason"]) == (0, "too_large")
        assert (row["input_tokens"], row["output_tokens"]) == (None, None)
    assert (row["model"], row["response_id"], row["status"]) == ("grok-4.7", "chatcmpl-big", 200)


async def test_another_call_completes_while_a_huge_event_is_half_relayed(
    upstream: Upstream, start_daemon: DaemonFactory
) -> None:
    """The relay rewrites this stream (it added include_usage, so it removes the usage event):
    once the event passes the cap its bytes go on to the client as they come, with the
    upstream paused 32 MiB into it; meanwhile another call completes. Then the rest comes and
    the stream arrives whole, less the usage event, metered exactly."""
    # (the paused upstream is silent until released: no read timeout may end the call first)
    meter = await start_daemon(upstream.url, upstream__read_timeout=BOUND)
    headers = {**AUTH, "X-Usage-In-Huge": "0", "X-Usage-After": "1", "X-Gate": "1"}
    half = asyncio.Event()
    async with (
        asyncio.timeout(BOUND),
        aiohttp.ClientSession() as http,
        http.post(
            f"{meter.base_url}/chat/completions", json=stream_request(False), headers=headers
        ) as resp,
    ):
        reading = spawn(read_stream(resp, GATE_AT, half))
        halfway = spawn(half.wait())
        await asyncio.wait({reading, halfway}, return_when=asyncio.FIRST_COMPLETED)
        assert half.is_set() and not reading.done()  # the upstream is paused mid-event
        async with http.post(
            f"{meter.base_url}/chat/completions",
            json={"model": "grok-4.7", "messages": []},
            headers=AUTH,
        ) as other:
            assert (other.status, (await other.json())["usage"]["total_tokens"]) == (200, 10)
        [short] = await meter.rows(1)
        assert (short["stream"], short["output_tokens"]) == (0, 3)
        upstream.release.set()
        got = await reading
    want = (p for p in huge_stream(usage_in_huge=False, usage_after=True) if p != USAGE_EVENT)
    assert got == digest(want)
    [long] = [row for row in await meter.rows(2) if row["stream"]]
    assert (long["metered"], long["input_tokens"], long["output_tokens"]) == (1, 4321, 1024)


@pytest.mark.parametrize("over", [False, True])
async def test_a_json_body_over_the_cap_is_relayed_whole_and_too_large(
    upstream: Upstream, start_daemon: DaemonFactory, over: bool
) -> None:
    cap = 1 << 20
    meter = await start_daemon(upstream.url, relay__max_scan_bytes=cap)
    size = cap - len(images_body(0)) + over  # the body is the cap, or one byte over it
    async with (
        asyncio.timeout(BOUND),
        aiohttp.ClientSession() as http,
        http.post(
            f"{meter.base_url}/images/generations",
            json={"model": "grok-imagine-image", "prompt": "a cat", "response_format": "b64_json"},
            headers={**AUTH, "X-Image-Bytes": str(size)},
        ) as resp,
    ):
        body = await resp.read()
    assert body == images_body(size) and len(body) == cap + over
    [row] = await meter.rows(1)
    if over:
        assert (row["metered"], row["unmetered_reason"], row["images"]) == (0, "too_large", None)
    else:
        assert (row["metered"], row["unmetered_reason"], row["images"]) == (1, None, 1)
        assert row["reported_cost_ticks"] == 700000000
