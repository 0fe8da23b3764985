"""The first look at a connection, on either port: the wrong protocol gets one plain line.

HTTP port: a gRPC client (xai-sdk pointed at the relay port by mistake) opens with HTTP/2's
prior-knowledge preface, ``PRI * HTTP/2.0``. aiohttp would answer it with an obscure 400 and log
a traceback. So the relay port's connections pass `Sniffer` first: on that preface it answers one
plain HTTP/1.1 400 whose one line says where gRPC goes, writes one log line, and closes; any other
first bytes, and the connection is aiohttp's from then on (`transport.set_protocol`: one extra
call per connection, none per request). `Sniffer` also keeps the port's connection limits
(`daemon.connections.ConnectionGuard`): it is where a connection is accepted (counted, or past
``relay.max_connections`` answered 503) and where its one header timer is armed.

gRPC port, the mirror case: its connections pass `GrpcSniffer` first (`first_look` tells the
kinds apart). The whole HTTP/2 preface, and the connection goes on to ``on_preface`` (the
gRPC front relays it to grpc's own listener, `daemon.grpc_relay.front`). HTTP/1.x gets one plain
HTTP/1.1 400 line naming the HTTP relay's base URL and one ``http1_on_grpc_port`` line; TLS or
other bytes are closed with one ``not_grpc_on_grpc_port`` line; a connection that says nothing
for ``timeout`` seconds is closed with one ``grpc_port_idle`` line.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from daemon.connections import HEADER_TIMEOUT, LINGER, ConnectionGuard

log = structlog.get_logger("xai_meter.relay")

PREFACE = b"PRI * HTTP/2.0"
H2_PREFACE = PREFACE + b"\r\n\r\nSM\r\n\r\n"  # the whole of it: what a gRPC port waits for
#: An HTTP/1.x request line's start: a method token, a space (``GET /``, ``POST /v1/...``)
_HTTP1 = re.compile(rb"[A-Z][A-Z_-]{1,19} ")
_TLS = b"\x16\x03"  # a TLS handshake record (ClientHello): TLS to a plaintext port


class Look(enum.Enum):
    """What a connection's first bytes are (`first_look`)."""

    WAIT = "wait"  # too few bytes to tell yet
    H2 = "h2"  # the whole HTTP/2 preface
    HTTP1 = "http1"
    TLS = "tls"
    OTHER = "other"


def first_look(seen: bytes) -> Look:
    """Tell what a connection opened with from its first bytes (all of them so far)."""
    if seen.startswith(H2_PREFACE):
        return Look.H2
    if H2_PREFACE.startswith(seen):
        return Look.WAIT
    if seen.startswith(_TLS):
        return Look.TLS
    if _HTTP1.match(seen):
        return Look.HTTP1
    if len(seen) < 21 and re.fullmatch(rb"[A-Z][A-Z_-]{0,19}", seen):
        return Look.WAIT  # a method token so far
    return Look.OTHER


def _reply(body: str) -> bytes:
    data = body.encode()
    head = (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n"
    )
    return head + data


def h2_reply(hint: str) -> bytes:
    """The whole HTTP/1.1 answer to an HTTP/2 preface: 400, one line of text, then close."""
    return _reply(
        f"xai-meter: this port speaks HTTP/1.1 (REST, base URL http://HOST:PORT/v1); HTTP/2 and "
        f"gRPC clients such as xai-sdk go to {hint}.\n"
    )


def h1_reply(rest: str) -> bytes:
    """The whole HTTP/1.1 answer to HTTP/1.x on the gRPC port: 400, one line naming `rest`
    (the HTTP relay's base URL), then close."""
    return _reply(
        f"xai-meter: this port speaks gRPC (HTTP/2) for xai-sdk; REST and HTTP/1.1 clients go "
        f"to the HTTP relay at {rest}.\n"
    )


def _peer(transport: Any) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else None


