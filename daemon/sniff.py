"""The HTTP listener's first look at a connection: HTTP/2 spoken to an HTTP/1.1 port.

A gRPC client (xai-sdk pointed at the relay port by mistake) opens with HTTP/2's prior-knowledge
preface, ``PRI * HTTP/2.0``. aiohttp would answer it with an obscure 400 and log a traceback. So
the relay port's connections pass `Sniffer` first: on that preface it answers one plain HTTP/1.1
400 whose one line says where gRPC goes, writes one log line, and closes; any other first bytes,
and the connection is aiohttp's from then on (`transport.set_protocol`: one extra call per
connection, none per request).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("xai_meter.relay")

PREFACE = b"PRI * HTTP/2.0"


def h2_reply(hint: str) -> bytes:
    """The whole HTTP/1.1 answer to an HTTP/2 preface: 400, one line of text, then close."""
    body = (
        f"xai-meter: this port speaks HTTP/1.1 (REST, base URL http://HOST:PORT/v1); HTTP/2 and "
        f"gRPC clients such as xai-sdk go to {hint}.\n"
    ).encode()
    head = (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


class Sniffer(asyncio.Protocol):
    """Holds a new connection until its first bytes tell HTTP/1 from HTTP/2's preface."""

    def __init__(
        self, factory: Callable[[], asyncio.BaseProtocol], hint: Callable[[], str]
    ) -> None:
        self._factory = factory
        self._hint = hint
        # uvloop's transports are no asyncio.Transport subclasses: duck-typed
        self._transport: Any = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        seen = self._buffer + data
        if len(seen) < len(PREFACE) and PREFACE.startswith(seen):
            self._buffer = seen  # too short to tell yet
            return
        if seen.startswith(PREFACE):
            peer = transport.get_extra_info("peername")
            hint = self._hint()
            log.warning("http2_on_http_port", peer=str(peer[0]) if peer else None, grpc=hint)
            transport.write(h2_reply(hint))
            transport.close()
            return
        inner: Any = self._factory()
        transport.set_protocol(inner)
        inner.connection_made(transport)
        inner.data_received(seen)

    def eof_received(self) -> bool | None:
        return None  # nothing was handed on yet: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


class SniffingSite(web.BaseSite):
    """`web.TCPSite`'s job, each connection passing a `Sniffer` first. ``hint`` names where gRPC
    listens (or that it is off), asked when a preface comes."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, hint: Callable[[], str]
    ) -> None:
        super().__init__(runner)
        self._host, self._port, self._hint = host, port, hint

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        hint = self._hint
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Sniffer(server, hint), self._host, self._port, reuse_address=True
        )
