"""Connection hygiene on the relay port: how many connections, how long a request's headers may
take, and how many request-body bytes all calls may hold at once.

What each limit does (the README's "Connection limits" says the same to users):

- ``relay.max_connections`` (`connection_cap`): checked at start against the open-file limit
  (``RLIMIT_NOFILE``, soft) less `FD_RESERVE` and the upstream pool, or derived from it, so the
  relay can never take the descriptors the admin listener, the ledger and the upstream pool need.
  `ConnectionGuard` counts connections from accept to close; one past the cap is answered
  ``503 too_many_connections`` (with ``Retry-After``) once its first bytes come, then closed
  (`REFUSING_MAX` of those at once; beyond, closed at accept). No ledger row: no request was read.
  An open WebSocket counts twice: its upstream connection is its own, outside the pool.
- ``relay.header_timeout``: one timer per connection, armed at accept (`daemon.sniff.Sniffer`).
  If it fires before the first request's headers are complete, the connection is closed: with a
  ``408 header_timeout`` when part of a request came (half-closed, closed `LINGER` s later, so
  a client still sending can read it), silently when nothing did (a client's pre-opened
  connection; nginx's ``client_header_timeout`` closes both). Later requests on a
  kept-alive connection are bounded by ``relay.idle_timeout``, aiohttp's ``keepalive_timeout``,
  which closes a connection whose next request is not complete that long after the last answer.
  No per-request timer, no per-request work.
- ``relay.body_timeout``, ``relay.max_body_bytes_in_flight`` and the per-call body limit
  (`MAX_REQUEST_BYTES`): the relay reads each body through `BodyLimits`; a call refused there
  is a ledger row (``408 body_timeout``, ``503 body_bytes_exhausted``, ``413
  request_too_large``), as every call is.
- A request that came back (`daemon.loops.came_back`: it carries the Via tag this daemon
  adds to what it forwards) is refused before its body is read: ``508 loop_detected``, a
  ledger row, so no upstream that leads back here can loop. One header lookup per call.

Every refusal is counted in ``xai_meter_relay_rejected_total{reason}``, the reason being the
answer's code. None of it touches the admin listener, which listens apart with its own reserve.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiohttp import hdrs, web

from daemon.config import ConfigError, Settings
from daemon.loops import LOOP_MESSAGE, came_back
from daemon.record import CallError, CallRecord
from daemon.upstream import json_error

log = structlog.get_logger("xai_meter.relay")

#: File descriptors kept back from the relay's connections, beyond the upstream pool: the
#: admin listener and its scrapes, the ledger's files (database, WAL, journal), the refused
#: connections being answered (`REFUSING_MAX`), the listening sockets, the event loop's own,
#: DNS lookups, price refreshes and webhooks.
FD_RESERVE = 256
#: The most connections a derived ``relay.max_connections`` allows, whatever the file limit:
#: far more than one machine's apps open, and a bound on what idle connections cost in memory.
DERIVED_MAX = 32768
#: Connections past the cap answered with a 503 at once; more are closed at accept.
REFUSING_MAX = 64
_MiB = 1024 * 1024
#: The per-call body limit: above xAI's own 50 MB, so the upstream gives its own 413 first.
MAX_REQUEST_BYTES = 100 * _MiB
_LOG_EVERY = 60.0  # seconds between two "relay_connections_full" lines
#: Seconds a connection answered 408 at its header deadline may read on (dropping what comes)
#: before it is closed, so the client can read the answer (nginx's lingering close).
LINGER = 2.0

# The reasons of xai_meter_relay_rejected_total without a ledger row (the others are CallErrors).
MAX_CONNECTIONS = "too_many_connections"
HEADER_TIMEOUT = "header_timeout"


def open_file_limit() -> int:
    """The process's soft limit on open files (``ulimit -n``); a large number when unlimited."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(configured: int, pool: int, file_limit: int | None = None) -> int:
    """The ``relay.max_connections`` in force: `configured`, or derived when it is 0, from the
    open-file limit (`file_limit`, read now when None) less `FD_RESERVE` and the upstream
    `pool` (``upstream.max_connections``), at most `DERIVED_MAX`.

    Raises `ConfigError` naming the setting and the fix when the limit cannot hold `configured`,
    or holds no connection at all."""
    limit = open_file_limit() if file_limit is None else file_limit
    fits = limit - FD_RESERVE - pool
    why = (
        f"the open-file limit (ulimit -n) is {limit}, and {FD_RESERVE + pool} of it are kept "
        f"for the upstream pool (upstream.max_connections = {pool}), the ledger and the admin "
        f"listener"
    )
    if fits < 1:
        raise ConfigError(
            f"relay.max_connections: {why}, which leaves no room for client connections. "
            f"Fix: raise the limit (ulimit -n 4096, or LimitNOFILE=4096 in a systemd unit), "
            f"or lower upstream.max_connections."
        )
    if configured == 0:
        return min(fits, DERIVED_MAX)
    if configured > fits:
        raise ConfigError(
            f"relay.max_connections = {configured}, but {why}: at most {fits} fit. Fix: raise "
            f"the limit (ulimit -n {configured + FD_RESERVE + pool}, or LimitNOFILE= in a systemd "
            f"unit), or set relay.max_connections to {fits} or less (0 derives it from the limit)."
        )
    return configured


