"""WebSockets through the relay: an ``Upgrade: websocket`` on any ``/v1/`` path of a configured
upstream, relayed message by message both ways and metered by a socket tap.

`Relay.handle` routes the upgrade as any call (`daemon.upstream.UpstreamRoutes`) and hands it to
`SocketRelay.relay`, which:

1. checks it is a valid upgrade (else 400, no row: nothing was relayed) and makes the socket's
   tap for its path (`daemon.dialects.socket_tap`) with the upgrade's record;
2. connects to the upstream first (aiohttp's ``ws_connect``), with the client's headers filtered
   as for HTTP (`daemon.upstream.forward_headers`, minus the handshake's own ``Sec-WebSocket-*``
   headers), its key, or the configured key when it sent none (and no ``xai-client-secret.``
   subprotocol, a browser's credential), and its subprotocols; so a failure is still an honest
   HTTP answer to the client: unreachable 502, silent 504, refused: the upstream's status
   (a 2xx that is no upgrade: 502), each one row, unbilled; an upgrade that came back round a
   loop of relays (our own Via, `daemon.loops`) is not connected at all: 508, one row;
3. accepts the client's upgrade with the subprotocol the upstream selected (none if none) and
   the upstream's response headers (hop-by-hop and handshake ones aside), then relays until
   either side ends it:

   - text and binary messages both ways, untouched (text as its raw UTF-8 bytes: never decoded
     and re-encoded), each send awaited, so a slow reader slows its writer and nothing buffers
     without bound (aiohttp's readers pause their transport past their limit); messages are
     relayed whole (a fragmented message arrives whole, in one frame), each up to
     `MAX_MESSAGE_BYTES`;
   - pings and pongs both ways (neither side answers them itself, so the far end does);
   - a close frame's code and reason both ways (one side closes: the other is closed with the
     same code and reason, then the first side's close is answered); a side that vanishes
     without one: the other gets 1001 (client gone) or, as it would have seen, its connection
     dropped (upstream gone); a protocol error on one side (a message too big, bad UTF-8...):
     the other is closed with its code;
   - each message, once relayed, is shown to the tap (a copy: parsing never delays a frame).

4. ends every row the tap owns exactly once, whatever ended the session (`Ending`): a close
   frame, a side gone, a tap or relay bug, the daemon's shutdown. When the daemon drains
   (`SocketRelay.drain`), each socket is closed with 1001 both ways as soon as no row waits for
   the upstream (a Responses turn in flight finishes first), or once `DRAIN_SHARE` of the grace
   period is over (the turn is then cut: ``shutdown``); a handler still running when the grace
   period ends is cancelled, its rows written all the same.

Each socket has its own upstream ``ClientSession``: a socket holds its connection for its whole
life and can never return it to a pool, so sharing the relay's keep-alive pool
(``upstream.max_connections``) would let a few hundred voice sessions starve every HTTP call.

Why it is long: the relay of one socket is one state machine (handshake, two pumps, five ways to
end, drain), and splitting it would scatter the one place that proves every row ends once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import structlog
from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

from daemon import tasks
from daemon.dialects import Router, socket_tap
from daemon.dialects.base import end_call
from daemon.dialects.sockets import NORMAL_CLOSE, Ending, SocketTap
from daemon.keys import KeyHasher, api_key_of
from daemon.loops import LOOP_MESSAGE, came_back
from daemon.meter import Meter
from daemon.record import CallError, CallRecord, Stage, Transport, Unmetered, new_call_id
from daemon.upstream import (
    AUTO_HEADERS,
    Upstream,
    forward_headers,
    json_error,
    make_sendable,
    read_response_headers,
    response_headers,
)

log = structlog.get_logger("xai_meter.websocket")

#: The largest message relayed, either way (aiohttp closes a side that sends a bigger one with
#: 1009). Above realtime audio chunks and TTS text by far; bounds what one message can hold.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Seconds to wait for the far side's answer to a close frame before dropping the connection.
CLOSE_TIMEOUT = 5.0
#: The share of the shutdown grace period a draining socket waits for its turn in flight.
DRAIN_SHARE = 0.75
CLIENT_SECRET_PREFIX = "xai-client-secret."  # a browser's credential (xai-api.md "Voice")
_SHUTDOWN_REASON = b"xai-meter is shutting down"
# The handshake's own headers: each hop makes its own (aiohttp's client and server do).
_HANDSHAKE = frozenset(
    istr(h)
    for h in (
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Accept",
    )
)
# Headers of a refused upgrade that describe its body, which the client does not get.
_OWN_BODY = frozenset(istr(h) for h in ("Content-Type", "Content-Encoding", "Content-Length"))
_GONE = (ConnectionError, aiohttp.ClientConnectionResetError)
# Codes a close frame may not carry (RFC 6455 7.4.1): what stands in for them when passed on.
_UNSENDABLE = {1004: 1000, 1005: 1000, 1006: 1001, 1015: 1011}

ClientSocket = aiohttp.ClientWebSocketResponse[Literal[False]]
ServerSocket = web.WebSocketResponse[Literal[False]]


class _Side(enum.Enum):
    CLIENT = "client"
    UPSTREAM = "upstream"


@dataclass(frozen=True, slots=True)
class _Stop:
    """Why one direction's pump stopped: which side did it, and with what close code (None:
    that side's connection went without a close frame) and reason."""

    side: _Side
    code: int | None = None
    reason: str = ""
    error: str | None = None  # a protocol error on that side, in aiohttp's words