class Sniffer(asyncio.Protocol):
    """Holds a new relay connection until its first bytes tell HTTP/1 from HTTP/2's preface,
    and keeps `guard`'s limits (`daemon.connections`): admitted or not at accept, and one header
    timer from accept that closes it if its first request's headers are not complete in time."""

    def __init__(
        self,
        factory: Callable[[], asyncio.BaseProtocol],
        hint: Callable[[], str],
        guard: ConnectionGuard,
    ) -> None:
        self._factory = factory
        self._hint = hint
        self._guard = guard
        # uvloop's transports are no asyncio.Transport subclasses: duck-typed
        self._transport: Any = None
        self._inner: Any = None  # aiohttp's protocol, once it has the connection
        self._buffer = b""
        self._admitted: bool | None = None
        self._answered = False  # past the cap, the 503 went: what else comes is dropped
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        self._admitted = admitted = guard.admit()
        if admitted is None:  # too many are being refused already: no answer, no descriptor
            transport.close()
            return
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(guard.header_timeout, self._header_deadline)

    def _header_deadline(self) -> None:
        """relay.header_timeout after accept: close the connection unless its first request's
        headers are complete (aiohttp counts the requests it parsed)."""
        self._timer = None
        transport = self._transport
        inner = self._inner
        if transport is None or transport.is_closing():
            return
        if inner is None:  # nothing (or a few bytes of a preface) came: close, say nothing
            if self._admitted:
                self._guard.reject(HEADER_TIMEOUT)
            transport.close()
            return
        self._transport = self._inner = None
        if inner._request_count:  # aiohttp's own count of the requests it parsed
            return
        self._guard.reject(HEADER_TIMEOUT)
        inner.close()  # aiohttp parses nothing more: no request may begin after this answer
        transport.write(self._guard.header_timeout_reply)
        # Half-close, and close in full a moment later: a close while the client still sends
        # would reset the connection before it read the answer (a lingering close, as nginx).
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER, transport.close)
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if self._answered or transport is None:
            return
        if not self._admitted:  # past relay.max_connections: answer, then read until it leaves
            self._answered = True
            transport.write(self._guard.busy_reply)
            if transport.can_write_eof():
                transport.write_eof()  # a close with its request unread could reset the answer
            else:
                transport.close()
            return
        seen = self._buffer + data
        if len(seen) < len(PREFACE) and PREFACE.startswith(seen):
            self._buffer = seen  # too short to tell yet
            return
        if seen.startswith(PREFACE):
            hint = self._hint()
            log.warning("http2_on_http_port", peer=_peer(transport), grpc=hint)
            transport.write(h2_reply(hint))
            transport.close()
            return
        inner: Any = self._factory()
        self._inner = inner
        self._buffer = b""
        self._guard.handed(inner, self._timer)  # from now on it is counted until aiohttp's close
        self._admitted = None  # so this protocol's own close no longer counts
        transport.set_protocol(inner)
        inner.connection_made(transport)
        inner.data_received(seen)

    def eof_received(self) -> bool | None:
        return None  # nothing was handed on yet: close

    def connection_lost(self, exc: Exception | None) -> None:
        # Only while this protocol still holds the connection (before `data_received` handed
        # it to aiohttp, whose close `ConnectionGuard.closed` counts).
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._admitted:
            self._guard.closed_before_handing()
        elif self._admitted is False:
            self._guard.done_refusing()
        self._admitted = None
        self._transport = None


class SniffingSite(web.BaseSite):
    """`web.TCPSite`'s job, each connection passing a `Sniffer` first. ``hint`` names where gRPC
    listens (or that it is off), asked when a preface comes; ``guard`` keeps the connection
    limits (`daemon.connections.ConnectionGuard`)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        hint: Callable[[], str],
        guard: ConnectionGuard,
    ) -> None:
        super().__init__(runner)
        self._host, self._port, self._hint, self._guard = host, port, hint, guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        hint, guard = self._hint, self._guard
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Sniffer(server, hint, guard), self._host, self._port, reuse_address=True
        )


class GrpcSniffer(asyncio.Protocol):
    """Holds a new gRPC-port connection until its first bytes are the whole HTTP/2 preface
    (then ``on_preface(transport, seen)`` takes it) or something else (answered and closed).
    ``rest`` names the HTTP relay's base URL, asked when HTTP/1.x comes."""

    def __init__(
        self,
        on_preface: Callable[[Any, bytes], None],
        rest: Callable[[], str],
        timeout: float,
    ) -> None:
        self._on_preface = on_preface
        self._rest = rest
        self._timeout = timeout
        self._transport: Any = None  # uvloop's transports: duck-typed
        self._timer: asyncio.TimerHandle | None = None
        self._buffer = b""
        self._answered = False  # the 400 went: what else comes is read and dropped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._idle)

    def _idle(self) -> None:
        transport = self._transport
        if transport is None:
            return
        if not self._answered:
            log.info(
                "grpc_port_idle",
                peer=_peer(transport),
                seconds=self._timeout,
                seen=len(self._buffer),
            )
        transport.close()

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        transport = self._transport
        seen = self._buffer + data
        look = first_look(seen)
        if look is Look.WAIT:
            self._buffer = seen
            return
        if look is Look.H2:
            self._stop_timer()
            self._transport = None
            self._on_preface(transport, seen)
            return
        if look is Look.HTTP1:
            rest = self._rest()
            log.warning("http1_on_grpc_port", peer=_peer(transport), rest=rest)
            transport.write(h1_reply(rest))
            # Half-close and read on until the client closes (bounded by the idle timer): a
            # close with its request's rest unread would reset the connection before it read
            # the answer.
            self._answered = True
            if transport.can_write_eof():
                transport.write_eof()
                return
        else:
            log.warning(
                "not_grpc_on_grpc_port",
                peer=_peer(transport),
                looks_like=look.value,
                first_bytes=repr(seen[:16]),
            )
        self._stop_timer()
        transport.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def eof_received(self) -> bool | None:
        if self._buffer and not self._answered:
            log.warning(
                "not_grpc_on_grpc_port",
                peer=_peer(self._transport),
                looks_like="short",
                first_bytes=repr(self._buffer[:16]),
            )
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._transport = None
