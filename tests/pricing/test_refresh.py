"""Fetching the listings against a tiny real server; the refresher's retries and failures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tenacity import wait_none

from daemon.pricing.book import PriceBook, PriceSet
from daemon.pricing.refresh import PriceFetchError, PriceRefresher, _excerpt, fetch_listing


class Script:
    """Answers per path: a list of (status, body) played in order, the last one repeated."""

    def __init__(self, routes: dict[str, list[tuple[int, Any]]]) -> None:
        self.routes = routes
        self.hits: dict[str, int] = {}
        self.auth: list[str | None] = []

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.auth.append(request.headers.get("Authorization"))
        n = self.hits.get(path, 0)
        self.hits[path] = n + 1
        answers = self.routes.get(path)
        if not answers:
            return web.json_response({"code": "not_found", "error": "no route"}, status=404)
        status, body = answers[min(n, len(answers) - 1)]
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)


@contextlib.asynccontextmanager
async def serve(script: Script) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", script.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            yield f"http://127.0.0.1:{port}", session
    finally:
        await runner.cleanup()


Routes = dict[str, list[tuple[int, Any]]]


@pytest.fixture
def ok_routes(language_listing: dict[str, Any], image_listing: dict[str, Any]) -> Routes:
    return {
        "/v1/language-models": [(200, language_listing)],
        "/v1/image-generation-models": [(200, image_listing)],
    }


@pytest.mark.asyncio
async def test_fetch_listing(ok_routes: Routes, listing_set: Callable[..., PriceSet]) -> None:
    script = Script(ok_routes)
    async with serve(script) as (base, session):
        ps = await fetch_listing(session, base, "xai-secret", clock=lambda: 1234.0)
        again = await fetch_listing(session, base + "/v1/", None, clock=lambda: 1234.0)
    assert ps.id is None and ps.effective_at == ps.fetched_at == 1234.0
    assert ps.digest == listing_set().digest
    assert ps.resolve("grok-imagine").image == 200000000  # type: ignore[union-attr]
    assert again.digest == ps.digest
    assert script.auth[:2] == ["Bearer xai-secret", "Bearer xai-secret"]
    assert script.auth[2:] == [None, None]


@pytest.mark.asyncio
async def test_fetch_listing_without_image_models_and_failures(
    ok_routes: Routes, language_listing: dict[str, Any]
) -> None:
    script = Script({"/v1/language-models": [(200, language_listing)]})  # images: 404
    async with serve(script) as (base, session):
        ps = await fetch_listing(session, base, None)
        assert ps.resolve("grok-imagine") is None and ps.resolve("grok-3") is not None

    script = Script(
        {
            "/v1/language-models": [
                (
                    400,
                    {
                        "code": "Client specified an invalid argument",
                        "error": "Incorrect API key provided: xa***23.",
                    },
                )
            ]
        }
    )
    async with serve(script) as (base, session):
        with pytest.raises(PriceFetchError) as err:
            await fetch_listing(session, base, "bad")
    assert err.value.status == 400 and not err.value.retryable
    assert "Incorrect API key" in err.value.detail and "HTTP 400" in str(err.value)

    cases: list[tuple[dict[str, list[tuple[int, Any]]], int]] = [
        ({"/v1/language-models": [(200, "<html>oops</html>")]}, 200),  # not JSON
        ({"/v1/language-models": [(200, {"models": []})]}, 200),  # nothing usable
        ({**ok_routes, "/v1/image-generation-models": [(502, "bad gateway")]}, 502),
    ]
    for routes, status in cases:
        async with serve(Script(routes)) as (base, session):
            with pytest.raises(PriceFetchError) as err:
                await fetch_listing(session, base, None)
        assert err.value.status == status and err.value.retryable

    async with aiohttp.ClientSession() as session:  # nothing listening: no HTTP answer
        with pytest.raises(PriceFetchError) as err:
            await fetch_listing(session, "http://127.0.0.1:1", None)
    assert err.value.status is None and err.value.retryable


def refresher(
    book: PriceBook, session: aiohttp.ClientSession, base: str, failures: list[Exception], **kw: Any
) -> PriceRefresher:
    return PriceRefresher(
        book, session, base, "k", attempts=3, wait=wait_none(), on_failure=failures.append, **kw
    )


@pytest.mark.asyncio
async def test_refresh_retries_a_failing_listing(
    ok_routes: Routes, language_listing: dict[str, Any]
) -> None:
    script = Script(
        {
            **ok_routes,
            "/v1/language-models": [
                (503, {"code": "unavailable", "error": "try later"}),
                (200, language_listing),
            ],
        }
    )
    book, saved = PriceBook(), []
    failures: list[Exception] = []
    successes: list[PriceSet] = []

    async def save(ps: PriceSet) -> int:
        saved.append(ps)
        return 41

    async with serve(script) as (base, session):
        r = refresher(book, session, base, failures, save=save, on_success=successes.append)
        ps = await r.refresh()
    assert script.hits["/v1/language-models"] == 2 and r.tries == 2
    assert failures == [] and r.last_error is None
    assert ps is not None and ps.id == 41 and book.current == ps and successes == [ps]
    assert len(saved) == 1 and saved[0].id is None


@pytest.mark.asyncio
async def test_permanent_failure_keeps_old_prices_and_reports(
    two_sets: tuple[PriceSet, PriceSet],
) -> None:
    old, _ = two_sets
    book = PriceBook([old])
    failures: list[Exception] = []
    script = Script({"/v1/language-models": [(503, "upstream down")]})
    async with serve(script) as (base, session):
        r = refresher(book, session, base, failures)
        assert await r.refresh() is None
    assert script.hits["/v1/language-models"] == 3  # bounded attempts
    assert len(failures) == 1
    exc = failures[0]
    assert isinstance(exc, PriceFetchError) and exc.status == 503
    assert "upstream down" in exc.detail
    assert book.history == (old,) and r.last_error is exc

    failures.clear()
    script = Script({"/v1/language-models": [(401, {"error": "no key"})]})
    async with serve(script) as (base, session):
        r = refresher(book, session, base, failures)
        assert await r.refresh() is None
    assert script.hits["/v1/language-models"] == 1  # a 401 is not retried
    assert len(failures) == 1 and book.history == (old,)


@pytest.mark.asyncio
async def test_unchanged_refresh_adds_no_set_and_save_failure_still_prices(
    ok_routes: Routes, listing_set: Callable[..., PriceSet], language_listing: dict[str, Any]
) -> None:
    book = PriceBook([replace(listing_set(1.0), id=5)])
    failures: list[Exception] = []

    async def broken_save(ps: PriceSet) -> int:
        raise OSError("disk full")

    async with serve(Script(ok_routes)) as (base, session):
        r = refresher(book, session, base, failures, clock=lambda: 99.0)
        ps = await r.refresh()
        assert ps is not None and [s.id for s in book.history] == [5]
        assert (ps.id, ps.effective_at, ps.fetched_at) == (5, 1.0, 99.0)

        changed = {
            "/v1/language-models": [
                (
                    200,
                    {
                        "models": [
                            {**language_listing["models"][1], "prompt_text_token_price": 20000}
                        ]
                    },
                )
            ]
        }
        async with serve(Script(changed)) as (base2, _):
            r2 = refresher(book, session, base2, failures, save=broken_save)
            ps2 = await r2.refresh()
    assert ps2 is not None and ps2.id is None and len(book.history) == 2
    assert book.price_for("grok-3", 9e12).input == 20000  # type: ignore[union-attr]
    assert len(failures) == 1 and isinstance(failures[0], OSError)


@pytest.mark.asyncio
async def test_run_refreshes_until_cancelled(ok_routes: Routes) -> None:
    book: PriceBook = PriceBook()
    seen: list[PriceSet] = []
    twice = asyncio.Event()

    def on_success(ps: PriceSet) -> None:
        seen.append(ps)
        if len(seen) == 2:
            twice.set()

    async with serve(Script(ok_routes)) as (base, session):
        r = PriceRefresher(book, session, base, wait=wait_none(), on_success=on_success)
        task = asyncio.create_task(r.run(interval=0))
        await asyncio.wait_for(twice.wait(), 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(book.history) == 1


def test_listing_errors_never_quote_a_key() -> None:
    body = (
        b'{"code":"Client specified an invalid argument","error":"Incorrect API key '
        b'provided: xai-AbCd****************************WxYz. You can obtain an API key"}'
    )
    text = _excerpt(body)
    assert "AbCd" not in text and "WxYz" not in text and "[key]" in text
