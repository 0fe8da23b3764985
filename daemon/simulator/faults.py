"""Fault injection: the X-Sim-* request headers, and `send`, the one place that writes a reply.

A test says in the request itself what should go wrong with its answer:

  ``X-Sim-Status: 429``           answer that status with an xAI error body (429 adds retry-after;
                                  529 is xAI's "overloaded")
  ``X-Sim-Overloaded: N``         answer 529 overloaded to the first N attempts: those whose
                                  ``x-stainless-retry-count`` (the SDKs' retry number, 0 when
                                  absent; on gRPC ``grpc-previous-rpc-attempts``) is below N;
                                  later retries get the real answer
  ``X-Sim-Stall: headers|body``   wait on ``state.release`` before the headers / after the headers
                                  (and a stream's first frame); ends when the client leaves
  ``X-Sim-Cut-After: N``          streams: abort after N frames; JSON: send half, then abort
  ``X-Sim-Split: N``              write the body in pieces of N bytes
  ``X-Sim-Gzip: 1``               gzip the body (JSON and SSE), ``Content-Encoding: gzip``
  ``X-Sim-Encoding: C``           the same with coding C: gzip, deflate, br or zstd (whatever the
                                  request's Accept-Encoding says, as some upstreams do)
  ``X-Sim-Newline: cr|crlf|mixed`` streams: end SSE lines with CR, CRLF, or CR, CRLF, LF, CRLF
                                  in turn (never a CR line before an LF one: that reads as CRLF)
  ``X-Sim-Reply-Headers: a=1;b=2`` add these response headers (e.g. ``x-ratelimit-*``,
                                  ``x-metrics-ttft-ms``), as given
  ``X-Sim-Malformed: 1``          a body (or SSE frames) whose JSON does not parse
  ``X-Sim-Usage: none|every|provisional``  omit usage entirely / chat and completions streams:
                                  cumulative usage per chunk / Messages streams: xAI's
                                  0/0 ``message_start`` only, no final ``message_delta``
  ``X-Sim-Cached-Tokens: N``      force the cached part of the prompt
  ``X-Sim-Prompt-Tokens: N``      force the prompt size (long-context pricing without a huge body)
  ``X-Sim-Sources: N``            force ``num_sources_used``
  ``X-Sim-Response-Status: incomplete|failed``  the Responses terminal status (usage still sent)

The first ten shape the answer's bytes (`Injection`, applied by `send`); the last four shape
its content, so the surfaces read them (`daemon.simulator.prompts`, `.responses`). A bad value
is answered 400. Every response carries ``x-request-id``; success (2xx) answers also carry
``x-ratelimit-{limit,remaining}-{requests,tokens}`` (xai-api.md "Headers and errors": the
limits are ``state.ratelimit_requests``/``_tokens``, the remaining counts fall by one request
and by the answer's `Reply.tokens` for each success, this one included, never below 0).

The gRPC face (`daemon.simulator.grpc_server`) reads the same faults from request metadata
(``x-sim-status: 429`` ...), parsed by the same `Injection.from_headers`: a status becomes the
gRPC code xAI's gateway pairs with it (`grpc_server.GRPC_CODES`), a cut ends a stream after N
messages (a unary answer: before its message) with ``INTERNAL``, a stall waits the same way,
``X-Sim-Usage: none|every`` and the content faults work as on REST, ``X-Sim-Malformed`` sends
bytes that do not parse, ``X-Sim-Reply-Headers`` becomes initial metadata. Split, gzip,
encoding and newline faults have no gRPC meaning and are ignored there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import brotli
import zstandard
from aiohttp import hdrs, web
from multidict import CIMultiDict

from daemon.simulator.state import CLOSING_KEY, STATE_KEY, SimulatorState
from daemon.simulator.wire import ApiError, Reply

HEADER_STATUS = "X-Sim-Status"
HEADER_STALL = "X-Sim-Stall"
HEADER_CUT_AFTER = "X-Sim-Cut-After"
HEADER_SPLIT = "X-Sim-Split"
HEADER_GZIP = "X-Sim-Gzip"
HEADER_ENCODING = "X-Sim-Encoding"
HEADER_MALFORMED = "X-Sim-Malformed"
HEADER_NEWLINE = "X-Sim-Newline"
HEADER_REPLY_HEADERS = "X-Sim-Reply-Headers"
HEADER_USAGE = "X-Sim-Usage"
HEADER_CACHED_TOKENS = "X-Sim-Cached-Tokens"
HEADER_PROMPT_TOKENS = "X-Sim-Prompt-Tokens"
HEADER_SOURCES = "X-Sim-Sources"
HEADER_RESPONSE_STATUS = "X-Sim-Response-Status"
HEADER_OVERLOADED = "X-Sim-Overloaded"
RETRY_COUNT = "x-stainless-retry-count"  # sent by the openai and anthropic SDKs
GRPC_ATTEMPTS = "grpc-previous-rpc-attempts"  # sent by gRPC's transparent retries (xai-sdk)

_POLL = 0.02  # how often a stalled response checks whether its client is still there


@dataclass(frozen=True, slots=True)
class Injection:
    """What the request's X-Sim-* headers asked to go wrong with its response."""

    status: int | None = None
    stall: str | None = None  # "headers" | "body"
    cut_after: int | None = None
    split: int | None = None
    gzip: bool = False
    encoding: str | None = None  # "gzip" | "deflate" | "br" | "zstd"
    malformed: bool = False
    newline: str | None = None  # "cr" | "crlf" | "mixed"
    reply_headers: tuple[tuple[str, str], ...] = ()
    usage: str | None = None  # "none" | "every" | "provisional"

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Injection:
        status = header_int(headers, HEADER_STATUS)
        if status is not None and not 400 <= status <= 599:
            raise ApiError(400, f"{HEADER_STATUS} must be a 4xx or 5xx status, got {status}")
        split = header_int(headers, HEADER_SPLIT)
        if split == 0:
            raise ApiError(400, f"{HEADER_SPLIT} must be at least 1")
        overloaded = header_int(headers, HEADER_OVERLOADED)
        if status is None and overloaded is not None:
            retry = header_int(headers, RETRY_COUNT) or header_int(headers, GRPC_ATTEMPTS) or 0
            status = 529 if retry < overloaded else None
        return cls(
            status=status,
            stall=header_choice(headers, HEADER_STALL, ("headers", "body")),
            cut_after=header_int(headers, HEADER_CUT_AFTER),
            split=split,
            gzip=_header_flag(headers, HEADER_GZIP),
            encoding=header_choice(headers, HEADER_ENCODING, tuple(_STREAM_CODERS)),
            malformed=_header_flag(headers, HEADER_MALFORMED),
            newline=header_choice(headers, HEADER_NEWLINE, tuple(_NEWLINES)),
            reply_headers=_header_pairs(headers, HEADER_REPLY_HEADERS),
            usage=header_choice(headers, HEADER_USAGE, ("none", "every", "provisional")),
        )


