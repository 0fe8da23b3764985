"""The simulator as an aiohttp app: the routes, the front every request passes, start and run.

`build_app` maps each path of xai-api.md the simulator serves to its surface's handler; `_front`
records the request, then applies auth, an injected status and header stalls before any
handler runs. `start` serves it on a loopback port (`Simulator`); `run` is ``xai-meter
simulate`` (REST, and the gRPC face of `grpc_server` beside it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict

from daemon.simulator.auth import api_key_info, api_key_of, auth_error
from daemon.simulator.batches import (
    add_batch_requests,
    cancel_batch,
    create_batch,
    get_batch,
    get_batch_result,
    list_batch_requests,
    list_batch_results,
    list_batches,
)
from daemon.simulator.billing import billing
from daemon.simulator.chat import chat_completions, deferred_completion
from daemon.simulator.completions import create_complete, create_completion
from daemon.simulator.faults import (
    HEADER_STATUS,
    INJECTION_KEY,
    Injection,
    abort,
    send,
    wait_release,
)
from daemon.simulator.grpc_server import start_grpc
from daemon.simulator.images import edit_images, generate_images, get_image_job
from daemon.simulator.listing import (
    get_image_model,
    get_language_model,
    get_model,
    list_image_models,
    list_language_models,
    list_models,
)
from daemon.simulator.management import caller, is_management
from daemon.simulator.management import routes as management_routes
from daemon.simulator.messages import create_message
from daemon.simulator.prompts import tokenize_text
from daemon.simulator.realtime import realtime_socket, stt_socket, tts_socket
from daemon.simulator.responses import create_response, delete_response, get_response
from daemon.simulator.sockets import responses_socket
from daemon.simulator.state import CLOSING_KEY, STATE_KEY, SimulatedRequest, SimulatorState
from daemon.simulator.videos import (
    edit_video,
    extend_video,
    generate_video,
    get_video,
    list_video_models,
)
from daemon.simulator.voice import speech_to_text, text_to_speech
from daemon.simulator.wire import ApiError, Reply, error_reply

log = logging.getLogger(__name__)

_MAX_BODY = 50 * 1024 * 1024  # xAI answers 413 above 50 MB


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Endpoint = Callable[[web.Request, SimulatorState, Injection], Awaitable[Reply]]


@web.middleware
async def _front(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record the request, then auth, injected status and header stalls, for every route."""
    state = request.app[STATE_KEY]
    plain = Injection()
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        _record(state, request, b"")
        return await send(request, error_reply(413, "Request body over 50 MB"), plain)
    _record(state, request, body)
    try:
        inj = Injection.from_headers(request.headers)
    except ApiError as exc:
        return await send(request, exc.reply(), plain)
    request[INJECTION_KEY] = inj
    denied = auth_error(request.headers)
    if denied is not None:
        return await send(request, denied, inj)
    if inj.stall == "headers" and not await wait_release(request):
        abort(request)
        return web.Response()
    if inj.status is not None:
        reply = error_reply(inj.status, f"Simulated failure ({HEADER_STATUS}: {inj.status})")
        return await send(request, reply, inj)
    who = None if is_management(request.path) else caller(state, api_key_of(request.headers))
    try:
        if who is None:
            return await handler(request)
        with billing(state, who):  # what the answer charges is booked (daemon.simulator.billing)
            return await handler(request)
    except web.HTTPException as exc:  # the router's 404 / 405
        message = f"No route for {request.method} {request.path}"
        return await send(request, error_reply(exc.status, message), inj)


def _record(state: SimulatorState, request: web.Request, body: bytes) -> None:
    state.request_received.set()
    if not state.record_requests:
        return
    state.requests.append(
        SimulatedRequest(
            method=request.method,
            path=request.path,
            query_string=request.query_string,
            headers=CIMultiDict(request.headers),
            body=body,
        )
    )


def _endpoint(fn: Endpoint) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        inj = request[INJECTION_KEY]
        try:
            reply = await fn(request, request.app[STATE_KEY], inj)
        except ApiError as exc:
            reply = exc.reply()
        return await send(request, reply, inj)

    return handler


async def _on_shutdown(app: web.Application) -> None:
    app[CLOSING_KEY].set()  # stalled responses give up instead of holding the shutdown


