"""The hot path: forward the request, stream the response back as it arrives, tee it to a tap.

Nothing here waits on SQLite, a lock or any network call but the upstream. Parsing happens on
the bytes already read and can never delay or alter them (a tap that raises is dropped and the
call counted as unmetered). Every call ends in exactly one `Meter.finish`, whatever happened.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

from daemon.dialects import Router
from daemon.dialects.base import Dialect, Tap
from daemon.dialects.encoding import DECODABLE
from daemon.keys import KeyHasher, api_key_of
from daemon.meter import Meter
from daemon.record import CallError, CallRecord, Stage, Unmetered, new_call_id

log = structlog.get_logger("xai_meter.relay")

# RFC 9110 7.6.1 hop-by-hop headers, plus those the relay sets itself.
_HOP_BY_HOP = frozenset(
    (  # lower case
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    )
)
_OUR_PREFIX = "x-meter-"
_AUTO_HEADERS = (istr("User-Agent"), istr("Accept"), istr("Accept-Encoding"), istr("Content-Type"))
_CLIENT_GONE = (
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    aiohttp.ClientConnectionResetError,
)
_APP_LABEL_MAX = 64
# The one keep-alive session to the upstreams, owned by the relay app's cleanup context.
SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)


@dataclass(frozen=True, slots=True)
class Upstream:
    """One configured upstream: where its calls go and how they are labelled.

    Calls to ``{prefix}/v1/...`` on the relay go to ``{base_url}/v1/...``; the default upstream
    has the empty prefix. No other destination exists: the host comes from here, never from
    the request.
    """

    provider: str
    base_url: URL
    connect_timeout: float
    read_timeout: float
    api_key: str | None = None  # added to calls that carry no key of their own
    prefix: str = ""

    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, connect=self.connect_timeout, sock_read=self.read_timeout
        )


class Relay:
    def __init__(
        self,
        upstreams: Sequence[Upstream],
        meter: Meter,
        keys: KeyHasher,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.upstreams = tuple(upstreams)
        # Longest prefix first, so /a/b/v1 is not taken for /a/v1; each with its timeout.
        self._routes = sorted(
            ((u.prefix, u, u.client_timeout()) for u in self.upstreams),
            key=lambda route: -len(route[0]),
        )
        self.meter = meter
        self.keys = keys
        self.router = Router()
        self.draining = False
        self.in_flight = 0  # calls being relayed now (a gauge reads it at scrape time)
        # The latest key sent to the default upstream, in memory only: pricing may use it to
        # fetch the listings (never a key meant for another upstream).
        self.last_client_key: str | None = None
        self.client_key_seen = asyncio.Event()
        self._clock = clock
        self._wall = wall_clock

    def route(
        self, path: str, raw_path: str
    ) -> tuple[Upstream, aiohttp.ClientTimeout, str, str] | None:
        """The upstream for a request path, with the path and raw path it has there.

        Dot segments are refused: the path must mean what it says, at every hop.
        """
        if "/." in path or "/." in raw_path or "%2e" in raw_path or "%2E" in raw_path:
            return None
        for prefix, upstream, timeout in self._routes:
            if path.startswith(prefix + "/v1/") and raw_path.startswith(prefix + "/"):
                return upstream, timeout, path[len(prefix) :], raw_path[len(prefix) :]
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        found = self.route(request.path, request.raw_path)
        if found is None:
            bases = ", ".join(f"http://{request.host}{u.prefix}/v1" for u in self.upstreams)
            return json_error(
                404,
                "not_found",
                f"xai-meter relays only paths under a "
                f"configured upstream's /v1/; {request.path!r} is not one. "
                f"Base URLs here: {bases}.",
            )
        upstream, timeout, path, raw_path = found
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
        )
        self.in_flight += 1
        try:
            return await self._relay(request, record, dialect, upstream, timeout, raw_path)
        except asyncio.CancelledError:
            record.fail(CallError.SHUTDOWN if self.draining else CallError.CLIENT_DISCONNECT)
            raise
        except Exception as exc:
            record.fail(CallError.RELAY_ERROR, type(exc).__name__)
            log.exception("relay_error", call_id=record.id)
            raise
        finally:
            self._finish(record)

    def _finish(self, record: CallRecord) -> None:
        record.duration_ms = (self._clock() - record.t0) * 1000.0
        if record.error is None and record.status is not None and record.status >= 400:
            record.error = CallError.HTTP_ERROR
        record.stage = (
            Stage.FINISHED if record.error in (None, CallError.HTTP_ERROR) else Stage.FAILED
        )
        self.in_flight -= 1
        self.meter.finish(record)

    async def _relay(
        self,
        request: web.Request,
        record: CallRecord,
        dialect: Dialect,
        upstream: Upstream,
        limits: aiohttp.ClientTimeout,
        raw_path: str,
    ) -> web.StreamResponse:
        headers = forward_headers(request.headers)
        key = api_key_of(request.headers)
        if key is not None:
            if key != self.last_client_key and not upstream.prefix:
                self.last_client_key = key  # a key for the default (xAI) upstream
                self.client_key_seen.set()
        elif upstream.api_key:
            key = upstream.api_key
            if upstream.provider == "anthropic":
                headers["x-api-key"] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        record.key_id = self.keys.key_id(key)
        app = request.headers.get("X-Meter-App")
        record.app = app[:_APP_LABEL_MAX] if app else None

        body = await request.read()
        record.stage = Stage.REQUEST
        try:
            replaced = dialect.inspect_request(record, body)
        except Exception:
            log.exception("request_inspect_failed", call_id=record.id)
            replaced = None
        if replaced is not None:
            body = replaced
            if record.usage_injected:
                # We remove the usage chunk from the stream; we could not from compressed bytes.
                headers["Accept-Encoding"] = "identity"
        accept = headers.get("Accept-Encoding")
        if accept:
            decodable = decodable_accept_encoding(accept)
            if decodable != accept:
                headers["Accept-Encoding"] = decodable

        # The base URL is an origin and the raw path starts with "/v1/": no client input can
        # change the host the call goes to.
        url = URL(f"{upstream.base_url}{raw_path}", encoded=True)
        skip = [h for h in _AUTO_HEADERS if h not in headers]
        try:
            answer = await request.app[SESSION_KEY].request(
                request.method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=limits,
                skip_auto_headers=skip,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            record.fail(CallError.UPSTREAM_TIMEOUT, type(exc).__name__)
            record.status = 504
            return json_error(
                504, "upstream_timeout", f"The upstream {upstream.base_url} did not answer in time."
            )
        except aiohttp.ClientError as exc:
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

    async def _stream_back(
        self,
        request: web.Request,
        record: CallRecord,
        dialect: Dialect,
        upstream: aiohttp.ClientResponse,
    ) -> web.StreamResponse:
        record.status = upstream.status
        record.upstream_ms = (self._clock() - record.t0) * 1000.0
        record.request_id = upstream.headers.get("x-request-id")
        record.stage = Stage.RESPONSE_HEADERS
        tap = self._make_tap(record, dialect, upstream)
        response = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=response_headers(upstream.headers),
        )
        if not tap.filters and upstream.content_length is not None:
            response.content_length = upstream.content_length
        try:
            await response.prepare(request)
        except _CLIENT_GONE:
            record.fail(CallError.CLIENT_DISCONNECT)
            tap.finish_quietly(False)
            return response

        try:
            complete = await self._pump(upstream, response, record, tap)
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
        try:
            if tail:
                await response.write(tail)
            await response.write_eof()
        except _CLIENT_GONE:
            record.fail(CallError.CLIENT_DISCONNECT)
        return response

    async def _pump(
        self,
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        record: CallRecord,
        tap: Tap,
    ) -> bool:
        """Copy the body chunk by chunk, teeing each into the tap; True if it ended cleanly."""
        content = upstream.content
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
            record.stage = Stage.CHUNK
            if tap.broken:
                out = None
            else:
                try:
                    out = tap.feed(chunk)
                except Exception:
                    out = self._drop_tap(record, tap, chunk)
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
            return dialect.tap(
                record,
                upstream.headers.get("Content-Type", ""),
                self._clock,
                "" if encoding == "identity" else encoding,
            )
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


_PASS, _HOP, _OURS = 0, 1, 2
_KINDS: dict[str, int] = {}


def _kind(name: str) -> int:
    """A header name's kind: passed on, hop-by-hop, or one of our X-Meter-* controls.
    Memoized: the same names come with every call, and lower() per header adds up."""
    found = _KINDS.get(name)
    if found is None:
        lower = name.lower()
        found = _HOP if lower in _HOP_BY_HOP else _OURS if lower.startswith(_OUR_PREFIX) else _PASS
        if len(_KINDS) < 4096:
            _KINDS[name] = found
    return found


def forward_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop ones and our own X-Meter-* controls."""
    out: CIMultiDict[str] = CIMultiDict()
    connection = incoming.get("Connection")
    # Headers the client named in Connection are hop-by-hop too (usually just keep-alive).
    connection_tokens = (
        {t for t in (p.strip().lower() for p in connection.split(",")) if t not in _HOP_BY_HOP}
        if connection
        else ()
    )
    for name, value in incoming.items():
        if _kind(name) or (connection_tokens and name.lower() in connection_tokens):
            continue
        out.add(name, value)
    return out


def response_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream's headers minus hop-by-hop ones (aiohttp frames the body itself)."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        if _kind(name) != _HOP:
            out.add(name, value)
    return out


@functools.lru_cache(maxsize=256)
def decodable_accept_encoding(value: str) -> str:
    """Keep only the codings the parsers can read, so no response is unreadable to the meter."""
    kept = []
    for part in value.split(","):
        coding = part.split(";", 1)[0].strip().lower()
        if coding in DECODABLE:
            kept.append(part.strip())
    return ", ".join(kept) or "identity"


def json_error(status: int, code: str, message: str) -> web.Response:
    """Errors the relay itself answers, shaped like xAI's: {"code", "error"}."""
    return web.json_response({"code": code, "error": message, "source": "xai-meter"}, status=status)