INJECTION_KEY = web.RequestKey("xai_sim_injection", Injection)


def header_int(headers: Mapping[str, str], name: str) -> int | None:
    """A header's whole, non-negative number; None when absent; `ApiError` 400 if bad."""
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise ApiError(400, f"{name} must not be negative, got {value}")
    return value


def _header_flag(headers: Mapping[str, str], name: str) -> bool:
    raw = headers.get(name, "").strip().lower()
    return raw not in ("", "0", "false", "no", "off")


def _header_pairs(headers: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    """``a=1;b=2`` as (("a", "1"), ("b", "2")); 400 for a part without ``=``."""
    pairs = []
    for part in headers.get(name, "").split(";"):
        if part.strip():
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise ApiError(400, f"{name} must be name=value pairs joined by ';', got {part!r}")
            pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def header_choice(headers: Mapping[str, str], name: str, choices: Sequence[str]) -> str | None:
    """A header's value, lowercased, one of `choices`; None when absent; 400 if not."""
    raw = headers.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value not in choices:
        raise ApiError(400, f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _mangle(piece: bytes, stream: bool) -> bytes:
    """Break the JSON in a body or in an SSE frame's data lines, keeping the framing intact."""
    if not stream:
        return piece.rstrip()[:-1] + b', "truncated' if piece else b"{not json"
    lines = []
    for line in piece.split(b"\n"):
        if line.startswith(b"data: {"):
            line = line[:-1] + b', "truncated'
        lines.append(line)
    return b"\n".join(lines)


_NEWLINES = {"cr": (b"\r",), "crlf": (b"\r\n",), "mixed": (b"\r", b"\r\n", b"\n", b"\r\n")}


def _renewline(pieces: list[bytes], kind: str) -> list[bytes]:
    """The stream's LF line endings replaced, in turn, by those `kind` names."""
    endings = itertools.cycle(_NEWLINES[kind])
    out = []
    for piece in pieces:
        *lines, rest = piece.split(b"\n")
        out.append(b"".join(line + next(endings) for line in lines) + rest)
    return out


def _gzip_stream(pieces: list[bytes], finish: bool, coding: str = "gzip") -> list[bytes]:
    """Compress a stream piece by piece (flushed per piece), so pacing and cuts survive it."""
    step, end = _STREAM_CODERS[coding]()
    out = [step(piece) for piece in pieces]
    if finish:
        out.append(end())
    return out


def _zlib_coder(wbits: int) -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    c = zlib.compressobj(wbits=wbits)
    return (lambda piece: c.compress(piece) + c.flush(zlib.Z_SYNC_FLUSH)), c.flush


def _brotli_coder() -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    c = brotli.Compressor()
    return (lambda piece: c.process(piece) + c.flush()), c.finish


def _zstd_coder() -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    c = zstandard.ZstdCompressor().compressobj()
    flush_block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
    return (lambda piece: c.compress(piece) + c.flush(flush_block)), c.flush


_STREAM_CODERS: dict[str, Callable[[], tuple[Callable[[bytes], bytes], Callable[[], bytes]]]] = {
    "gzip": lambda: _zlib_coder(31),
    "deflate": lambda: _zlib_coder(15),
    "br": _brotli_coder,
    "zstd": _zstd_coder,
}


def _resplit(pieces: list[bytes], size: int) -> list[bytes]:
    data = b"".join(pieces)
    return [data[i : i + size] for i in range(0, len(data), size)]


def _client_gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def abort(request: web.BaseRequest) -> None:
    """Drop the connection without an answer (a cut body, a stall the client left)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def wait_release(request: web.Request) -> bool:
    """Wait for `state.release`; False when the client left or the simulator is closing.

    aiohttp does not tell a handler that its client left (unless handler cancellation is on), so
    the wait also polls the transport.
    """
    state = request.app[STATE_KEY]
    closing = request.app[CLOSING_KEY]
    state.stalled.set()
    try:
        while not state.release.is_set():
            if closing.is_set():
                return False
            if _client_gone(request):
                abandon(state)
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.release.wait(), _POLL)
    except asyncio.CancelledError:  # handler cancellation: the client left
        if not closing.is_set():
            abandon(state)
        raise
    return True


def _ratelimit(state: SimulatorState, headers: CIMultiDict[str], tokens: int) -> None:
    state.requests_served += 1
    state.tokens_served += tokens
    remaining_requests = max(0, state.ratelimit_requests - state.requests_served)
    remaining_tokens = max(0, state.ratelimit_tokens - state.tokens_served)
    headers["x-ratelimit-limit-requests"] = str(state.ratelimit_requests)
    headers["x-ratelimit-remaining-requests"] = str(remaining_requests)
    headers["x-ratelimit-limit-tokens"] = str(state.ratelimit_tokens)
    headers["x-ratelimit-remaining-tokens"] = str(remaining_tokens)


def abandon(state: SimulatorState) -> None:
    """Count a stalled answer whose client left (`SimulatorState.abandoned`)."""
    state.abandoned_count += 1
    state.abandoned.set()


async def send(request: web.Request, reply: Reply, inj: Injection) -> web.StreamResponse:
    """Write a reply, applying the injected faults: stall, split, gzip, malformed, cut."""
    state = request.app[STATE_KEY]
    headers: CIMultiDict[str] = CIMultiDict(reply.headers)
    headers["x-request-id"] = str(uuid.uuid4())
    if 200 <= reply.status < 300:
        _ratelimit(state, headers, reply.tokens)
    for name, value in inj.reply_headers:  # after the defaults: a test's headers win
        headers[name] = value
    stream = reply.frames is not None
    if reply.content_type:
        headers[hdrs.CONTENT_TYPE] = reply.content_type
    if stream:
        headers[hdrs.CACHE_CONTROL] = "no-cache"
    pieces = list(reply.frames) if reply.frames is not None else [reply.body]
    pieces = [piece for piece in pieces if piece]
    if inj.malformed:
        pieces = [_mangle(piece, stream) for piece in pieces] or [_mangle(b"", stream)]
    if stream and inj.newline:
        pieces = _renewline(pieces, inj.newline)
    cut = inj.cut_after is not None
    if stream and inj.cut_after is not None:
        pieces = pieces[: inj.cut_after]
    if state.record_requests:  # what a client that decodes the body gets, as it is sent
        plain = b"".join(pieces)
        state.sent.append(plain[: len(plain) // 2] if cut and not stream else plain)
    coding = inj.encoding or ("gzip" if inj.gzip else None)
    if coding and (pieces or stream):
        headers[hdrs.CONTENT_ENCODING] = coding
        if stream or coding != "gzip":
            pieces = _gzip_stream(pieces, finish=not (cut and stream), coding=coding)
        else:
            pieces = [gzip.compress(b"".join(pieces), mtime=0)]
    response = web.StreamResponse(status=reply.status, headers=headers)
    if not stream:
        body = b"".join(pieces)
        response.content_length = len(body)  # a cut body promises more than it sends
        pieces = [body[: len(body) // 2]] if cut else [body]
        pieces = [piece for piece in pieces if piece]
    if inj.split:
        pieces = _resplit(pieces, inj.split)
    stall_at = (1 if stream else 0) if inj.stall == "body" else None
    try:
        await response.prepare(request)
        for index, piece in enumerate(pieces):
            if index == stall_at:
                if not await wait_release(request):
                    abort(request)
                    return response
            elif index and stream and state.chunk_delay > 0:
                await asyncio.sleep(state.chunk_delay)
            await response.write(piece)
        if stall_at is not None and stall_at >= len(pieces) and not await wait_release(request):
            abort(request)
            return response
        if cut:
            abort(request)
            return response
        await response.write_eof()
    except ConnectionError:
        pass  # the client left mid-answer; there is nobody to tell
    return response
