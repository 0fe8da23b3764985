"""Upstreams: where a call goes, with which key, and which headers cross the hop.

- `Upstream`: one configured upstream (provider, base URL, timeouts, optional key, prefix); its
  key is pinned in `daemon.keys.KNOWN_KEYS`, masked wherever it could be stored or logged.
- `UpstreamRoutes`: the relay path -> upstream table, longest prefix first; dot segments refused.
- `Upstream.add_key`: the configured key, put where its provider reads it (``x-api-key`` for
  Anthropic, ``Authorization: Bearer`` otherwise), for calls that carry no key of their own.
- Header filtering: `forward_headers` (client -> upstream) and `response_headers` (upstream ->
  client) drop RFC 9110 hop-by-hop headers; our own ``X-Meter-*`` controls never leave.
  `forward_headers` adds the relay's ``Via`` (`daemon.loops.VIA`: how a loop is seen).
  `make_sendable`: a header whose bytes the client side could not send as they came.
  `decodable_accept_encoding` narrows Accept-Encoding to what the taps can decode.
- `read_response_headers`: what the upstream's response headers tell the meter (request id,
  rate-limit headroom, its own time to first token): a few dict lookups, once per call.
- `json_error`: the relay's own answers when a call cannot reach the upstream (or no upstream
  serves its path, or a limit refuses it), shaped like xAI's errors.
- `PoolConnector`: aiohttp's connector, marking a call that waited for a free pooled connection,
  so a connect timeout spent in that wait (`waited_for_pool`: 503 ``upstream_pool_exhausted``)
  is told apart from one spent connecting (504 ``upstream_timeout``).

Nothing here runs per chunk: routing and header filtering run once per call.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

from daemon.dialects.encoding import DECODABLE
from daemon.keys import KNOWN_KEYS
from daemon.loops import VIA
from daemon.record import CallRecord

# Headers aiohttp's client adds when absent: skipped unless the client sent them, so the
# upstream sees the client's headers and no others.
AUTO_HEADERS = (istr("User-Agent"), istr("Accept"), istr("Accept-Encoding"), istr("Content-Type"))

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


@dataclass(frozen=True, slots=True)
class Upstream:
    """One configured upstream: where its calls go and how they are labelled.

    Calls to ``{prefix}/v1/...`` on the relay go to ``{base_url}/v1/...``; the default upstream
    has the empty prefix. No other destination exists: the host comes from here, never from
    the request.
    """

    provider: str
    base_url: URL
    connect_timeout: float  # seconds
    read_timeout: float  # seconds between two reads of the body
    api_key: str | None = None  # added to calls that carry no key of their own
    prefix: str = ""
    # token price multiplier, exact (11/10 for the US regional endpoint); None: times 1. The relay
    # puts it on each record (daemon.pricing.cost applies it)
    price_multiplier: Fraction | None = None

    def __post_init__(self) -> None:
        KNOWN_KEYS.pin(self.api_key)  # masked wherever an upstream may echo it

    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, connect=self.connect_timeout, sock_read=self.read_timeout
        )

    def add_key(self, headers: CIMultiDict[str]) -> str | None:
        """Put the configured key (if any) where this provider reads it; return it."""
        key = self.api_key
        if key:
            if self.provider == "anthropic":
                headers["x-api-key"] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        return key


class UpstreamRoutes:
    """Which upstream serves a relay path: built once, looked up per call."""

    def __init__(self, upstreams: Iterable[Upstream]) -> None:
        # Longest prefix first, so /a/b/v1 is not taken for /a/v1; each with its timeout.
        self._routes = sorted(
            ((u.prefix, u, u.client_timeout()) for u in upstreams),
            key=lambda route: -len(route[0]),
        )

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
    """The client's headers minus hop-by-hop ones and our own X-Meter-* controls, plus our
    ``Via`` (RFC 9110 7.6.3: after any the client sent; `daemon.loops` finds it if the
    request comes back)."""
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
    out.add("Via", VIA)
    return out


def make_sendable(headers: CIMultiDict[str]) -> str | None:
    """Make every header value one aiohttp's client can send; the name of the first it had to
    change, or None (nearly always: ASCII values are known at a glance).

    aiohttp reads a header byte that is not UTF-8 as a lone surrogate (``surrogateescape``),
    but its client writes headers as UTF-8 and silently drops such a character: the upstream
    would get other bytes than the client sent, perhaps another (real) key. Such a byte is sent
    as U+FFFD instead: the call is still relayed (issue 12: the upstream decides, e.g. a 401),
    and no altered value can be some other valid key. The key id is made from the exact bytes.
    """
    if "".join(headers.values()).isascii():  # one join and one test: the usual case
        return None
    changed = None
    for name, value in list(headers.items()):
        if value.isascii():
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            fixed = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            headers.popall(name)
            headers.add(name, fixed)
            changed = changed or name
    return changed


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


def read_response_headers(record: CallRecord, headers: CIMultiDictProxy[str]) -> None:
    """Fill the record from the upstream's response headers (xai-api.md, "Headers and errors"):
    ``x-request-id``; ``x-ratelimit-{limit,remaining}-{requests,tokens}`` (success responses
    only, no reset header) into ``record.ratelimit``; ``x-metrics-ttft-ms`` (milliseconds) into
    ``record.upstream_ttft_ms``. A value that is not a non-negative number is no value."""
    get = headers.get
    record.request_id = get("x-request-id")
    limit_req = get("x-ratelimit-limit-requests")
    remaining_req = get("x-ratelimit-remaining-requests")
    limit_tok = get("x-ratelimit-limit-tokens")
    remaining_tok = get("x-ratelimit-remaining-tokens")
    if limit_req or remaining_req or limit_tok or remaining_tok:
        record.ratelimit = (
            _number(limit_req),
            _number(remaining_req),
            _number(limit_tok),
            _number(remaining_tok),
        )
    ttft = get("x-metrics-ttft-ms")
    if ttft:
        record.upstream_ttft_ms = _number(ttft)


def _number(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 <= value < float("inf") else None


def json_error(status: int, code: str, message: str, retry_after: int = 0) -> web.Response:
    """Errors the relay itself answers, shaped like xAI's: {"code", "error"}; with a
    ``Retry-After`` (seconds) when `retry_after` is not 0."""
    response = web.json_response(
        {"code": code, "error": message, "source": "xai-meter"}, status=status
    )
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


# True in a call's task once it has waited for a free pooled connection and not got one yet.
# The wait happens in the call's own task (aiohttp awaits the connector there), so the mark is
# the call's own; each request runs in a task of its own, so it never outlives the call.
_POOL_WAIT: ContextVar[bool] = ContextVar("xai_meter_pool_wait", default=False)


class PoolConnector(aiohttp.TCPConnector):
    """aiohttp's `TCPConnector` (the keep-alive pool of ``limit`` connections), marking a call
    that waits for a free connection. aiohttp's ``ClientTimeout.connect`` covers the wait and
    the connect alike and raises one `aiohttp.ConnectionTimeoutError` for both; the mark tells
    them apart (`waited_for_pool`). Costs nothing while the pool has a free connection: only
    the wait, aiohttp's ``_wait_for_available_connection``, is wrapped."""

    async def _wait_for_available_connection(self, key: Any, traces: Any) -> None:
        _POOL_WAIT.set(True)
        await super()._wait_for_available_connection(key, traces)
        _POOL_WAIT.set(False)


def waited_for_pool() -> bool:
    """True when this call's connect timed out while it waited for a free pooled connection."""
    return _POOL_WAIT.get()
