"""Fetching xAI's price listings over HTTP, and the refresher that retries and keeps old prices.

`fetch_listing` GETs ``/v1/language-models`` and ``/v1/image-generation-models`` into one
`PriceSet`; `PriceRefresher` runs it on a schedule with tenacity (exponential backoff, full
jitter), saves each new set through a callback (the ledger thread) and puts it in force in the
`PriceBook`. A failed refresh keeps the old prices.

Facts from /work/shared/xai-api.md, "Listings" (the two endpoints; the image listing may be
absent) and "Headers and errors" (error bodies ``{"code", "error"}``, which status codes a retry
may cure, and that an upstream may echo a key in its error body: `_excerpt` masks anything
key-shaped before it reaches a log or an exception).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Final

import aiohttp
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from tenacity.wait import WaitBaseT

from daemon.keys import MASK
from daemon.pricing.book import PriceBook, PriceSet
from daemon.pricing.listing import parse_image_models, parse_language_models

log = structlog.get_logger("xai_meter.pricing")


class PriceFetchError(Exception):
    """A listing could not be fetched: ``status`` (None when no HTTP answer), a body excerpt."""

    def __init__(self, url: str, status: int | None, detail: str, *, retryable: bool) -> None:
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"GET {url}: {where}: {detail}")
        self.url = url
        self.status = status
        self.detail = detail
        self.retryable = retryable


_RETRY_STATUSES: Final = frozenset({408, 409, 425, 429})


# An upstream's "incorrect API key" message may quote part of the key (redacted, which the
# masks of known keys in daemon.keys cannot recognise): never log that part either.
_KEYISH = re.compile(r"\b(?:xai|sk|sk-ant)-[A-Za-z0-9*._-]{4,}")


def _excerpt(body: bytes, limit: int = 200) -> str:
    text = _KEYISH.sub(MASK, " ".join(body.decode("utf-8", "replace").split()))
    return text if len(text) <= limit else text[:limit] + "…"


def _api_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


async def _get_json(
    session: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    request_timeout: float,
    *,
    optional: bool = False,
) -> Any:
    try:
        async with session.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=request_timeout)
        ) as resp:
            body = await resp.read()
            if optional and resp.status == 404:
                return None
            if resp.status != 200:
                raise PriceFetchError(
                    url,
                    resp.status,
                    _excerpt(body) or resp.reason or "",
                    retryable=resp.status >= 500 or resp.status in _RETRY_STATUSES,
                )
            try:
                return json.loads(body)
            except ValueError:
                raise PriceFetchError(
                    url, resp.status, "not JSON: " + _excerpt(body), retryable=True
                ) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PriceFetchError(url, None, f"{type(exc).__name__}: {exc}", retryable=True) from exc


async def fetch_listing(
    session: aiohttp.ClientSession,
    base_url: str,
    api_key: str | None,
    *,
    request_timeout: float = 30.0,
    clock: Callable[[], float] = time.time,
) -> PriceSet:
    """GET ``/v1/language-models`` and ``/v1/image-generation-models`` → a `PriceSet` (no id).

    ``base_url`` is the upstream origin (a trailing ``/v1`` is accepted). The image listing is
    optional: 404 there means none. Any other failure, or a language listing without one usable
    model, raises `PriceFetchError` (``retryable`` says whether another attempt may help).
    """
    root = _api_root(base_url)
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = f"{root}/language-models"
    models = parse_language_models(await _get_json(session, url, headers, request_timeout))
    if not models:
        raise PriceFetchError(url, 200, "the listing has no usable model", retryable=True)
    image_obj = await _get_json(
        session, f"{root}/image-generation-models", headers, request_timeout, optional=True
    )
    by_id = {mp.model: mp for mp in models}
    for mp in parse_image_models(image_obj) if image_obj is not None else []:
        known = by_id.get(mp.model)
        if known is None:
            by_id[mp.model] = mp
        elif known.image is None and mp.image is not None:
            by_id[mp.model] = replace(known, image=mp.image)
    now = clock()
    return PriceSet.of(by_id.values(), effective_at=now, fetched_at=now, source="listing")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, PriceFetchError) and exc.retryable


class PriceRefresher:
    """Refreshes a `PriceBook` from the listings, retrying with tenacity.

    One `refresh` makes up to ``attempts`` tries (exponential backoff with full jitter unless
    ``wait`` is given; tests pass ``tenacity.wait_none()``), retrying only what may pass next
    time (network errors, 408/409/425/429, 5xx). On success the set is saved through ``save``
    (an awaitable returning its ``price_sets`` id, e.g. a call into the ledger thread), put in
    force with `PriceBook.add` and passed to ``on_success``. On final failure the book keeps its
    prices and ``on_failure`` gets the exception (metrics hook); nothing is raised.
    """

    def __init__(
        self,
        book: PriceBook,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str | Callable[[], str | None] | None = None,
        *,
        attempts: int = 5,
        wait: WaitBaseT | None = None,
        timeout: float = 30.0,
        save: Callable[[PriceSet], Awaitable[int]] | None = None,
        on_success: Callable[[PriceSet], None] | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.session = session
        self.base_url = base_url
        self.api_key = api_key
        self.attempts = max(attempts, 1)
        self.wait: WaitBaseT = (
            wait if wait is not None else wait_random_exponential(multiplier=1, max=60)
        )
        self.timeout = timeout
        self.save = save
        self.on_success = on_success
        self.on_failure = on_failure
        self.clock = clock
        self.last_error: Exception | None = None
        self.last_success_at: float | None = None
        self.tries = 0  # HTTP attempts made, all refreshes together

    def _fail(self, exc: Exception) -> None:
        self.last_error = exc
        current = self.book.current
        log.warning(
            "price_refresh_failed",
            error=str(exc),
            error_type=type(exc).__name__,
            kept_price_set=current.id if current is not None else None,
        )
        if self.on_failure is not None:
            try:
                self.on_failure(exc)
            except Exception:
                log.exception("price_refresh_callback_failed", callback="on_failure")

    async def _fetch(self) -> PriceSet:
        self.tries += 1
        key = self.api_key() if callable(self.api_key) else self.api_key
        return await fetch_listing(
            self.session,
            self.base_url,
            key,
            request_timeout=self.timeout,
            clock=self.clock,
        )

    async def refresh(self) -> PriceSet | None:
        """One refresh (with retries); the set in force afterwards, or None when it failed."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self.wait,
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            fetched: PriceSet | None = None
            async for attempt in retrying:
                with attempt:
                    fetched = await self._fetch()
            assert fetched is not None
        except Exception as exc:  # PriceFetchError, or a bug: either way keep the old prices
            self._fail(exc)
            return None
        if self.save is not None:
            try:
                fetched = replace(fetched, id=await self.save(fetched))
            except Exception as exc:  # the prices are still good: use them unsaved
                self._fail(exc)
        in_force = self.book.add(fetched)
        log.info(
            "prices_refreshed",
            price_set=in_force.id,
            models=len(in_force.models),
            changed=in_force is fetched,
            digest=in_force.digest[:12],
        )
        self.last_error = None
        self.last_success_at = self.clock()
        if self.on_success is not None:
            try:
                self.on_success(in_force)
            except Exception:
                log.exception("price_refresh_callback_failed", callback="on_success")
        return in_force

    async def run(self, interval: float) -> None:
        """Refresh now and then every ``interval`` seconds, until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval)
