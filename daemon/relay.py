"""The hot path: forward the request, stream the response back as it arrives, tee it to a tap.

Nothing here waits on SQLite, a lock or any network call but the upstream. Parsing happens on
the bytes already read and can never delay or alter them (a tap that raises is dropped and the
call counted as unmetered). Every call ends in exactly one `Meter.finish`, whatever happened.

Which upstream a path goes to, with which key, and which headers cross the hop: see
`daemon.upstream`. A WebSocket upgrade (``Upgrade: websocket``) is relayed by
`daemon.websocket`, after the same routing: one header lookup is all it costs other calls.

A request body is read whole before it goes upstream, within the relay's limits
(`daemon.connections`): the per-call limit (413 ``request_too_large``), the bytes all calls may
hold at once (`BodyBudget`: 503 ``body_bytes_exhausted``) and ``relay.body_timeout`` (408
``body_timeout``); each refusal is the call's one ending. A body that came with its headers
(most do) costs one add and one subtraction, and no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

import aiohttp
import structlog
from aiohttp import hdrs, web
from yarl import URL

from daemon.connections import BodyLimits
from daemon.dialects import Router
from daemon.dialects.base import Dialect, Tap, end_call
from daemon.dialects.encoding import DECODABLE, decode_request_body
from daemon.keys import KeyHasher, api_key_of
from daemon.meter import Meter
from daemon.missing_v1 import MissingV1
from daemon.record import (
    CLIENT_CLOSED_REQUEST,
    CallError,
    CallRecord,
    Stage,
    Unmetered,
    new_call_id,
)
from daemon.upstream import (
    AUTO_HEADERS,
    Upstream,
    UpstreamRoutes,
    decodable_accept_encoding,
    forward_headers,
    json_error,
    make_sendable,
    read_response_headers,
    response_headers,
    waited_for_pool,
)
from daemon.websocket import SocketRelay

log = structlog.get_logger("xai_meter.relay")

_CLIENT_GONE = (
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    aiohttp.ClientConnectionResetError,
)
_APP_LABEL_MAX = 64


class Relay:
    """The relay's request handler: routes a path under a configured upstream's ``/v1/`` to that
    upstream and a dialect, forwards the call and streams the answer back, teed to the dialect's
    tap; a WebSocket upgrade goes to `sockets` (`daemon.websocket.SocketRelay`). Keeps the
    in-flight count (open sockets included) and, in memory only, the latest key sent to the
    default upstream. `drain` begins the shutdown: calls cut short from then on are
    ``shutdown``, and every open socket is closed with 1001 (a Responses socket once its turn in
    flight has ended, within the grace period). Request bodies are read within `bodies`'
    limits (`daemon.connections.BodyLimits`) and held against them until the call ends."""

    max_scan_bytes = Tap.max_scan_bytes  # relay.max_scan_bytes, given to each tap (the app sets it)

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        meter: Meter,
        keys: KeyHasher,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
        bodies: BodyLimits | None = None,
    ) -> None:
        self.upstreams = tuple(upstreams)
        self._routes = UpstreamRoutes(self.upstreams)
        self.meter = meter
        self.keys = keys
        self.router = Router()
        self.missing_v1 = MissingV1((u.prefix for u in self.upstreams), self.router)
        self.draining = False  # the daemon is shutting down (see `drain`)
        self.in_flight = 0  # calls being relayed now (a gauge reads it at scrape time)
        self.sockets_open = 0  # WebSockets among them (each holds an upstream connection)
        # The latest key sent to the default upstream, in memory only: pricing may use it to
        # fetch the listings (never a key meant for another upstream).
        self.last_client_key: str | None = None
        self.client_key_seen = asyncio.Event()
        self._clock = clock
        self._wall = wall_clock
        # The one keep-alive session to the upstreams; the daemon opens it before listening.
        self.session: aiohttp.ClientSession | None = None
        self.sockets = SocketRelay(meter, keys, self.router, self.note_key, clock, wall_clock)
        self.bodies = bodies or BodyLimits()

    def drain(self, grace_period: float) -> None:
        """The daemon begins to shut down, giving calls in flight ``grace_period`` seconds:
        from now on a call cut short is ``shutdown``; the sockets close (`SocketRelay.drain`)."""
        self.draining = True
        self.sockets.drain(grace_period)

    def note_key(self, key: str, upstream: Upstream) -> None:
        """A client's key for `upstream`: kept (in memory only) when it is the default one's,
        so pricing may fetch the listings with it (the HTTP path inlines this test)."""
        if key != self.last_client_key and not upstream.prefix:
            self.last_client_key = key  # a key for the default (xAI) upstream
            self.client_key_seen.set()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Relay one call, once: route it (a path no upstream serves gets the relay's own 404),
        forward it (unreachable: 502, timed out: 504), stream the answer back chunk by chunk,
        teeing each into the tap, and end the call in exactly one `Meter.finish`, whatever
        happened (cancelled: ``client_disconnect`` or ``shutdown``; an exception: ``relay_error``,
        re-raised)."""
        found = self._routes.route(request.path, request.raw_path)
        if found is None:
            self.missing_v1.notice(request.path, request.host)  # a base URL without /v1?
            bases = ", ".join(f"http://{request.host}{u.prefix}/v1" for u in self.upstreams)
            return json_error(
                404,
                "not_found",
                f"xai-meter relays only paths under a "
                f"configured upstream's /v1/; {request.path!r} is not one. "
                f"Base URLs here: {bases}.",
            )
        upstream, timeout, path, raw_path = found
        upgrade = request.headers.get(hdrs.UPGRADE)
        if upgrade is not None and upgrade.lower() == "websocket":
            self.in_flight += 1
            self.sockets_open += 1  # its own upstream connection: a descriptor beside the pool's
            try:
                return await self.sockets.relay(request, upstream, path, raw_path)
            finally:
                self.in_flight -= 1
                self.sockets_open -= 1
        dialect = self.router.dialect(path)
        now = self._wall()
        record = CallRecord(
            id=new_call_id(now),
            started_at=now,
            t0=self._clock(),
            provider=upstream.provider,
            endpoint=dialect.endpoint,
            method=request.method,
            path=path,
            billable=dialect.billable,
            price_multiplier=upstream.price_multiplier,
        )
        self.in_flight += 1
        try:
            return await self._relay(request, record, dialect, upstream, timeout, raw_path)
        except asyncio.CancelledError:
            if self.draining:
                record.fail(CallError.SHUTDOWN)
            else:
                record.fail(CallError.CLIENT_DISCONNECT)
                if record.status is None:  # it left before the answer had a status: nginx's 499
                    record.status = CLIENT_CLOSED_REQUEST
            raise
        except Exception as exc:
            record.fail(CallError.RELAY_ERROR, type(exc).__name__)
            log.exception("relay_error", call_id=record.id)
            raise
        finally:
            self.in_flight -= 1
            if record.stage < Stage.FINISHED:  # not ended before its last byte (`_end_now`)
                end_call(record, self._clock())
                self.meter.finish(record)

    async def _end_now(self, record: CallRecord, tap: Tap) -> None:
        """The answer is complete and its last bytes are about to go out: end the call now.
        A call with nothing on disk yet (begun within the journal's start delay: no start
        line) then yields once, so this loop iteration's flush (scheduled before this task
        resumes) hands its row to the journal before the client can read the end: a SIGKILL
        never loses a call whose client saw it end. A call whose start is on disk needs no
        wait (a kill in between books it ``crash``: never lost, never billed twice). One
        wake-up for a quick call, not a journal write and a sink run per call (those cost
        1.59x the floor's CPU at c=32). What happens to those bytes later changes no row."""
        tap.finish_quietly(True)
        end_call(record, self._clock())
        meter = self.meter
        meter.finish(record)
        if meter.unstarted(record):
            await asyncio.sleep(0)

    async def _relay(
        self,
        request: web.BaseRequest,
        record: CallRecord,
        dialect: Dialect,
        upstream: Upstream,
        limits: aiohttp.ClientTimeout,
        raw_path: str,
    ) -> web.StreamResponse:
        headers = forward_headers(request.headers)
        key = api_key_of(request.headers)
        if key is not None:
            if key != self.last_client_key and not upstream.prefix:  # note_key, inline
                self.last_client_key = key  # a key for the default (xAI) upstream
                self.client_key_seen.set()
        elif upstream.api_key:
            key = upstream.add_key(headers)
        record.key_id = self.keys.key_id(key)
        app = request.headers.get("X-Meter-App")
        record.app = app[:_APP_LABEL_MAX] if app else None
        if not_utf8 := make_sendable(headers):  # as it came, aiohttp would drop the bytes
            record.error_detail = f"header not UTF-8, sent with U+FFFD: {not_utf8}"

        body = await self.bodies.read(request, record)
        if not isinstance(body, bytes):
            return body  # the relay's own answer: a limit refused the call
        held = len(body)
        try:
            record.stage = Stage.REQUEST
            coding = request.headers.get(hdrs.CONTENT_ENCODING)
            try:
                # A coded body goes upstream as it came; only a decoded copy is inspected.
                seen = (
                    body
                    if coding is None
                    else decode_request_body(body, coding, self.bodies.max_request_bytes)
                )
                replaced = None if seen is None else dialect.inspect_request(record, seen)
            except Exception:
                log.exception("request_inspect_failed", call_id=record.id)
                replaced = None
            if replaced is not None:
                body = replaced
                if coding is not None:
                    del headers[hdrs.CONTENT_ENCODING]  # the replacement is sent plain
                if record.usage_injected:
                    # We remove the usage chunk from the stream: asked plain, so we need not decode
                    # it (an upstream that compresses anyway is decoded and relayed plain).
                    headers["Accept-Encoding"] = "identity"
            accept = headers.get("Accept-Encoding")
            if accept:
                decodable = decodable_accept_encoding(accept)
                if decodable != accept:
                    headers["Accept-Encoding"] = decodable

            # The base URL is an origin and the raw path starts with "/v1/": no client input can
            # change the host the call goes to.
            url = URL(f"{upstream.base_url}{raw_path}", encoded=True)
            skip = [h for h in AUTO_HEADERS if h not in headers]
            session = self.session
            if session is None:
                raise RuntimeError("the relay has no upstream session: the daemon is not started")
            self.meter.begin(record)
            try:
                answer = await session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=body or None,
                    allow_redirects=False,
                    timeout=limits,
                    skip_auto_headers=skip,
                )
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                record.sent = not isinstance(exc, aiohttp.ConnectionTimeoutError)
                if not record.sent and waited_for_pool():
                    record.fail(CallError.UPSTREAM_POOL_EXHAUSTED, type(exc).__name__)
                    record.status = 503
                    return json_error(
                        503,
                        CallError.UPSTREAM_POOL_EXHAUSTED.value,
                        f"Every connection to the upstream {upstream.base_url} stayed busy "
                        f"(upstream.max_connections), none came free in time. Retry shortly.",
                        retry_after=1,
                    )
                record.fail(CallError.UPSTREAM_TIMEOUT, type(exc).__name__)
                record.status = 504
                return json_error(
                    504,
                    "upstream_timeout",
                    f"The upstream {upstream.base_url} did not answer in time.",
                )
            except aiohttp.ClientError as exc:
                record.sent = not isinstance(exc, aiohttp.ClientConnectorError)
                record.fail(CallError.UPSTREAM_UNREACHABLE, type(exc).__name__)
                record.status = 502
                return json_error(
                    502,
                    "upstream_unreachable",
                    f"The upstream {upstream.base_url} could not be reached ({exc}).",
                )
            try:
                return await self._stream_back(request, record, dialect, answer)
            finally:
                if answer.content.at_eof():
                    answer.release()  # back to the keep-alive pool
                else:
                    answer.close()
        finally:
            self.bodies.give(held)  # the body is no longer ours to hold

    async def _stream_back(
        self,
        request: web.BaseRequest,
        record: CallRecord,
        dialect: Dialect,
        upstream: aiohttp.ClientResponse,
    ) -> web.StreamResponse:
        record.status = upstream.status
        record.upstream_ms = (self._clock() - record.t0) * 1000.0
        read_response_headers(record, upstream.headers)
        record.stage = Stage.RESPONSE_HEADERS
        tap = self._make_tap(record, dialect, upstream)
        headers = response_headers(upstream.headers)
        if tap.decodes:  # it strips the usage chunk from a compressed stream: sent decoded
            headers.popall("Content-Encoding", None)
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=headers
        )
        length = None if tap.filters else upstream.content_length  # None: sent chunked
        if length is not None:
            response.content_length = length
        try:
            await response.prepare(request)
        except _CLIENT_GONE:
            record.fail(CallError.CLIENT_DISCONNECT)
            tap.finish_quietly(False)
            return response

        try:
            complete = await self._pump(upstream, response, record, tap, length)
        except _CLIENT_GONE:
            tap.finish_quietly(False)
            return response
        except BaseException:
            tap.finish_quietly(False)  # cancelled: the client left, or shutdown
            raise
        tail = tap.finish_quietly(complete)
        if not complete:
            # Headers are gone already: end the client's connection without a clean end, so it
            # sees the stream was cut, as it would have from the upstream itself.
            if request.transport is not None:
                request.transport.close()
            return response
        if record.stage < Stage.FINISHED:
            await self._end_now(record, tap)  # before the stream's last bytes (its end) go out
        with contextlib.suppress(*_CLIENT_GONE):  # the call has ended: the row stands
            if tail:
                await response.write(tail)
            await response.write_eof()
        return response

    async def _pump(
        self,
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        record: CallRecord,
        tap: Tap,
        left: int | None,
    ) -> bool:
        """Copy the body chunk by chunk, teeing each into the tap; True if it ended cleanly.
        A body of known length (``left`` bytes; None: chunked, its end is `write_eof`) ends
        the call before its last chunk goes out (`_end_now`)."""
        content = upstream.content
        ended = False
        while True:
            try:
                chunk = await content.readany()
            except (TimeoutError, aiohttp.ServerTimeoutError):
                record.fail(CallError.UPSTREAM_TIMEOUT, "body")
                return False
            except aiohttp.ClientError as exc:
                record.fail(CallError.UPSTREAM_STREAM_CUT, type(exc).__name__)
                return False
            if not chunk:
                return True
            if not ended:
                record.stage = Stage.CHUNK
            if tap.broken:
                out = None
                if tap.decodes:  # the client was promised decoded bytes
                    try:
                        out = tap.passthrough(chunk)
                    except Exception as exc:
                        record.fail(CallError.UPSTREAM_STREAM_CUT, f"undecodable: {exc!r}"[:120])
                        return False
            else:
                try:
                    out = tap.feed(chunk)
                except Exception:
                    out = self._drop_tap(record, tap, chunk)
            if left is not None:
                left -= len(chunk)
                if left <= 0 and not ended:
                    ended = True
                    await self._end_now(record, tap)
            try:
                await response.write(chunk if out is None else out)
            except _CLIENT_GONE:
                record.fail(CallError.CLIENT_DISCONNECT)
                raise

    def _make_tap(
        self, record: CallRecord, dialect: Dialect, upstream: aiohttp.ClientResponse
    ) -> Tap:
        encoding = upstream.headers.get("Content-Encoding", "").strip().lower()
        if encoding and encoding not in DECODABLE:
            if record.billable:
                record.mark_unmetered(Unmetered.ENCODING)
            return Tap(record, self._clock)
        try:
            tap = dialect.tap(
                record,
                upstream.headers.get("Content-Type", ""),
                self._clock,
                "" if encoding == "identity" else encoding,
            )
            tap.max_scan_bytes = self.max_scan_bytes
            return tap
        except Exception:
            log.exception("tap_failed", call_id=record.id)
            record.mark_unmetered(Unmetered.PARSER_ERROR)
            return Tap(record, self._clock)

    def _drop_tap(self, record: CallRecord, tap: Tap, chunk: bytes) -> bytes | None:
        """A tap raised: meter no further, but give the client every byte it was owed."""
        log.exception("tap_feed_failed", call_id=record.id)
        record.mark_unmetered(Unmetered.PARSER_ERROR)
        tap.broken = True
        try:
            return tap.abandon()
        except Exception:
            return chunk