def relay_limits(
    settings: Settings, reject: Callable[[str], None]
) -> tuple[ConnectionGuard, BodyLimits]:
    """The relay port's limits from the ``[relay]`` settings, the cap checked against the
    open-file limit read now (raises `ConfigError`, see `connection_cap`); ``reject(reason)``
    counts each refusal."""
    relay = settings.relay
    cap = connection_cap(relay.max_connections, settings.upstream.max_connections)
    guard = ConnectionGuard(cap, relay.header_timeout, reject)
    bodies = BodyLimits(
        MAX_REQUEST_BYTES, relay.max_body_bytes_in_flight, relay.body_timeout, reject
    )
    return guard, bodies


def plain_answer(status: int, reason: str, code: str, message: str, retry_after: int = 0) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, its body shaped like
    `daemon.upstream.json_error`'s: for a connection aiohttp does not own (yet)."""
    body = orjson.dumps({"code": code, "error": message, "source": "xai-meter"})
    retry = f"Retry-After: {retry_after}\r\n" if retry_after else ""
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"{retry}Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """Counts the relay port's connections and keeps them within `max_connections`.

    `daemon.sniff.Sniffer` asks `admit` at accept and arms the header timer; when it hands a
    connection to aiohttp it calls `handed`, and `RelayServer` calls `closed` when that one
    ends (one dict insert and pop per connection: nothing per request). ``reject(reason)``
    counts a refusal (the metric's callback). An open WebSocket counts twice against the cap
    (`also_open`): its upstream connection is its own, outside the pool's reserve."""

    def __init__(
        self,
        max_connections: int,
        header_timeout: float,
        reject: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.reject = reject
        self.open = 0  # connections admitted and not yet closed
        # Descriptors the relay holds beside the pool, for some of those connections: each
        # WebSocket's own upstream connection (the relay's count; set by the daemon).
        self.also_open: Callable[[], int] = lambda: 0
        self.refusing = 0  # connections past the cap, being answered 503
        self._handed: dict[Any, asyncio.TimerHandle | None] = {}
        self._refused_unlogged = 0
        self._logged_at = -_LOG_EVERY
        self.busy_reply = plain_answer(
            503,
            "Service Unavailable",
            MAX_CONNECTIONS,
            f"xai-meter has relay.max_connections = {max_connections} client connections open; "
            f"retry shortly, or reuse connections (keep-alive).",
            retry_after=1,
        )
        self.header_timeout_reply = plain_answer(
            408,
            "Request Timeout",
            HEADER_TIMEOUT,
            f"The request headers did not arrive within relay.header_timeout = "
            f"{header_timeout:g} s.",
        )

    def admit(self) -> bool | None:
        """A connection was accepted: True, it may stay (counted until closed); False, it is
        past the cap and gets the 503 (`done_refusing` when it closes); None, too many are
        being refused already: close it now."""
        if self.open + self.also_open() < self.max_connections:
            self.open += 1
            return True
        self.reject(MAX_CONNECTIONS)
        self._note_refused()
        if self.refusing < REFUSING_MAX:
            self.refusing += 1
            return False
        return None

    def _note_refused(self) -> None:
        self._refused_unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY:
            log.warning(
                "relay_connections_full",
                max_connections=self.max_connections,
                refused=self._refused_unlogged,
                fix="raise relay.max_connections (and ulimit -n), or have clients reuse "
                "connections",
            )
            self._logged_at, self._refused_unlogged = now, 0

    def done_refusing(self) -> None:
        self.refusing -= 1

    def closed_before_handing(self) -> None:
        """An admitted connection closed before aiohttp had it."""
        self.open -= 1

    def handed(self, handler: Any, timer: asyncio.TimerHandle | None) -> None:
        """An admitted connection went to aiohttp's `handler`, its header `timer` still armed."""
        self._handed[handler] = timer

    def closed(self, handler: Any) -> None:
        """aiohttp's `handler` lost its connection: a slot is free again."""
        if handler in self._handed:
            timer = self._handed.pop(handler)
            if timer is not None:
                timer.cancel()
            self.open -= 1


class RelayServer(web.Server):
    """aiohttp's low-level server, telling `guard` when a connection it was handed closes."""

    def __init__(self, guard: ConnectionGuard, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def connection_lost(
        self, handler: web.RequestHandler, exc: BaseException | None = None
    ) -> None:
        super().connection_lost(handler, exc)
        self.guard.closed(handler)


class BodyLimits:
    """Request bodies, read whole before they go upstream: at most ``max_request_bytes`` each
    (and at most ``max_in_flight``: a body that could never fit is too large, not a reason to
    retry), ``held`` bytes of them across every call at once, at most ``max_in_flight``, each
    arriving within ``body_timeout`` seconds of its headers, in all. ``reject(error)`` counts a
    call refused here (it is also recorded: its status and error are set on the record)."""

    def __init__(
        self,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_in_flight: int = 512 * _MiB,
        body_timeout: float = 60.0,
        reject: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_request_bytes = min(max_request_bytes, max_in_flight)
        self.body_timeout = body_timeout
        self.held = 0
        self._reject = reject

    def take(self, size: int) -> bool:
        """Hold `size` more bytes; False (nothing held) when that would pass the limit."""
        if self.held + size > self.max_in_flight:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        """The call holding `size` bytes of body ended (or let them go)."""
        self.held -= size

    async def read(self, request: web.BaseRequest, record: CallRecord) -> bytes | web.Response:
        """The whole body, held until the caller gives ``len(body)`` back; or, the call
        refused, the answer to send (its record failed with the status set): 413
        ``request_too_large`` (by Content-Length before a byte is read, else as the bytes
        pass the limit), 503 ``body_bytes_exhausted`` with Retry-After when the bytes held
        cannot take it now, 408 ``body_timeout``; each closes the connection. A body that
        came whole with its headers (most do) is read with no timer: one add here and one
        subtraction in `give` are all it costs. First, a request that came back round a loop
        of relays (`daemon.loops`) is refused: 508 ``loop_detected``."""
        if hdrs.VIA in request.headers and came_back(request.headers):
            return self._refuse(
                record,
                508,
                CallError.LOOP_DETECTED,
                "Via: " + request.headers[hdrs.VIA][:120],
                LOOP_MESSAGE,
            )
        limit = self.max_request_bytes
        length = request.content_length
        held = 0
        if length:
            if length > limit:
                return self._too_large(record, f"Content-Length {length}")
            if not self.take(length):
                return self._no_room(record, length)
            held = length
        content = request.content
        got = 0
        try:
            if content.is_eof():  # it all came with the headers (aiohttp decoded it, if coded)
                body = await content.read()
            else:
                chunks = []
                async with asyncio.timeout(self.body_timeout):
                    while chunk := await content.readany():
                        got += len(chunk)
                        if got > held:  # no Content-Length (chunked), or decoded past it
                            self.give(held)
                            held = 0
                            if got > limit:
                                return self._too_large(record, f"{got} bytes read")
                            if not self.take(got):
                                return self._no_room(record, got)
                            held = got
                        chunks.append(chunk)
                body = b"".join(chunks)
        except TimeoutError:
            self.give(held)
            # A client silent for the whole timeout gets no lingering wait for the rest of
            # its body (aiohttp's 10 s): the answer, then the close.
            request.content.feed_eof()
            return self._timed_out(record, got, length)
        except BaseException:
            self.give(held)  # cancelled (the client left) or the body broke: nothing held
            raise
        if len(body) != held:  # from here to the call's end the exact body is held
            self.give(held)
            if len(body) > limit:
                return self._too_large(record, f"{len(body)} bytes decoded")
            self.held += len(body)  # read already: held even past the limit, briefly
        return body

    def _refuse(
        self, record: CallRecord, status: int, error: CallError, detail: str, message: str
    ) -> web.Response:
        record.fail(error, detail)
        record.status = status
        self._reject(error.value)
        response = json_error(status, error.value, message, retry_after=int(status == 503))
        # The body is unread: close after the answer. aiohttp reads and drops what the client
        # still sends for up to 10 s first (its lingering_time), so it can read the answer: a
        # close while it sends would reset the connection first (nginx's lingering close).
        response.force_close()
        return response

    def _too_large(self, record: CallRecord, seen: str) -> web.Response:
        limit = self.max_request_bytes
        return self._refuse(
            record,
            413,
            CallError.REQUEST_TOO_LARGE,
            f"{seen}; the limit is {limit}",
            f"The request body is larger than xai-meter relays ({limit} bytes; "
            f"relay.max_body_bytes_in_flight and the per-call limit of 100 MiB).",
        )

    def _no_room(self, record: CallRecord, size: int) -> web.Response:
        held, most = self.held, self.max_in_flight
        return self._refuse(
            record,
            503,
            CallError.BODY_BYTES_EXHAUSTED,
            f"{size} bytes; {held} of {most} held",
            f"xai-meter holds {held} bytes of request bodies now and may hold {most} "
            f"(relay.max_body_bytes_in_flight); this one ({size} bytes) does not fit. "
            f"Retry shortly.",
        )

    def _timed_out(self, record: CallRecord, got: int, length: int | None) -> web.Response:
        came = f"{got}" if length is None else f"{got} of {length}"
        seconds = f"{self.body_timeout:g}"
        return self._refuse(
            record,
            408,
            CallError.BODY_TIMEOUT,
            f"{came} bytes in {seconds} s",
            f"The request body did not arrive within relay.body_timeout = {seconds} s "
            f"({came} bytes came).",
        )
