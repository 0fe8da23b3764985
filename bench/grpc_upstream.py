"""A cheap fake of xAI's gRPC ``Chat`` service (what xai-sdk calls), for the benchmark only.

A grpc.aio server with no serializers: every answer is bytes built once at start, so it costs
the load-generating core as little as a gRPC server can, and every relay under test is the
bottleneck. Answers are deterministic, so a relayed answer can be compared byte for byte with
a direct one. The model, fingerprint and usage are `bench/upstream.py`'s (the real
grok-4-fast-reasoning bill of xai-api.md: 165 in, 156 cached, 2 out, 125 reasoning, 731000
ticks), so a metering relay prices a gRPC call exactly as a REST one, from the REST listing.

* ``/xai_api.Chat/GetCompletion``: one ``GetChatCompletionResponse`` with that usage;
* ``/xai_api.Chat/GetCompletionChunk``: ``x-bench-chunks`` (metadata, default 100) content
  chunks, then a last chunk with the finish reason and the usage, ``x-bench-interval-ms``
  (default 0) apart.

Any other method answers UNIMPLEMENTED. Run: ``python bench/grpc_upstream.py --port 0`` prints
``{"event": "listening", "url": "http://127.0.0.1:PORT", "target": "127.0.0.1:PORT"}`` on
stdout once it serves; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from upstream import COMPLETION_ID, CREATED, FINGERPRINT, MODEL
from xai_sdk.proto import chat_pb2, sample_pb2, usage_pb2

GET_COMPLETION = "/xai_api.Chat/GetCompletion"
GET_COMPLETION_CHUNK = "/xai_api.Chat/GetCompletionChunk"
DEFAULT_CHUNKS = 100
USAGE = usage_pb2.SamplingUsage(
    prompt_tokens=165,
    completion_tokens=2,
    reasoning_tokens=125,
    total_tokens=292,
    prompt_text_tokens=165,
    cached_prompt_text_tokens=156,
    cost_in_usd_ticks=731000,
)
_COMMON: dict[str, Any] = {
    "id": COMPLETION_ID,
    "model": MODEL,
    "system_fingerprint": FINGERPRINT,
    "service_tier": usage_pb2.SERVICE_TIER_DEFAULT,
}


def completion() -> bytes:
    """The serialized unary answer."""
    message = chat_pb2.CompletionMessage(content="Hi.", role=chat_pb2.ROLE_ASSISTANT)
    answer = chat_pb2.GetChatCompletionResponse(
        outputs=[
            chat_pb2.CompletionOutput(
                index=0, finish_reason=sample_pb2.REASON_STOP, message=message
            )
        ],
        usage=USAGE,
        **_COMMON,
    )
    answer.created.seconds = CREATED
    return answer.SerializeToString()


def chunks(count: int) -> list[bytes]:
    """The serialized messages of a stream: `count` content chunks, then finish and usage."""
    out = []
    for index in range(count + 1):
        last = index == count
        delta = chat_pb2.Delta(
            content="" if last else ("Hi" if index == 0 else " hi"), role=chat_pb2.ROLE_ASSISTANT
        )
        chunk = chat_pb2.GetChatCompletionChunk(
            outputs=[
                chat_pb2.CompletionOutputChunk(
                    index=0,
                    delta=delta,
                    finish_reason=sample_pb2.REASON_STOP if last else sample_pb2.REASON_INVALID,
                )
            ],
            **_COMMON,
        )
        chunk.created.seconds = CREATED
        if last:
            chunk.usage.CopyFrom(USAGE)
        out.append(chunk.SerializeToString())
    return out


def _metadata_number(context: grpc.aio.ServicerContext, key: str, default: float) -> float:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return float(value)
    return default


class Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The two Chat methods, answered from bytes built once."""

    def __init__(self) -> None:
        self._completion = completion()
        self._streams: dict[int, list[bytes]] = {}
        self._unary = grpc.unary_unary_rpc_method_handler(self.get_completion)
        self._stream = grpc.unary_stream_rpc_method_handler(self.get_completion_chunk)

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        if details.method == GET_COMPLETION:
            return self._unary
        if details.method == GET_COMPLETION_CHUNK:
            return self._stream
        return None

    async def get_completion(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return self._completion

    async def get_completion_chunk(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        count = int(_metadata_number(context, "x-bench-chunks", DEFAULT_CHUNKS))
        pause = _metadata_number(context, "x-bench-interval-ms", 0.0) / 1000.0
        messages = self._streams.get(count)
        if messages is None:
            messages = self._streams.setdefault(count, chunks(count))
        for index, message in enumerate(messages):
            if pause and index:
                await asyncio.sleep(pause)
            yield message


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((Handlers(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    target = f"{host}:{bound}"
    print(
        json.dumps({"event": "listening", "url": f"http://{target}", "target": target}), flush=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop(0)


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
        uvloop.run(serve(args.host, args.port))  # as the daemon does
    return 0


if __name__ == "__main__":
    sys.exit(main())
