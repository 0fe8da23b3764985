"""The simulator's WebSockets: what they share (`Outbox`, `accept`) and the Responses socket.

Every socket is a ``GET`` upgraded to a WebSocket after the front every request passes (auth,
``X-Sim-Status``: an injected status answers the upgrade itself); the 101 carries an
``x-request-id``, and every socket is logged in ``state.sockets`` (`SocketLog`: what it
received and sent, how the client closed it). Auth also takes a browser's
``Sec-WebSocket-Protocol: xai-client-secret.<token>`` (xai-api.md "Voice": the realtime client
secret), and that subprotocol is then the one the server selects, as a browser requires.

Faults, from the upgrade request's headers (they hold for the whole session):

  ``X-Sim-Cut-After: N``     after N server messages, drop the connection (no close frame)
  ``X-Sim-Close-Code: C``    with ``X-Sim-Cut-After``: close with code C instead (reason
                             ``simulated close``); alone: close with C after each turn's end
  ``X-Sim-Stall: body``      each turn stops after its first server message until
                             ``state.release`` (or the client leaves)
  ``X-Sim-Response-Status``, ``X-Sim-Usage``, ``X-Sim-Prompt-Tokens``...: per turn, as over HTTP

The Responses socket (xai-api.md "Responses", WebSocket mode): each ``response.create``
message (a create body plus ``"type"``) is answered with the same events a stream sends over
SSE (`daemon.simulator.responses.response_events`), one message each, ending with
``response.completed``/``incomplete``/``failed``; a bad create gets one ``error`` event
``{"type": "error", "status", "error": {"type", "code", "message"}}`` and the socket stays open.
Turns run in order, one at a time, beside the reader (`Turns`): a client's close mid-turn is
answered at once. The voice sockets are in `daemon.simulator.realtime`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from daemon import tasks
from daemon.simulator.billing import billing
from daemon.simulator.faults import INJECTION_KEY, Injection, abort, header_int, wait_release
from daemon.simulator.responses import answer, response_events
from daemon.simulator.state import STATE_KEY, SocketLog
from daemon.simulator.wire import ApiError

HEADER_CLOSE_CODE = "X-Sim-Close-Code"
CLIENT_SECRET_PREFIX = "xai-client-secret."  # Sec-WebSocket-Protocol auth (xai-api.md "Voice")
_UNSENDABLE = frozenset({1004, 1005, 1006, 1015})  # reserved: never in a close frame
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}


def offered_protocols(headers: Mapping[str, str]) -> list[str]:
    """The subprotocols a client offered (``Sec-WebSocket-Protocol``, comma-separated)."""
    raw = headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


async def accept(request: web.Request) -> tuple[web.WebSocketResponse, SocketLog]:
    """Upgrade the request, selecting a ``xai-client-secret.`` subprotocol if one was offered,
    and log the socket in ``state.sockets``.

    Pings are answered (autoping), so a client's ping through the relay comes back a pong.
    """
    secrets = [p for p in offered_protocols(request.headers) if p.startswith(CLIENT_SECRET_PREFIX)]
    ws = web.WebSocketResponse(
        protocols=secrets[:1], autoclose=False, max_msg_size=16 * 1024 * 1024
    )
    ws.headers["x-request-id"] = str(uuid.uuid4())
    await ws.prepare(request)
    log = SocketLog(request.path, request.query_string, ws.ws_protocol)
    request.app[STATE_KEY].sockets.append(log)
    return ws, log


async def messages(
    request: web.Request, ws: web.WebSocketResponse, log: SocketLog
) -> AsyncGenerator[WSMessage, None]:
    """The client's text and binary messages, each logged as received, until the socket ends.

    A close from the client is logged and answered with the same code (1000 for a code that
    cannot be sent back: none, or abnormal).
    """
    state = request.app[STATE_KEY]
    try:
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                log.received.append(msg.data)
                state.socket_message.set()
                yield msg
            elif msg.type is WSMsgType.CLOSE:
                log.close_code, log.close_reason = msg.data, msg.extra or ""
                echo = msg.data if 1000 <= msg.data < 5000 and msg.data not in _UNSENDABLE else 1000
                await ws.close(code=echo, message=(msg.extra or "").encode())
                return
            elif msg.type is not WSMsgType.PING and msg.type is not WSMsgType.PONG:
                return  # closing, closed or a protocol error
    finally:
        log.ended.set()


class Outbox:
    """Sends a socket's server messages, applying the session's faults (see the module doc)."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, log: SocketLog) -> None:
        self.request = request
        self.ws = ws
        self.log = log
        self.inj: Injection = request[INJECTION_KEY]
        self.close_code = header_int(request.headers, HEADER_CLOSE_CODE)
        self.sent = 0
        self.gone = False  # the socket was cut or closed by a fault

    async def send(self, event: Mapping[str, Any]) -> bool:
        """Send one JSON message; False when the session ended instead (a fault, or the client
        left): the caller stops."""
        return await self.send_raw(orjson.dumps(event).decode())

    async def send_raw(self, data: str | bytes) -> bool:
        cut = self.inj.cut_after
        if self.gone or (cut is not None and self.sent >= cut):
            await self.end()
            return False
        if self.ws.closed:
            return False
        try:
            if isinstance(data, bytes):
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(data)
        except ConnectionError:
            return False
        self.log.sent.append(data)
        self.sent += 1
        return True

    async def end(self) -> None:
        """The fault's ending: close with ``X-Sim-Close-Code``, or drop the connection."""
        if self.gone:
            return
        self.gone = True
        if self.close_code is not None:
            await self.ws.close(code=self.close_code, message=b"simulated close")
        else:
            abort(self.request)

    async def turn_done(self) -> bool:
        """A turn ended; with only ``X-Sim-Close-Code`` set, close now. False: session over."""
        if self.close_code is not None and self.inj.cut_after is None:
            await self.end()
            return False
        return True

    async def stall(self) -> bool:
        """``X-Sim-Stall: body``: wait for ``state.release``; False when the client left."""
        if self.inj.stall != "body":
            return True
        if await wait_release(self.request):
            return True
        self.gone = True
        abort(self.request)
        return False