def build_app(state: SimulatorState | None = None) -> web.Application:
    """The simulator as an aiohttp app (for any runner); its state is under `STATE_KEY`."""
    app = web.Application(middlewares=[_front], client_max_size=_MAX_BODY + 1)
    app[STATE_KEY] = state if state is not None else SimulatorState()
    app[CLOSING_KEY] = asyncio.Event()
    app.on_shutdown.append(_on_shutdown)
    routes = [
        ("POST", "/v1/chat/completions", chat_completions),
        ("GET", "/v1/chat/deferred-completion/{request_id}", deferred_completion),
        ("GET", "/v1/language-models", list_language_models),
        ("GET", "/v1/language-models/{model_id}", get_language_model),
        ("GET", "/v1/image-generation-models", list_image_models),
        ("GET", "/v1/image-generation-models/{model_id}", get_image_model),
        ("GET", "/v1/models", list_models),
        ("GET", "/v1/models/{model_id}", get_model),
        ("POST", "/v1/responses", create_response),
        ("GET", "/v1/responses/{response_id}", get_response),
        ("DELETE", "/v1/responses/{response_id}", delete_response),
        ("POST", "/v1/messages", create_message),
        ("POST", "/v1/completions", create_completion),
        ("POST", "/v1/complete", create_complete),
        ("POST", "/v1/images/generations", generate_images),
        ("POST", "/v1/images/edits", edit_images),
        ("POST", "/v1/tokenize-text", tokenize_text),
        ("GET", "/v1/api-key", api_key_info),
    ]
    routes += [  # video jobs and batches
        ("POST", "/v1/videos/generations", generate_video),
        ("POST", "/v1/videos/edits", edit_video),
        ("POST", "/v1/videos/extensions", extend_video),
        ("GET", "/v1/videos/{request_id}", get_video),
        ("GET", "/v1/video-generation-models", list_video_models),
        ("POST", "/v1/batches", create_batch),
        ("GET", "/v1/batches", list_batches),
        ("GET", "/v1/batches/{batch_id}", get_batch),
        ("POST", "/v1/batches/{batch_id:[^/:]+}:cancel", cancel_batch),
        ("POST", "/v1/batches/{batch_id}/requests", add_batch_requests),
        ("GET", "/v1/batches/{batch_id}/requests", list_batch_requests),
        ("GET", "/v1/batches/{batch_id}/results", list_batch_results),
        ("GET", "/v1/batches/{batch_id}/results/{batch_request_id}", get_batch_result),
    ]
    routes += management_routes()  # the Management and Billing API
    routes += [  # deferred image jobs, voice over REST
        ("GET", "/v1/images/{request_id}", get_image_job),
        ("POST", "/v1/tts", text_to_speech),
        ("POST", "/v1/stt", speech_to_text),
    ]
    for method, path, endpoint in routes:
        app.router.add_route(method, path, _endpoint(endpoint))
    # WebSockets (a GET upgraded; the handlers answer the upgrade themselves)
    app.router.add_get("/v1/responses", responses_socket)
    app.router.add_get("/v1/realtime", realtime_socket)
    app.router.add_get("/v1/tts", tts_socket)
    app.router.add_get("/v1/stt", stt_socket)
    return app


class Simulator:
    """A running simulator: where it listens (`url`), its `state`, and `close()`."""

    def __init__(self, runner: web.AppRunner, state: SimulatorState, host: str, port: int) -> None:
        self._runner = runner
        self.state = state
        self.host = host
        self.port = port
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start(
    host: str = "127.0.0.1", port: int = 0, state: SimulatorState | None = None
) -> Simulator:
    """Start the simulator on a loopback port (0: any free one; `.url` names the real one)."""
    state = state if state is not None else SimulatorState()
    runner = web.AppRunner(
        build_app(state), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return Simulator(runner, state, host, bound)


def run(host: str, port: int, grpc_port: int = 0) -> None:
    """Serve until SIGINT/SIGTERM: the `xai-meter simulate` command. With `grpc_port` (0: off)
    the gRPC face serves the same fake beside the REST one."""

    async def serve() -> None:
        # Long-running: keep no copy of what was received and sent (tests read those).
        simulator = await start(host, port, SimulatorState(record_requests=False))
        try:
            face = await start_grpc(host, grpc_port, simulator.state) if grpc_port else None
        except BaseException:
            await simulator.close()
            raise
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        log.info("xai simulator listening on %s", simulator.url)
        print(f"xai simulator listening on {simulator.url}", flush=True)
        if face is not None:
            log.info("xai simulator (gRPC) listening on %s", face.target)
            print(f"xai simulator (gRPC, xai-sdk) listening on {face.target}", flush=True)
        try:
            await stop.wait()
        finally:
            if face is not None:
                await face.close()
            await simulator.close()

    asyncio.run(serve())
