"""The gRPC port's front: our own listener before grpc's, so the wrong protocol there says so.

grpc core answers whatever reaches its socket with HTTP/2 frames and logs nothing; a client
speaking HTTP/1.1 there learns nothing. So the public gRPC port is an asyncio server of ours and
grpc.aio listens on an internal address only it and we know (a unix socket in a private temp
directory). Each connection passes `daemon.sniff.GrpcSniffer` first; on the HTTP/2 preface it
becomes one `_Pipe` pair relaying bytes both ways, untouched, to grpc's listener.

The pipe is the hot path (every gRPC frame crosses it), so it is asyncio Protocols, not streams:
each chunk the loop hands ``data_received`` goes to the other transport's ``write`` as it is (no
copy, no buffer of ours). Flow control is the transports' own: when one's write buffer passes its
high-water mark its protocol pauses reading on the other side, and resumes it on drain. An EOF is
passed on as a half-close; a closed (or reset) side closes (or aborts) the other.

`stop_accepting` closes the listening socket when the relay drains; connections keep flowing
until grpc's own stop ends their calls and closes its side (which closes ours); `close` ends any
left.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import grpc.aio
import structlog

from daemon.sniff import GrpcSniffer
from daemon.tasks import spawn

log = structlog.get_logger("xai_meter.grpc")

FIRST_BYTES_TIMEOUT = 5.0  # seconds a new connection has to say what it speaks


class _Pipe(asyncio.Protocol):
    """One side of a relayed connection: what its transport reads goes to ``peer``."""

    __slots__ = ("_front", "eof", "other", "peer", "transport")

    def __init__(self, front: GrpcFront) -> None:
        self._front = front
        self.transport: Any = None  # uvloop's transports: duck-typed
        self.peer: Any = None  # the other side's transport, once both are up
        self.other: _Pipe | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.peer.write(data)

    def pause_writing(self) -> None:  # our transport's buffer is full: stop reading the other
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()

    def eof_received(self) -> bool | None:
        self.eof = True
        other = self.other
        if other is None or other.eof or not self.peer.can_write_eof():
            return None  # both halves done (or no half-close there): close
        self.peer.write_eof()
        return True  # keep writing the other way

    def connection_lost(self, exc: Exception | None) -> None:
        self._front.pipes.discard(self)
        peer = self.peer
        if peer is not None:
            if exc is None:
                peer.close()  # after what is still buffered for it
            else:
                peer.abort()
        self.peer = None
        self.other = None


class GrpcFront:
    """The public gRPC listener: sniffs each connection, relays gRPC to grpc's own listener (a
    unix socket in a private temp directory made at `listen`), answers anything else. ``rest``
    names the HTTP relay's base URL; ``timeout``: seconds a connection has to say something
    (read per connection)."""

    def __init__(self, rest: Callable[[], str], timeout: float = FIRST_BYTES_TIMEOUT) -> None:
        self.rest = rest
        self.timeout = timeout
        self.pipes: set[_Pipe] = set()  # the client side of each relayed connection
        self._dir = ""  # made at `listen`: 0700, ours only
        self.socket_path = ""
        self._server: asyncio.Server | None = None
        self._connecting: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int, server: grpc.aio.Server) -> int:
        """Listen on host:port (0: a free one), and have grpc's `server` listen on the internal
        address; the port. Raises `OSError` when either cannot be had."""
        loop = asyncio.get_running_loop()
        self._dir = tempfile.mkdtemp(prefix="xai-meter-grpc-")
        self.socket_path = os.path.join(self._dir, "grpc.sock")
        internal = f"unix:{self.socket_path}"
        try:
            self._server = await loop.create_server(
                self._sniffer, host, port, reuse_address=True, start_serving=False
            )
            try:
                if not server.add_insecure_port(internal):
                    raise RuntimeError(f"grpc could not listen on {internal}")
            except RuntimeError as exc:  # grpc: "Failed to bind to address ..."
                raise OSError(str(exc)) from None
        except OSError:
            await self.close()
            raise
        return int(self._server.sockets[0].getsockname()[1])

    async def serve(self) -> None:
        """Start accepting (grpc's listener is up)."""
        assert self._server is not None
        await self._server.start_serving()

    def _sniffer(self) -> GrpcSniffer:
        return GrpcSniffer(self._preface, self.rest, self.timeout)

    def _preface(self, transport: Any, seen: bytes) -> None:
        """A gRPC client: connect its pipe to grpc's listener, `seen` first."""
        client = _Pipe(self)
        client.transport = transport
        transport.set_protocol(client)
        transport.pause_reading()  # until grpc's side is there to take it
        self.pipes.add(client)
        task = spawn(self._connect(client, seen), name="grpc-front-connect")
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, client: _Pipe, seen: bytes) -> None:
        inner = _Pipe(self)
        # grpc speaks first (its SETTINGS) as soon as it accepts: its side writes to the client
        # from its first byte on
        inner.peer, inner.other = client.transport, client
        try:
            await asyncio.get_running_loop().create_unix_connection(lambda: inner, self.socket_path)
        except OSError as exc:  # grpc's listener is gone (stopping)
            log.warning("grpc_front_connect_failed", error=str(exc))
            client.transport.close()
            return
        if client.transport.is_closing():  # the client left meanwhile
            inner.transport.close()
            return
        client.peer, client.other = inner.transport, inner
        inner.transport.write(seen)
        client.transport.resume_reading()

    def stop_accepting(self) -> None:
        """Close the listening socket; connections made go on."""
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        """End every connection left and remove the internal socket's directory."""
        self.stop_accepting()
        for task in list(self._connecting):
            task.cancel()
        for pipe in list(self.pipes):
            if pipe.transport is not None:
                pipe.transport.close()
        self.pipes.clear()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