def error_event(exc: ApiError) -> dict[str, Any]:
    """An ``error`` server event for a request the socket refuses (OpenAI's WebSocket shape)."""
    return {
        "type": "error",
        "status": exc.status,
        "error": {
            "type": _ERROR_TYPES.get(exc.status, "server_error"),
            "code": "invalid_request" if exc.status == 400 else f"http_{exc.status}",
            "message": exc.message,
        },
    }


def json_message(data: str) -> dict[str, Any]:
    """A client message as a JSON object, or `ApiError` 400."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"Could not parse the message as JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ApiError(400, "A message must be a JSON object with a string `type`")
    return obj


Turn = Callable[[], Awaitable[bool]]


class Turns:
    """A socket's turns, run one at a time beside the reader, as a server does: a client that
    closes mid-turn is answered at once (its turn is dropped). A turn returns False when it
    ended the session (a fault), which ends the worker."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Turn] = asyncio.Queue()
        self._worker = tasks.spawn(self._work(), name="simulator-socket-turns")

    def add(self, turn: Turn) -> None:
        self._queue.put_nowait(turn)

    async def _work(self) -> None:
        while True:
            turn = await self._queue.get()
            if not await turn():
                return

    async def stop(self) -> None:
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)


async def send_turn(out: Outbox, events: list[dict[str, Any]]) -> bool:
    """Send a turn's events (the stall fault after the first); False when the session ended."""
    for index, event in enumerate(events):
        if index == 1 and not await out.stall():
            return False
        if not await out.send(event):
            return False
    return await out.turn_done()


async def responses_socket(request: web.Request) -> web.StreamResponse:
    """``GET /v1/responses`` upgraded: the Responses API's WebSocket mode (see the module doc)."""
    state = request.app[STATE_KEY]
    ws, log = await accept(request)
    out = Outbox(request, ws, log)
    turns = Turns()
    try:
        async with contextlib.aclosing(messages(request, ws, log)) as incoming:
            async for msg in incoming:
                try:
                    if msg.type is not WSMsgType.TEXT:
                        raise ApiError(400, "Binary messages are not accepted")
                    event = json_message(msg.data)
                    if event["type"] != "response.create":
                        raise ApiError(400, f"Unknown client event type {event['type']!r}")
                    req = {k: v for k, v in event.items() if k != "type"}
                    with billing(state):  # each turn is billed on its own
                        made = answer(state, request.headers, req, out.inj.usage)
                except ApiError as exc:
                    turns.add(functools.partial(out.send, error_event(exc)))
                    continue
                turns.add(functools.partial(send_turn, out, response_events(made)))
    finally:
        await turns.stop()
    await finish(ws)
    return ws


async def finish(ws: web.WebSocketResponse) -> None:
    """The client's messages ended: close the socket if that has not happened yet."""
    if not ws.closed:
        await ws.close(code=WSCloseCode.OK)