class _Rows:
    """The books of one socket: the rows its tap made and has not ended (`Rows`)."""

    def __init__(self, relay: SocketRelay, template: CallRecord) -> None:
        self._relay = relay
        self.template = template  # what every row of this socket shares (the upgrade's record)
        self._open: dict[str, CallRecord] = {}

    def clock(self) -> float:
        return self._relay.clock()

    def new(self) -> CallRecord:
        record = self.template.derive(
            self._relay.wall(), self._relay.clock(), status=None, transport=Transport.WEBSOCKET
        )
        self._open[record.id] = record
        self._relay.meter.begin(record)  # a row from now on, whatever happens
        return record

    def adopt(self, record: CallRecord) -> None:
        self._open[record.id] = record

    def discard(self, record: CallRecord) -> None:
        if self._open.pop(record.id, None) is not None:
            self._relay.meter.void(record)

    def finish(self, record: CallRecord) -> None:
        if self._open.pop(record.id, None) is None:
            return  # ended already: a row goes to the meter once
        end_call(record, self._relay.clock())
        self._relay.meter.finish(record)

    def finish_all(self, ending: Ending, broken: bool) -> None:
        """The net under the tap: end what it left open; ``broken``: a billing tap raised, so
        nothing it left is metered (``parser_error``)."""
        for record in list(self._open.values()):
            if broken:
                record.usage = None
                record.mark_unmetered(Unmetered.PARSER_ERROR)
            ending.apply(record, in_flight=record is not self.template)
            self.finish(record)


