"""The simulator's gRPC face: xAI's gRPC API (xai-api.md "gRPC API") on a real grpc.aio server.

Why a real server: xAI's own SDK (``xai-sdk``) speaks gRPC over HTTP/2, and the daemon's gRPC
listener is tested against the frames a real upstream sends (statuses, trailers, streams cut
short), driven by the real SDK, not against mocks.

Every call passes the front here first, as every REST request passes `server._front`: it is
recorded in ``state.requests`` (``path`` = the full method name, ``headers`` = the text
metadata, ``body`` = the request's bytes), its faults are read from the ``x-sim-*`` metadata
with REST's own parser (`faults.Injection`, every fault documented there), its key is checked
(`auth.check_key`: no key is UNAUTHENTICATED, `auth.INVALID_KEY` INVALID_ARGUMENT), then a
``stall: headers`` waits and an injected status fails the call. The method then answers from
the REST simulator's logic on the same `SimulatorState` (`grpc_chat`, `grpc_media`,
`grpc_info`, `grpc_batches`) and the front writes it: paced by ``state.chunk_delay``, stalled,
cut or broken as asked. A REST `ApiError` becomes the gRPC status of `GRPC_CODES` with the same
message as details. ``state.sent`` gets, per call, the response messages' bytes as gRPC frames them
(a 5-byte prefix each), up to a cut. Unknown methods answer UNIMPLEMENTED, as a real server does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError, Message
from multidict import CIMultiDict

from daemon.simulator import grpc_batches, grpc_chat, grpc_info, grpc_media
from daemon.simulator.auth import api_key_of, check_key
from daemon.simulator.billing import billing
from daemon.simulator.faults import HEADER_CUT_AFTER, HEADER_STATUS, Injection, abandon
from daemon.simulator.grpc_wire import Call, Method
from daemon.simulator.management import caller
from daemon.simulator.state import SimulatedRequest, SimulatorState
from daemon.simulator.wire import ApiError

METHODS: dict[str, Method] = {
    **grpc_chat.METHODS,
    **grpc_media.METHODS,
    **grpc_info.METHODS,
    **grpc_batches.METHODS,
}
"""Every method the simulator serves, by full method name (``/xai_api.Chat/GetCompletion``)."""

# The gRPC code for each HTTP status REST answers: xAI's REST errors carry gRPC's code texts
# ("Client specified an invalid argument" ...), the usual gateway pairing [guess for 410, 413
# and 529, which have no standard twin].
GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    410: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    529: grpc.StatusCode.UNAVAILABLE,
}
CUT_CODE = grpc.StatusCode.INTERNAL  # what a client sees of a stream reset mid-way
MALFORMED = b"\x0a\xff\x01"  # a length-delimited field longer than the message: does not parse
_MAX_MESSAGE = 50 * 1024 * 1024  # xAI answers 413 above 50 MB
_POLL = 0.02  # how often a stalled call checks whether the simulator is closing


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC status code for an HTTP status (`GRPC_CODES`; UNKNOWN for others)."""
    return GRPC_CODES.get(status, grpc.StatusCode.UNKNOWN)


def _frame(data: bytes) -> bytes:
    return b"\x00" + len(data).to_bytes(4, "big") + data


