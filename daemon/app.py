"""Building the relay and admin apps, and the daemon's lifecycle: start, serve, drain, flush.

aiohttp's lifecycle owns the resources: the relay app's cleanup context opens the ledger and the
one keep-alive `ClientSession`, and closes them only after every call in flight has ended, so a
call cut short by shutdown is still written before exit.

Shutdown order (SIGTERM or SIGINT): readiness turns false; the relay stops accepting; calls in
flight get `shutdown.grace_period` seconds, then are cancelled (each still recorded, as
`shutdown`); the session closes; the ledger writes everything queued; the admin listener closes.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from yarl import URL

from daemon import logs
from daemon.config import ConfigError, Settings
from daemon.deferred import RESULT_TTL, DeferredTracker
from daemon.fingerprints import FingerprintChange, FingerprintTracker
from daemon.keys import KeyHasher
from daemon.ledger import Ledger, store
from daemon.logs import CallLog
from daemon.meter import Meter, Sink
from daemon.metrics import Metrics
from daemon.notify import notify_webhook
from daemon.pricing import PriceBook, PriceRefresher, load_price_history, save_price_set
from daemon.record import CallRecord
from daemon.relay import SESSION_KEY, Relay, Upstream

log = structlog.get_logger("xai_meter.app")

GC_THRESHOLD = 20_000
RETENTION_INTERVAL = 3600.0  # seconds between retention sweeps
RETENTION_FIRST_DELAY = 60.0
DEFERRED_EXPIRY_INTERVAL = 600.0  # seconds between sweeps for deferred requests past 24 h
MAX_REQUEST_BYTES = 100 * 1024 * 1024  # above xAI's own 50 MB limit, so the upstream answers 413


@dataclass
class Clocks:
    """Injected so tests can use fake time: monotonic for durations, wall for timestamps."""

    monotonic: Callable[[], float] = time.perf_counter
    wall: Callable[[], float] = time.time


@dataclass
class Daemon:
    """Everything one running daemon shares between its two listeners."""

    settings: Settings
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    clocks: Clocks = field(default_factory=Clocks)
    api_key: str | None = None
    retry_wait: Any = None  # tenacity wait for listing and webhook retries; tests: wait_none()

    def __post_init__(self) -> None:
        s = self.settings
        self.metrics = Metrics(
            self.registry,
            max_models=s["metrics.max_models"],
            apps=s["metrics.apps"],
            max_apps=s["metrics.max_apps"],
            max_keys=s["metrics.max_keys"],
        )
        self.book = PriceBook(overrides=s["pricing.overrides"])
        self.refresher: PriceRefresher | None = None
        self.pricing_key = os.environ.get(s["pricing.api_key_env"]) or None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.prices_updated = asyncio.Event()  # set after each refresh and backfill (for tests)
        self.ledger = Ledger(
            s["ledger.path"],
            batch_size=s["ledger.batch_size"],
            flush_interval=s["ledger.flush_interval"],
            on_written=self.metrics.ledger_rows.inc,
            on_error=self.metrics.ledger_errors.inc,
        )
        self.metrics.set_queue_depth_source(self.ledger.depth)
        self.keys = KeyHasher(b"")
        self.fingerprints = FingerprintTracker(self.metrics, on_change=self._fingerprint_changed)
        self.deferred = DeferredTracker(self.ledger.submit_op)
        sinks = [
            Sink("deferred", self.deferred.observe),  # first: a repeated result is not priced
            Sink("pricing", self.book.price_record),
            Sink("fingerprints", self.fingerprints.observe),
            Sink("metrics", self.metrics.observe),
        ]
        if s["log.calls"]:
            sinks.append(Sink("log", CallLog()))
        sinks.append(Sink("key_names", self._remember_key_name))
        sinks.append(Sink("ledger", self.ledger.submit, self.ledger.submit_batch))
        self.meter = Meter(
            sinks, on_sink_error=lambda name: self.metrics.sink_errors.labels(name).inc()
        )
        upstreams = [
            Upstream(
                provider="xai",
                base_url=s.upstream_url,
                connect_timeout=s["upstream.connect_timeout"],
                read_timeout=s["upstream.read_timeout"],
                api_key=self.api_key,
            )
        ]
        for name, entry in s["upstreams"].items():
            key_env = entry["api_key_env"]
            key = os.environ.get(key_env) if key_env else None
            if key_env and not key:
                raise ConfigError(
                    f"upstreams.{name}.api_key_env = {key_env!r}, but ${key_env} "
                    f"is not set or empty. Fix: export it, or remove the setting."
                )
            upstreams.append(
                Upstream(
                    provider=entry["provider"],
                    base_url=URL(entry["base_url"]),
                    connect_timeout=s["upstream.connect_timeout"],
                    read_timeout=s["upstream.read_timeout"],
                    api_key=key,
                    prefix=entry["prefix"],
                )
            )
        self._session: aiohttp.ClientSession | None = None
        self.relay = Relay(
            upstreams,
            self.meter,
            self.keys,
            clock=self.clocks.monotonic,
            wall_clock=self.clocks.wall,
        )
        self.metrics.in_flight.set_function(lambda: float(self.relay.in_flight))
        self.ready = False
        self._runners: list[web.AppRunner] = []
        self.relay_url = ""
        self.admin_url = ""

    # --- the two apps ---------------------------------------------------------------------

    def relay_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.cleanup_ctx.append(self._resources)
        app.router.add_route("*", "/{tail:.*}", self.relay.handle)
        return app

    def admin_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def _resources(self, app: web.Application) -> AsyncIterator[None]:
        await self.ledger.open()
        salt = await self.ledger.run_in_writer(lambda: store.ensure_salt(self.ledger.db()))
        self.keys.use_salt(salt)
        for price_set in await self.ledger.run_in_writer(
            lambda: load_price_history(self.ledger.db())
        ):
            self.book.add(price_set)
        seen, current = await self.ledger.run_in_writer(
            lambda: store.load_fingerprints(self.ledger.db())
        )
        self.fingerprints.load(seen, current)
        pending, done = await self.ledger.run_in_writer(
            lambda: store.load_deferred(self.ledger.db(), self.clocks.wall() - 2 * RESULT_TTL)
        )
        self.deferred.load(pending, done)
        self._prices_changed()
        self.ledger.start()
        connector = aiohttp.TCPConnector(
            limit=self.settings["upstream.max_connections"], ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )  # no cookie may pass from one app to another
        app[SESSION_KEY] = self._session
        if self.settings["pricing.refresh"]:
            self.metrics.price_refresh_enabled.set(1)
            self._start_price_refresh(self._session)
        self._spawn(self._expire_deferred())
        if self.settings["ledger.retention_days"]:
            self._spawn(self._retention())
        try:
            yield
        finally:
            self.meter.flush()  # calls that ended in the last loop iteration, before the ledger
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._session.close()
            await self.ledger.close()

    # --- prices ---------------------------------------------------------------------------

    def _start_price_refresh(self, session: aiohttp.ClientSession) -> None:
        s = self.settings
        self.refresher = PriceRefresher(
            self.book,
            session,
            str(s.upstream_url),
            self._listing_key,
            save=lambda ps: self.ledger.run_in_writer(save_price_set, self.ledger.db(), ps),
            on_success=lambda ps: self._spawn(self._after_refresh()),
            on_failure=lambda exc: self.metrics.price_refresh_failures.inc(),
            wait=self.retry_wait,
            clock=self.clocks.wall,
        )
        self._spawn(self._refresh_prices(s["pricing.refresh_interval"]))

    def _listing_key(self) -> str | None:
        if self.pricing_key:
            return self.pricing_key
        return self.relay.last_client_key if self.settings["pricing.use_client_key"] else None

    async def _refresh_prices(self, interval: float) -> None:
        assert self.refresher is not None
        if self._listing_key() is None:
            log.info(
                "prices_waiting_for_key",
                api_key_env=self.settings["pricing.api_key_env"],
                use_client_key=self.settings["pricing.use_client_key"],
            )
            await self.relay.client_key_seen.wait()
        await self.refresher.run(interval)

    async def _after_refresh(self) -> None:
        self.metrics.price_refresh_last_success.set(self.clocks.wall())
        self._prices_changed()
        await self.ledger.drained()  # calls priced-or-not before now are all in the ledger
        priced = await self.ledger.run_in_writer(
            lambda: store.reprice_unpriced(self.ledger.db(), self._price_late)
        )
        for record in priced:
            self.metrics.observe_backfill(record)
        if priced:
            log.info("unpriced_calls_backfilled", calls=len(priced))
        self.prices_updated.set()

    def _price_late(self, record: CallRecord) -> None:
        """An unpriced call: its own time's prices if they know it now, else today's."""
        self.book.price_record(record)
        if record.cost_source == "unpriced":
            self.book.price_record(record, at=self.clocks.wall())

    def _prices_changed(self) -> None:
        models = self.book.models_at()
        self.metrics.set_prices(models)
        self.fingerprints.set_listing(
            {mp.model: mp.fingerprint for mp in models if mp.fingerprint},
            lambda name: p.model if (p := self.book.price_for(name, self.clocks.wall())) else None,
        )

    # --- deferred requests and key names --------------------------------------------------

    async def _expire_deferred(self) -> None:
        while True:
            self.deferred.expire(self.clocks.wall())
            await asyncio.sleep(DEFERRED_EXPIRY_INTERVAL)

    async def _retention(self) -> None:
        await asyncio.sleep(RETENTION_FIRST_DELAY)  # start-up is not slowed by a big delete
        while True:
            await self.apply_retention()
            await asyncio.sleep(RETENTION_INTERVAL)

    async def apply_retention(self) -> int:
        """Delete calls older than ledger.retention_days; return how many."""
        cutoff = self.clocks.wall() - self.settings["ledger.retention_days"] * 86400.0
        deleted = await self.ledger.run_in_writer(
            lambda: store.delete_calls_before(self.ledger.db(), cutoff)
        )
        if deleted:
            self.metrics.ledger_deleted.inc(deleted)
            log.info(
                "retention_deleted", calls=deleted, days=self.settings["ledger.retention_days"]
            )
        return deleted

    def _remember_key_name(self, record: CallRecord) -> None:
        """GET /v1/api-key told us the key's name and team: keep them against its key id."""
        info, key_id = record.key_info, record.key_id
        if not info or not key_id:
            return
        row = (
            key_id,
            info.get("name"),
            info.get("team_id"),
            info.get("api_key_id"),
            record.started_at,
        )
        self.ledger.submit_op(partial(store.save_key_name, row=row))

    # --- fingerprint changes --------------------------------------------------------------

    def _fingerprint_changed(self, change: FingerprintChange) -> None:
        row = (change.at, change.provider, change.model, change.old, change.new, change.kind)
        self.ledger.submit_op(partial(store.save_fingerprint_change, row=row))
        url = self.settings["alerts.webhook_url"]
        if url and self._session is not None:
            self._spawn(notify_webhook(self._session, url, change, wait=self.retry_wait))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Start a background task and keep a reference until it ends (none is lost to GC)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_failed", error=repr(task.exception()))

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(
            None, generate_latest, self.registry
        )
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready and not self.relay.draining:
            return web.json_response({"status": "ready"})
        return web.json_response(
            {"status": "draining" if self.relay.draining else "starting"}, status=503
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on both ports (port 0 picks a free one; see relay_url/admin_url)."""
        s = self.settings
        relay_runner = web.AppRunner(
            self.relay_app(),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=s["shutdown.grace_period"],
            handler_cancellation=True,
        )
        admin_runner = web.AppRunner(self.admin_app(), handle_signals=False, access_log=None)
        await relay_runner.setup()
        self._runners.append(relay_runner)
        await admin_runner.setup()
        self._runners.append(admin_runner)
        self.relay_url = await _listen(relay_runner, s.relay_host, s.relay_port)
        self.admin_url = await _listen(admin_runner, s.admin_host, s.admin_port)
        self.ready = True
        # Everything made so far (modules, settings, prices) lives as long as the process:
        # keep it out of the collector's scans, which otherwise cost every call a little.
        gc.collect()
        gc.freeze()
        # Each call makes a few hundred short-lived objects; collecting every 700 allocations
        # scans far more often than the few cycles they make need.
        gc.set_threshold(GC_THRESHOLD, 20, 20)
        log.info(
            "listening",
            relay=self.relay_url + "/v1",
            admin=self.admin_url,
            upstream=str(s.upstream_url),
            ledger=s["ledger.path"],
        )

    async def stop(self) -> None:
        """Drain calls in flight, flush the ledger, close the listeners."""
        self.relay.draining = True
        log.info("draining", grace_period=self.settings["shutdown.grace_period"])
        for runner in self._runners:  # relay first: its cleanup flushes the ledger
            await runner.cleanup()
        self._runners.clear()
        log.info("stopped")
        logs.flush()


async def _listen(runner: web.AppRunner, host: str, port: int) -> str:
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    sock_host, sock_port = runner.addresses[-1][:2]
    shown = f"[{sock_host}]" if ":" in sock_host else sock_host
    return f"http://{shown}:{sock_port}"


async def serve(settings: Settings, api_key: str | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down in order."""
    daemon = Daemon(settings, api_key=api_key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    try:
        await stop.wait()
    finally:
        await daemon.stop()