class _Session:
    """One relayed socket: the tap, guarded (a tap that raises is dropped), and its rows."""

    def __init__(self, tap: SocketTap, rows: _Rows) -> None:
        self.tap = tap
        self.rows = rows
        self.broken = False
        self.ended = False

    def observe(self, side: _Side, data: bytes, text: bool) -> None:
        if self.broken:
            return
        try:
            if side is _Side.CLIENT:
                self.tap.client_message(data, text)
            else:
                self.tap.server_message(data, text)
        except Exception:
            self.drop("socket_tap_failed")

    def inspect(self, query: Mapping[str, str]) -> None:
        try:
            self.tap.inspect_upgrade(query)
        except Exception:
            self.drop("socket_tap_failed")

    def opened(self) -> None:
        try:
            self.tap.opened()
        except Exception:
            self.drop("socket_tap_failed")

    def end(self, ending: Ending) -> None:
        """End every row, once: the tap's own ending first, then the net (later calls: none)."""
        if self.ended:
            return
        self.ended = True
        if not self.broken:
            try:
                self.tap.close(ending)
            except Exception:
                self.drop("socket_tap_close_failed")
        self.rows.finish_all(ending, self.broken and self.tap.billable)

    def drop(self, event: str) -> None:
        """The tap raised: it sees no more messages; its rows end unmetered (`finish_all`)."""
        log.exception(event, call_id=self.tap.upgrade.id)
        self.broken = True
        self.tap.idle.set()  # a drain must not wait on a tap that no longer counts


