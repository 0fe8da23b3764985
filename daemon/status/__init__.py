"""The status page on the admin listener: `GET /` and its small read-only JSON API.

Routes (README "Status page" documents every field):

- ``GET /``, ``GET /static/status.js``, ``GET /static/status.css``: the page, shipped in the
  package (``static/``): no build step, nothing fetched from elsewhere (its
  Content-Security-Policy allows this origin only), charts drawn by its own script as SVG.
- ``GET /api/summary?since=24h&tz=UTC``: the window's spend, today / this month, burn rate,
  per model / app / key, spend over time, what went wrong (`daemon.status.data.summary`).
- ``GET /api/calls?limit=50``: the last calls, no prompts (1..500).
- ``GET /api/fingerprints``: the fingerprint timeline per model, every change.
- ``GET /api/health``: the daemon's own state (`daemon.status.health.health`).

``since`` takes `daemon.windows.parse_window`'s words (``30m``, ``24h``, ``7d``, ``today``,
``yesterday``, ``this-month``, ``last-month``, ISO dates), ``tz`` an IANA zone (default UTC);
a bad value is a 400 ``{"error": "..."}``. Every ledger query runs in a worker thread on a
read-only connection of its own (at most `MAX_QUERIES` at once), never on the event loop and
never on a call's path; health reads memory only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from aiohttp import web

from daemon.ledger.engine import open_ledger
from daemon.status import data
from daemon.status.health import health
from daemon.windows import WindowError, parse_window

if TYPE_CHECKING:
    from daemon.app import Daemon

__all__ = ["MAX_QUERIES", "StatusPage"]

MAX_QUERIES = 2  # ledger queries at once: a page left open in many tabs takes no more threads
DEFAULT_SINCE = "24h"
DEFAULT_LIMIT = 50
_T = TypeVar("_T")

# This origin only: the page works offline and can load nothing from elsewhere.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_STATIC = {
    "index.html": "text/html",
    "status.js": "text/javascript",
    "status.css": "text/css",
}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _error(message: str, status: int = 400) -> web.Response:
    return _json({"error": message}, status)


class StatusPage:
    """The page and its API for one daemon; `add_routes` puts them on the admin app.

    `daemon` gives the ledger's path, the clocks and the in-memory state health reads;
    `started_at` (epoch s) is when this daemon started, for the uptime."""

    def __init__(self, daemon: Daemon, started_at: float) -> None:
        self.daemon = daemon
        self.started_at = started_at
        self._queries = asyncio.Semaphore(MAX_QUERIES)
        folder = resources.files(__package__) / "static"
        self._files = {name: (folder / name).read_bytes() for name in _STATIC}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/summary", self._summary)
        app.router.add_get("/api/calls", self._calls)
        app.router.add_get("/api/fingerprints", self._fingerprints)
        app.router.add_get("/api/health", self._health)

    def _file(self, name: str) -> web.Response:
        return web.Response(
            body=self._files[name],
            content_type=_STATIC[name],
            charset="utf-8",
            headers={
                "Cache-Control": "no-cache",
                "Content-Security-Policy": _CSP,
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def _page(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC or name == "index.html":
            raise web.HTTPNotFound()
        return self._file(name)

    async def _read(self, query: Callable[..., _T], *args: Any) -> _T:
        """`query(db, *args)` in a worker thread on a read-only connection of its own."""
        ledger = self.daemon.settings.ledger
        where = ledger.url or ledger.path  # SQLite, or the PostgreSQL ledger daemons share

        def run() -> _T:
            db = open_ledger(where, readonly=True)
            try:
                return query(db, *args)
            finally:
                db.close()

        async with self._queries:
            return await asyncio.get_running_loop().run_in_executor(None, run)

    async def _answer(self, query: Callable[..., Any], *args: Any) -> web.Response:
        try:
            return _json(await self._read(query, *args))
        except self.daemon.ledger.errors as exc:  # locked past the busy timeout, unreadable, gone
            return _error(f"the ledger could not be read: {exc}", 503)

    async def _summary(self, request: web.Request) -> web.Response:
        since = request.query.get("since", DEFAULT_SINCE)
        tz = request.query.get("tz", "UTC")
        now = self.daemon.clocks.wall()
        try:
            window = parse_window(since, now, tz)
        except WindowError as exc:
            return _error(str(exc))
        return await self._answer(data.summary, window, now, since)

    async def _calls(self, request: web.Request) -> web.Response:
        text = request.query.get("limit", str(DEFAULT_LIMIT))
        try:
            limit = int(text)
        except ValueError:
            limit = 0
        if not 1 <= limit <= data.MAX_CALLS:
            return _error(f"limit={text!r}: expected a whole number from 1 to {data.MAX_CALLS}")
        return await self._answer(data.calls, limit)

    async def _fingerprints(self, request: web.Request) -> web.Response:
        return await self._answer(data.fingerprints)

    async def _health(self, request: web.Request) -> web.Response:
        return _json(health(self.daemon, self.started_at, self.daemon.clocks.wall()))