class _Front:
    """The handlers every method gets: record, faults, auth, then the method's answer."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.closing = False

    def _begin(self, method: str, body: bytes, context: grpc.aio.ServicerContext) -> Call:
        metadata: CIMultiDict[str] = CIMultiDict(
            (key, value)
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        )
        state = self.state
        state.request_received.set()
        if state.record_requests:
            state.requests.append(SimulatedRequest("POST", method, "", metadata, body))
        return Call(state, method, metadata, Injection())

    async def _prepare(
        self, call: Call, spec: Method, body: bytes, context: grpc.aio.ServicerContext
    ) -> Any:
        """Faults, auth, a header stall and an injected status; then the parsed request."""
        call.inj = Injection.from_headers(call.metadata)
        check_key(call.metadata)
        if call.inj.stall == "headers":
            await self._wait_release(context)
        if call.inj.status is not None:
            raise ApiError(
                call.inj.status, f"Simulated failure ({HEADER_STATUS}: {call.inj.status})"
            )
        try:
            return spec.request.FromString(body)
        except DecodeError:
            raise ApiError(400, f"The request is not a valid {spec.request.__name__}") from None

    async def _wait_release(self, context: grpc.aio.ServicerContext) -> None:
        """Wait for ``state.release``; a client that leaves cancels this (counted as
        abandoned); a closing simulator ends it with UNAVAILABLE."""
        state = self.state
        state.stalled.set()
        try:
            while not state.release.is_set():
                if self.closing:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "The simulator is closing")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.release.wait(), _POLL)
        except asyncio.CancelledError:  # grpc.aio cancels a handler whose client left
            if not self.closing:
                abandon(state)
            raise

    async def _initial_metadata(self, call: Call, context: grpc.aio.ServicerContext) -> None:
        if call.inj.reply_headers:
            pairs = tuple((name.lower(), value) for name, value in call.inj.reply_headers)
            await context.send_initial_metadata(pairs)
        elif call.inj.stall == "body":  # the headers go out, the answer stalls
            await context.send_initial_metadata(())

    def _encode(self, call: Call, message: Message) -> bytes:
        return MALFORMED if call.inj.malformed else message.SerializeToString()

    def _sent(self, pieces: list[bytes]) -> None:
        if self.state.record_requests:
            self.state.sent.append(b"".join(_frame(piece) for piece in pieces))

    async def unary(
        self, method: str, spec: Method, body: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        call = self._begin(method, body, context)
        assert spec.unary is not None
        try:
            request = await self._prepare(call, spec, body, context)
            with billing(self.state, caller(self.state, api_key_of(call.metadata))):
                message = await spec.unary(call, request)
        except ApiError as exc:
            await _abort(context, exc)
        await self._initial_metadata(call, context)
        if call.inj.stall == "body":
            await self._wait_release(context)
        if call.inj.cut_after is not None:
            self._sent([])
            await context.abort(CUT_CODE, f"Simulated reset ({HEADER_CUT_AFTER}) before the answer")
        data = self._encode(call, message)
        self._sent([data])
        return data

    async def stream(
        self, method: str, spec: Method, body: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        call = self._begin(method, body, context)
        assert spec.stream is not None
        try:
            request = await self._prepare(call, spec, body, context)
            with billing(self.state, caller(self.state, api_key_of(call.metadata))):
                messages = await spec.stream(call, request)
        except ApiError as exc:
            await _abort(context, exc)
        await self._initial_metadata(call, context)
        cut = call.inj.cut_after
        sent: list[bytes] = []
        for index, message in enumerate(messages):
            if cut is not None and index >= cut:
                break
            if index == 1 and call.inj.stall == "body":
                await self._wait_release(context)
            elif index and self.state.chunk_delay > 0:
                await asyncio.sleep(self.state.chunk_delay)
            data = self._encode(call, message)
            sent.append(data)
            yield data
        if call.inj.stall == "body" and len(messages) <= 1 and cut is None:
            await self._wait_release(context)
        self._sent(sent)
        if cut is not None:
            await context.abort(
                CUT_CODE, f"Simulated reset ({HEADER_CUT_AFTER}: {cut}) after {len(sent)} messages"
            )


async def _abort(context: grpc.aio.ServicerContext, exc: ApiError) -> NoReturn:
    await context.abort(grpc_code(exc.status), exc.message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


class _Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Routes each served method to the front; None (UNIMPLEMENTED) for any other."""

    def __init__(self, front: _Front) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        for name, spec in METHODS.items():
            if spec.stream is not None:
                self._handlers[name] = grpc.unary_stream_rpc_method_handler(
                    _bind_stream(front, name, spec)
                )
            else:
                self._handlers[name] = grpc.unary_unary_rpc_method_handler(
                    _bind_unary(front, name, spec)
                )

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._handlers.get(handler_call_details.method)


def _bind_unary(front: _Front, name: str, spec: Method) -> Any:
    async def handle(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await front.unary(name, spec, body, context)

    return handle


def _bind_stream(front: _Front, name: str, spec: Method) -> Any:
    async def handle(body: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        # grpc.aio tells a stream by an async generator function, so this one is one too
        async for data in front.stream(name, spec, body, context):
            yield data

    return handle


class GrpcSimulator:
    """A running gRPC simulator: where it listens (`target`, `port`), its `state`, `close()`."""

    def __init__(self, server: grpc.aio.Server, front: _Front, host: str, port: int) -> None:
        self._server = server
        self._front = front
        self.state = front.state
        self.host = host
        self.port = port
        self.target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.url = f"http://{self.target}"  # as `grpc.upstream` takes it

    async def close(self, grace: float = 1.0) -> None:
        """Stop: stalled calls end UNAVAILABLE, others get `grace` seconds to finish."""
        self._front.closing = True
        await self._server.stop(grace)

    async def __aenter__(self) -> GrpcSimulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_grpc(
    host: str = "127.0.0.1", port: int = 0, state: SimulatorState | None = None
) -> GrpcSimulator:
    """Serve the gRPC face on `host`:`port` (0: any free port; `.port` names the real one).

    Give it the `state` of a REST simulator (`server.start`) to share one fake between both
    faces: the same prompt cache, deferred jobs, knobs and recorded requests.
    """
    front = _Front(state if state is not None else SimulatorState())
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE + 1),
            ("grpc.max_send_message_length", _MAX_MESSAGE + 1),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((_Handlers(front),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    await server.start()
    return GrpcSimulator(server, front, host, bound)