class SocketRelay:
    """Relays WebSocket upgrades (see the module docstring); one per `daemon.relay.Relay`."""

    def __init__(
        self,
        meter: Meter,
        keys: KeyHasher,
        router: Router,
        note_key: Callable[[str, Upstream], None],
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        self.meter = meter
        self.keys = keys
        self.router = router
        self.note_key = note_key
        self.clock = clock
        self.wall = wall
        self.draining = asyncio.Event()
        self.turn_grace = 0.0  # seconds a drained socket waits for its turn in flight

    def drain(self, grace_period: float) -> None:
        """The daemon is stopping, giving calls ``grace_period`` seconds: every socket closes
        with 1001 as soon as no row of it waits for the upstream, or after `DRAIN_SHARE` of the
        grace period (the rest leaves time for the close handshakes before the listener ends
        whatever is left)."""
        self.turn_grace = grace_period * DRAIN_SHARE
        self.draining.set()

    async def relay(
        self, request: web.BaseRequest, upstream: Upstream, path: str, raw_path: str
    ) -> web.StreamResponse:
        """Relay one WebSocket session; see the module docstring for every ending."""
        offered = _protocols(request.headers)
        if not web.WebSocketResponse(protocols=offered).can_prepare(request):
            return json_error(
                400, "bad_upgrade", "The request asks to upgrade to a WebSocket, but not validly."
            )
        if self.draining.is_set():
            return json_error(503, "shutting_down", "xai-meter is shutting down.")
        tap_type = socket_tap(path)
        headers = _upstream_headers(request.headers)
        key = api_key_of(request.headers)
        if key is not None:
            self.note_key(key, upstream)
        elif upstream.api_key and not any(p.startswith(CLIENT_SECRET_PREFIX) for p in offered):
            key = upstream.add_key(headers)
        now = self.wall()
        app = request.headers.get("X-Meter-App")
        upgrade = CallRecord(  # billable once open: an upgrade that fails bills nothing
            id=new_call_id(now),
            started_at=now,
            t0=self.clock(),
            provider=upstream.provider,
            endpoint=tap_type.endpoint or self.router.dialect(path).endpoint,
            method=request.method,
            path=path,
            key_id=self.keys.key_id(key),
            app=app[:64] if app else None,
            price_multiplier=upstream.price_multiplier,
            transport=Transport.WEBSOCKET,
        )
        rows = _Rows(self, upgrade)
        rows.adopt(upgrade)
        session = _Session(tap_type(upgrade, rows), rows)
        session.inspect(request.query)
        try:
            return await self._connect(request, upstream, raw_path, headers, offered, session)
        except asyncio.CancelledError:  # before or after the upgrade: every row ends all the same
            cause = CallError.SHUTDOWN if self.draining.is_set() else CallError.CLIENT_DISCONNECT
            session.end(Ending(cause, cause, "cancelled"))
            raise
        except Exception as exc:
            log.exception("relay_error", call_id=upgrade.id)
            session.end(Ending(CallError.RELAY_ERROR, CallError.RELAY_ERROR, type(exc).__name__))
            raise

    async def _connect(
        self,
        request: web.BaseRequest,
        upstream: Upstream,
        raw_path: str,
        headers: CIMultiDict[str],
        offered: list[str],
        session: _Session,
    ) -> web.StreamResponse:
        record = session.tap.upgrade
        if came_back(request.headers):  # round a loop of relays (daemon.loops): one row, 508
            record.fail(CallError.LOOP_DETECTED, "Via: " + request.headers[hdrs.VIA][:120])
            record.status = 508
            session.rows.finish(record)
            return json_error(508, CallError.LOOP_DETECTED.value, LOOP_MESSAGE)
        if not_utf8 := make_sendable(headers):  # as it came, aiohttp would drop the bytes
            record.error_detail = f"header not UTF-8, sent with U+FFFD: {not_utf8}"
        answer: dict[str, CIMultiDictProxy[str]] = {}
        deflate = "permessage-deflate" in request.headers.get(hdrs.SEC_WEBSOCKET_EXTENSIONS, "")
        async with _upstream_session(headers, answer) as http:
            self.meter.begin(record)
            record.stage = Stage.REQUEST
            # The base URL is an origin and the raw path starts with "/v1/": no client input
            # can change the host the socket goes to.
            url = URL(f"{upstream.base_url}{raw_path}", encoded=True)
            try:
                async with asyncio.timeout(upstream.connect_timeout + upstream.read_timeout):
                    far = await http.ws_connect(
                        url,
                        protocols=offered,
                        headers=headers,
                        autoclose=False,
                        autoping=False,
                        max_msg_size=MAX_MESSAGE_BYTES,
                        compress=15 if deflate else 0,
                        decode_text=False,
                        timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
                    )
            except aiohttp.WSServerHandshakeError as exc:
                return self._refused(session, exc.status, exc.headers, upstream)
            except TimeoutError:
                return self._failed(session, 504, CallError.UPSTREAM_TIMEOUT, "handshake", upstream)
            except aiohttp.ClientError as exc:
                if isinstance(exc, aiohttp.ClientConnectorError):
                    record.sent = False
                return self._failed(
                    session, 502, CallError.UPSTREAM_UNREACHABLE, type(exc).__name__, upstream
                )
            # Leaving the session drops the upstream connection if it is still open.
            return await self._accept(request, session, far, answer.get("headers"), deflate)

    def _refused(
        self,
        session: _Session,
        status: int,
        headers: Mapping[str, str] | None,
        upstream: Upstream,
    ) -> web.StreamResponse:
        """The upstream answered the upgrade without upgrading: its status goes back with its
        headers (``retry-after``, ``x-request-id``...), our JSON error as the body (aiohttp
        keeps no refused upgrade's body); an answer that is no error (a 2xx, or a 101 that got
        the handshake wrong) becomes 502. One unbilled row, with the status the client got."""
        record = session.tap.upgrade
        relayed = status if status >= 400 else 502
        record.status = relayed
        if relayed != status:
            record.upstream_error = f"upgrade_answered_{status}"
        record.stage = Stage.RESPONSE_HEADERS
        record.upstream_ms = (self.clock() - record.t0) * 1000.0
        response = json_error(
            relayed,
            "upstream_refused_upgrade",
            f"The upstream {upstream.base_url} answered {status} to the WebSocket upgrade.",
        )
        if isinstance(headers, CIMultiDictProxy):
            read_response_headers(record, headers)
            for name, value in response_headers(headers).items():
                if name not in _OWN_BODY:
                    response.headers.add(name, value)
        session.rows.finish(record)
        return response

    def _failed(
        self, session: _Session, status: int, error: CallError, detail: str, upstream: Upstream
    ) -> web.StreamResponse:
        record = session.tap.upgrade
        record.fail(error, detail)
        record.status = status
        session.rows.finish(record)
        if status == 504:
            return json_error(
                504, "upstream_timeout", f"The upstream {upstream.base_url} did not answer in time."
            )
        return json_error(
            502, "upstream_unreachable", f"The upstream {upstream.base_url} could not be reached."
        )

    async def _accept(
        self,
        request: web.BaseRequest,
        session: _Session,
        far: ClientSocket,
        upstream_headers: CIMultiDictProxy[str] | None,
        deflate: bool,
    ) -> web.StreamResponse:
        record = session.tap.upgrade
        record.upstream_ms = (self.clock() - record.t0) * 1000.0
        near: ServerSocket = web.WebSocketResponse(
            protocols=(far.protocol,) if far.protocol else (),
            autoclose=False,
            autoping=False,
            compress=deflate,
            max_msg_size=MAX_MESSAGE_BYTES,
            timeout=CLOSE_TIMEOUT,
            decode_text=False,
        )
        if upstream_headers is not None:
            read_response_headers(record, upstream_headers)
            for name, value in response_headers(upstream_headers).items():
                if name not in _HANDSHAKE:
                    near.headers.add(name, value)
        session.rows.template.request_id = record.request_id
        try:
            await near.prepare(request)
        except _GONE:
            session.end(Ending(CallError.CLIENT_DISCONNECT, CallError.CLIENT_DISCONNECT, "upgrade"))
            return near
        session.opened()
        await self._run(request, session, near, far)
        return near

    async def _run(
        self, request: web.BaseRequest, session: _Session, near: ServerSocket, far: ClientSocket
    ) -> None:
        """Relay both ways until one side ends it, then close the other and end the rows."""
        up = tasks.spawn(self._pump(near, far, _Side.CLIENT, session), name="ws-client-upstream")
        down = tasks.spawn(
            self._pump(far, near, _Side.UPSTREAM, session), name="ws-upstream-client"
        )
        drain = tasks.spawn(self._drained(session), name="ws-drain")
        pending = {up, down, drain}
        try:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Cancelled: the client's connection went, or the shutdown grace period is over.
            await _cancel(pending)
            shutdown = self.draining.is_set()
            cause = CallError.SHUTDOWN if shutdown else CallError.CLIENT_DISCONNECT
            session.end(Ending(cause, cause, "cancelled"))
            reason = _SHUTDOWN_REASON if shutdown else b"client gone"
            with contextlib.suppress(Exception):  # best effort: the rows are written already
                async with asyncio.timeout(1.0):
                    closing = [far.close(code=WSCloseCode.GOING_AWAY, message=reason)]
                    if shutdown:
                        closing.append(near.close(code=WSCloseCode.GOING_AWAY, message=reason))
                    await asyncio.gather(*closing)
            raise
        await _cancel(pending)
        if drain in done and not (up in done or down in done):
            session.end(Ending(CallError.SHUTDOWN, CallError.SHUTDOWN, "drained"))
            await asyncio.gather(  # at once: a slow client does not hold the upstream's close
                near.close(code=WSCloseCode.GOING_AWAY, message=_SHUTDOWN_REASON),
                far.close(code=WSCloseCode.GOING_AWAY, message=_SHUTDOWN_REASON),
            )
            return
        stop = _result(up) if up in done else _result(down)
        if stop is None:  # a pump raised: a bug here, not a side's doing
            session.end(Ending(CallError.RELAY_ERROR, CallError.RELAY_ERROR, "pump"))
            await near.close(code=WSCloseCode.INTERNAL_ERROR)
            await far.close(code=WSCloseCode.INTERNAL_ERROR)
            return
        await self._ended(request, session, near, far, stop)

    async def _ended(
        self,
        request: web.BaseRequest,
        session: _Session,
        near: ServerSocket,
        far: ClientSocket,
        stop: _Stop,
    ) -> None:
        """One side ended the session: end the rows, then close the other side as it did."""
        by_client = stop.side is _Side.CLIENT
        cause = CallError.CLIENT_DISCONNECT if by_client else CallError.UPSTREAM_STREAM_CUT
        code = stop.code
        if code is not None:
            normal = code in NORMAL_CLOSE and stop.error is None
            detail = f"{stop.side.value} closed {code}" + (f": {stop.error}" if stop.error else "")
            session.end(
                Ending(
                    None if normal else cause,
                    cause,
                    detail,
                    upstream_code=None if by_client else code,
                )
            )
            out_code = _UNSENDABLE.get(code, code)
            reason = stop.reason.encode()[:123]  # a close frame holds 125 bytes, code included
            first, then = (far, near) if by_client else (near, far)
            await first.close(code=out_code, message=reason)
            await then.close(code=out_code, message=reason)  # answers the side that closed
            return
        session.end(Ending(cause, cause, f"{stop.side.value} gone"))
        if by_client:
            await far.close(code=WSCloseCode.GOING_AWAY, message=b"client gone")
        elif request.transport is not None:
            # The upstream's connection dropped: so does the client's, as it would have.
            request.transport.close()

    async def _pump(
        self,
        src: ServerSocket | ClientSocket,
        dst: ServerSocket | ClientSocket,
        side: _Side,
        session: _Session,
    ) -> _Stop:
        """Copy `src`'s messages to `dst` until `src` ends (or `dst` cannot take more)."""
        other = _Side.UPSTREAM if side is _Side.CLIENT else _Side.CLIENT
        observe = session.observe
        while True:
            msg = await src.receive()
            kind = msg.type
            try:
                if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                    data: bytes = msg.data
                    try:
                        await dst.send_frame(data, kind)
                    finally:
                        observe(side, data, kind is WSMsgType.TEXT)
                elif kind is WSMsgType.PING:
                    await dst.ping(msg.data)
                elif kind is WSMsgType.PONG:
                    await dst.pong(msg.data)
                elif kind is WSMsgType.CLOSE:  # code 0: a close frame without a code
                    return _Stop(side, msg.data or 1005, msg.extra or "")
                elif kind is WSMsgType.ERROR:
                    code = getattr(msg.data, "code", None)
                    return _Stop(side, code, "", str(msg.data)[:120])
                else:  # closing or closed: the connection went without a close frame
                    return _Stop(side)
            except _GONE:
                return _Stop(other)

    async def _drained(self, session: _Session) -> None:
        """Returns once the daemon drains and no row of this socket waits for the upstream (or
        the drain's time for turns in flight is up)."""
        await self.draining.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.turn_grace):
                await session.tap.idle.wait()


