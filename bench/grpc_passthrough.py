"""The gRPC floor: a bare grpc.aio pass-through relay with no metering at all.

What any grpc.aio relay must do and nothing more, as `bench/passthrough.py` is for HTTP: one
grpc.aio server whose generic handler takes any method, one kept-open channel to the upstream,
no serializers on either side (bytes in, bytes out), the client's metadata forwarded (minus the
keys gRPC sets itself), the deadline carried over, the upstream's initial metadata, messages,
status, details and trailing metadata sent back. Server-streaming methods (the ones xai-sdk
streams) are relayed message by message; any other method as unary. The daemon's gRPC cost over
this is the cost of metering.

Run: ``python bench/grpc_passthrough.py --upstream 127.0.0.1:U --port 0`` prints
``{"event": "listening", "url": "http://127.0.0.1:PORT", "target": "127.0.0.1:PORT"}`` on
stdout once it serves; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

STREAMING = frozenset({"/xai_api.Chat/GetCompletionChunk", "/xai_api.Sample/SampleTextStreaming"})
_DROP = frozenset({"user-agent", "te", "content-type", "content-length", "host"})


def _forward(metadata: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (name, value)
        for name, value in metadata or ()
        if name not in _DROP and name[:1] != ":" and not name.startswith("grpc-")
    )


class Proxy(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Any method, relayed as bytes over one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, Any] = {}

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        handler = self._handlers.get(method)
        if handler is None:
            if method in STREAMING:
                handler = grpc.unary_stream_rpc_method_handler(
                    self._stream(self._channel.unary_stream(method))
                )
            else:
                handler = grpc.unary_unary_rpc_method_handler(
                    self._unary(self._channel.unary_unary(method))
                )
            self._handlers[method] = handler
        return handler

    @staticmethod
    def _unary(upstream: Any) -> Callable[..., Any]:
        async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            call = upstream(
                request,
                metadata=_forward(context.invocation_metadata()),
                timeout=context.time_remaining(),
            )
            try:
                await context.send_initial_metadata(await call.initial_metadata())
                answer: bytes = await call
            except grpc.aio.AioRpcError as exc:
                context.set_trailing_metadata(exc.trailing_metadata() or ())
                await context.abort(exc.code(), exc.details() or "")
            context.set_trailing_metadata(await call.trailing_metadata() or ())
            return answer

        return relay

    @staticmethod
    def _stream(upstream: Any) -> Callable[..., Any]:
        async def relay(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            call = upstream(
                request,
                metadata=_forward(context.invocation_metadata()),
                timeout=context.time_remaining(),
            )
            try:
                await context.send_initial_metadata(await call.initial_metadata())
                async for message in call:
                    yield message
            except grpc.aio.AioRpcError as exc:
                context.set_trailing_metadata(exc.trailing_metadata() or ())
                await context.abort(exc.code(), exc.details() or "")
            context.set_trailing_metadata(await call.trailing_metadata() or ())

        return relay


async def serve(host: str, port: int, upstream: str) -> None:
    limits = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    channel = grpc.aio.insecure_channel(upstream, options=limits)
    server = grpc.aio.server(options=[*limits, ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((Proxy(channel),))
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
        await channel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="host:port, e.g. 127.0.0.1:8791")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.upstream))
    else:
        uvloop.run(serve(args.host, args.port, args.upstream))  # as the daemon does
    return 0


if __name__ == "__main__":
    sys.exit(main())
