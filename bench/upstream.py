"""A cheap fake of xAI's `POST /v1/chat/completions`, for the benchmark only.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length request bodies, chunked responses)
over a raw asyncio protocol, so that it costs the load-generating core as little as possible
and every relay under test is the bottleneck, not this server. Answers are deterministic (same
request, same bytes), so a relayed body can be compared byte for byte with a direct one.

Per request, from the query string or an ``X-Bench-*`` header (the header wins):

* ``chunks`` / ``X-Bench-Chunks``: content chunks in a stream (default 20);
* ``interval_ms`` / ``X-Bench-Interval-Ms``: pause between stream chunks (default 0);
* ``usage_null`` / ``X-Bench-Usage-Null``: 1 to put ``"usage":null`` in every chunk, as some
  OpenAI-compatible servers do (default 0);
* ``burst`` / ``X-Bench-Burst``: 1 to write the whole stream (head, every event, the end) in one
  write and one HTTP chunk, as a fast model or a buffering proxy delivers it: the relay reads
  many events at once (default 0: one write and one chunk per event). Pacing is ignored then.

``GET /v1/language-models``, ``/v1/image-generation-models`` and ``/v1/models`` list the one
model with its prices, so a metering relay can price the calls.

A JSON body with ``"stream": true`` gets an SSE stream: ``data: {chunk}\\n\\n`` events with the
same id, model and system_fingerprint, a ``"choices":[]`` usage chunk when the request has
``stream_options.include_usage``, then ``data: [DONE]``. Otherwise a chat completion object.

Run: ``python bench/upstream.py --port 0`` prints ``{"event": "listening", "url": ...}`` on
stdout once it accepts connections; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import dataclass
from urllib.parse import parse_qsl

import orjson

MODEL = "grok-4-fast-reasoning"
FINGERPRINT = "fp_9362061f30"
COMPLETION_ID = "3b0f1c3e-8a43-4f0e-9a39-2e6d9d0c5b71"
CREATED = 1764131000
# A real grok-4-fast-reasoning bill (see shared/xai-api.md): 165 in (156 cached), 2 out,
# 125 reasoning, 731000 ticks.
USAGE: dict[str, object] = {
    "prompt_tokens": 165,
    "completion_tokens": 2,
    "total_tokens": 292,
    "prompt_tokens_details": {
        "text_tokens": 165,
        "audio_tokens": 0,
        "image_tokens": 0,
        "cached_tokens": 156,
    },
    "completion_tokens_details": {
        "reasoning_tokens": 125,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
    "num_sources_used": 0,
    "cost_in_usd_ticks": 731000,
}
# The model's listing (prices in 1e-10 USD per token), so the daemon can price calls: with
# these, USAGE costs 9*2000 + 156*500 + 127*5000 = 731000 ticks, as billed.
LANGUAGE_MODEL: dict[str, object] = {
    "id": MODEL,
    "fingerprint": FINGERPRINT,
    "created": 1758240000,
    "object": "model",
    "owned_by": "xai",
    "version": "1.0",
    "input_modalities": ["text", "image"],
    "output_modalities": ["text"],
    "prompt_text_token_price": 2000,
    "cached_prompt_text_token_price": 500,
    "prompt_image_token_price": 2000,
    "completion_text_token_price": 5000,
    "search_price": 250000000,
    "aliases": ["grok-4-fast", "grok-4-fast-reasoning-latest"],
}
LISTINGS: dict[bytes, bytes] = {
    b"/v1/language-models": orjson.dumps({"models": [LANGUAGE_MODEL]}),
    b"/v1/image-generation-models": orjson.dumps({"models": []}),
    b"/v1/models": orjson.dumps(
        {
            "object": "list",
            "data": [{"id": MODEL, "created": 1758240000, "object": "model", "owned_by": "xai"}],
        }
    ),
}
WORDS = ("The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".")
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
CACHE_SIZE = 256
_CONTROL_HEADERS = (
    b"x-bench-chunks",
    b"x-bench-interval-ms",
    b"x-bench-usage-null",
    b"x-bench-burst",
)
_TASKS: set[asyncio.Task[None]] = set()  # paced streams being written


@dataclass(frozen=True, slots=True)
class Shape:
    """What one request asks for; the key of the answer cache."""

    stream: bool
    include_usage: bool
    chunks: int
    usage_null: bool
    model: str
    burst: bool = False


def completion_body(shape: Shape) -> bytes:
    return orjson.dumps(
        {
            "id": COMPLETION_ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi!", "refusal": None},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
            "system_fingerprint": FINGERPRINT,
        }
    )


def stream_events(shape: Shape) -> list[bytes]:
    """The SSE events of one stream, each ``data: ...\\n\\n``, in order."""
    events: list[bytes] = []
    n = max(shape.chunks, 1)
    for i in range(n):
        delta: dict[str, object] = {"content": WORDS[i % len(WORDS)]}
        if i == 0:
            delta["role"] = "assistant"
        choice: dict[str, object] = {"index": 0, "delta": delta}
        if i == n - 1:
            choice["finish_reason"] = "stop"
        chunk: dict[str, object] = {
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "choices": [choice],
            "system_fingerprint": FINGERPRINT,
        }
        if shape.usage_null:
            chunk["usage"] = None
        events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    if shape.include_usage:
        events.append(
            b"data: "
            + orjson.dumps(
                {
                    "id": COMPLETION_ID,
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": MODEL,
                    "choices": [],
                    "usage": USAGE,
                    "system_fingerprint": FINGERPRINT,
                }
            )
            + b"\n\n"
        )
    events.append(b"data: [DONE]\n\n")
    return events


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _error(status: str, message: str) -> bytes:
    body = orjson.dumps({"code": "bench_upstream", "error": message})
    return (
        _head(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        + body
    )


class Answers:
    """Prepared bytes per request shape (bodies are identical within a benchmark phase)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, bytes], tuple[Shape, list[bytes]]] = {}

    def get(
        self, query: bytes, body: bytes, headers: dict[bytes, bytes]
    ) -> tuple[Shape, list[bytes]]:
        key = (query + b"|" + b"|".join(headers.get(h, b"") for h in _CONTROL_HEADERS), body)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        shape = self._shape(query, body, headers)
        if shape.stream:
            parts = [
                _head(
                    "200 OK",
                    [
                        ("Content-Type", "text/event-stream"),
                        ("Cache-Control", "no-cache"),
                        ("Transfer-Encoding", "chunked"),
                    ],
                )
            ]
            events = stream_events(shape)
            if shape.burst:  # one write: head, every event in one HTTP chunk, the end
                parts = [parts[0] + _chunked(b"".join(events)) + b"0\r\n\r\n"]
            else:
                parts += [_chunked(e) for e in events]
                parts.append(b"0\r\n\r\n")
        else:
            body_out = completion_body(shape)
            parts = [
                _head(
                    "200 OK",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(body_out)))],
                )
                + body_out
            ]
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = (shape, parts)
        return shape, parts

    @staticmethod
    def _shape(query: bytes, body: bytes, headers: dict[bytes, bytes]) -> Shape:
        params = dict(parse_qsl(query.decode("latin-1")))

        def control(name: str, header: bytes, default: int) -> int:
            raw = headers.get(header)
            value = raw.decode("latin-1") if raw is not None else params.get(name)
            try:
                return int(value) if value is not None else default
            except ValueError:
                return default

        try:
            obj = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            obj = {}
        if not isinstance(obj, dict):
            obj = {}
        options = obj.get("stream_options")
        return Shape(
            stream=obj.get("stream") is True,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            chunks=min(max(control("chunks", b"x-bench-chunks", 20), 1), 100_000),
            usage_null=control("usage_null", b"x-bench-usage-null", 0) == 1,
            model=str(obj.get("model", "")),
            burst=control("burst", b"x-bench-burst", 0) == 1,
        )

    @staticmethod
    def interval(query: bytes, headers: dict[bytes, bytes]) -> float:
        raw = headers.get(b"x-bench-interval-ms")
        if raw is None:
            raw = dict(parse_qsl(query.decode("latin-1"))).get("interval_ms", "0").encode()
        try:
            return min(max(float(raw) / 1000.0, 0.0), 10.0)
        except ValueError:
            return 0.0


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection; requests are answered one at a time, in order."""

    def __init__(self, answers: Answers) -> None:
        self._answers = answers
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False  # a paced stream is being written
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._process()

    def _process(self) -> None:
        transport = self._transport
        while transport is not None and not self._closed and not self._busy:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    transport.write(_error("431 Request Header Fields Too Large", "head"))
                    transport.close()
                return
            head = bytes(self._buf[:end]).split(b"\r\n")
            try:
                method, target, _version = head[0].split(b" ", 2)
            except ValueError:
                transport.write(_error("400 Bad Request", "bad request line"))
                transport.close()
                return
            headers: dict[bytes, bytes] = {}
            for line in head[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if b"chunked" in headers.get(b"transfer-encoding", b""):
                transport.write(_error("411 Length Required", "send Content-Length"))
                transport.close()
                return
            try:
                length = int(headers.get(b"content-length", b"0"))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                transport.write(_error("400 Bad Request", "bad Content-Length"))
                transport.close()
                return
            if len(self._buf) < end + 4 + length:
                return  # body not complete yet
            body = bytes(self._buf[end + 4 : end + 4 + length])
            del self._buf[: end + 4 + length]
            path, _, query = target.partition(b"?")
            if method == b"GET" and path in LISTINGS:
                listing = LISTINGS[path]
                transport.write(
                    _head(
                        "200 OK",
                        [
                            ("Content-Type", "application/json"),
                            ("Content-Length", str(len(listing))),
                        ],
                    )
                    + listing
                )
                continue
            if method != b"POST" or path != b"/v1/chat/completions":
                transport.write(
                    _error(
                        "404 Not Found",
                        "the bench upstream serves only "
                        "POST /v1/chat/completions and the model listings",
                    )
                )
                continue
            shape, parts = self._answers.get(query, body, headers)
            interval = Answers.interval(query, headers) if shape.stream else 0.0
            if interval > 0 and not shape.burst:
                self._busy = True
                task = asyncio.get_running_loop().create_task(self._paced(parts, interval))
                _TASKS.add(task)  # keep a reference until it is done
                task.add_done_callback(_TASKS.discard)
                return
            for part in parts:  # one write per SSE event, as a real server sends them
                transport.write(part)

    async def _paced(self, parts: list[bytes], interval: float) -> None:
        transport = self._transport
        assert transport is not None
        # Head and first event at once; then one event per interval; [DONE] and the
        # terminating chunk right after the last event (as a server flushes its tail).
        transport.write(parts[0] + parts[1])
        for part in parts[2:-2]:
            await asyncio.sleep(interval)
            if self._closed:
                return
            transport.write(part)
        if self._closed:
            return
        transport.write(b"".join(parts[-2:]))
        self._busy = False
        if self._buf:
            self._process()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    answers = Answers()
    server = await loop.create_server(
        lambda: UpstreamProtocol(answers), host, port, reuse_address=True, backlog=1024
    )
    sock_port = server.sockets[0].getsockname()[1]
    print(json.dumps({"event": "listening", "url": f"http://{host}:{sock_port}"}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 2.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