def _protocols(headers: CIMultiDictProxy[str]) -> list[str]:
    """The subprotocols the client offered, in its order (``Sec-WebSocket-Protocol``)."""
    found: list[str] = []
    for value in headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ()):
        found.extend(p.strip() for p in value.split(",") if p.strip())
    return found


def _upstream_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The client's headers as for HTTP (`forward_headers`), minus the handshake's own."""
    headers = forward_headers(incoming)
    for name in _HANDSHAKE:
        headers.popall(name, None)
    return headers


def _upstream_session(
    headers: CIMultiDict[str], answer: dict[str, CIMultiDictProxy[str]]
) -> aiohttp.ClientSession:
    """This socket's own session (see the module docstring), adding no header the client did
    not send; the upgrade's response headers land in ``answer["headers"]``."""

    async def on_end(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        answer["headers"] = params.response.headers

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    return aiohttp.ClientSession(
        auto_decompress=False,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=[h for h in AUTO_HEADERS if h not in headers],
        trace_configs=[trace],
    )


def _result(task: asyncio.Task[_Stop]) -> _Stop | None:
    if task.cancelled():
        return None
    error = task.exception()
    if error is not None:
        log.error("websocket_pump_failed", error=repr(error))
        return None
    return task.result()


async def _cancel(pending: set[asyncio.Task[Any]]) -> None:
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
