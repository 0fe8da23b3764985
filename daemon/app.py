"""The composition root: builds the daemon's parts, its listeners, and their lifecycle.

The relay listener is aiohttp's low-level `web.Server`: the relay routes every path itself
(`daemon.upstream.UpstreamRoutes`), so an `Application`'s router, middleware chain and
response signals would only add cost to every call. `start` opens the resources (the ledger, the
one keep-alive `ClientSession`) before listening, and `stop` closes them only after every call in
flight has ended, so a call cut short by shutdown is still written before exit. What runs per
finished call is `default_sinks`; what runs in the background is `daemon.background`.

The listeners: the HTTP relay, the gRPC relay (`daemon.grpc_relay`, unless ``grpc.port`` is 0)
and the admin listener. Both relays feed the one meter, so their calls share the sinks.

Shutdown order (SIGTERM or SIGINT): readiness turns false; both relays stop accepting; calls in
flight on either get `shutdown.grace_period` seconds (the same seconds, side by side), then are
cancelled (each still recorded, as `shutdown`); the session and the gRPC channel close; the
ledger writes everything queued; the admin listener closes.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from yarl import URL

from daemon import logs
from daemon.background import PriceUpkeep, Retention, expire_deferred
from daemon.config import ConfigError, Settings
from daemon.grpc_relay import GrpcRelay
from daemon.keys import KeyHasher
from daemon.ledger import Ledger, store
from daemon.ledger.prices import load_price_history
from daemon.logs import CallLog
from daemon.meter import Meter, Sink
from daemon.meter.batches import BatchResults
from daemon.meter.deferred import RESULT_TTL, DeferredTracker
from daemon.meter.fingerprints import FingerprintChange, FingerprintTracker
from daemon.meter.webhook import notify_webhook
from daemon.metrics import Metrics
from daemon.pricing import PriceBook
from daemon.pricing.cost import exact_multiplier
from daemon.record import CallRecord
from daemon.relay import Relay
from daemon.sniff import SniffingSite
from daemon.tasks import TaskGroup, spawn
from daemon.upstream import Upstream

log = structlog.get_logger("xai_meter.app")

GC_THRESHOLD = 20_000
MAX_REQUEST_BYTES = 100 * 1024 * 1024  # above xAI's own 50 MB limit, so the upstream answers 413


def default_sinks(
    *,
    deferred: DeferredTracker,
    book: PriceBook,
    fingerprints: FingerprintTracker,
    metrics: Metrics,
    ledger: Ledger,
    call_log: bool,
    key_names: Callable[[CallRecord], None],
) -> list[Sink]:
    """What runs for every finished call, in this order (the one list that says so).

    Enrichers first: `deferred` before `pricing`, so a deferred result seen twice is never
    priced twice. Then read-only subscribers; the ledger last, so every other sink has run.
    """
    sinks = [
        Sink("deferred", deferred.observe, enriches=True),
        Sink("pricing", book.price_record, enriches=True),
        Sink("fingerprints", fingerprints.observe),
        Sink("metrics", metrics.observe),
    ]
    if call_log:
        sinks.append(Sink("log", CallLog()))
    sinks.append(Sink("key_names", key_names))
    sinks.append(Sink("ledger", ledger.submit, ledger.submit_batch))
    return sinks


def upstreams_of(settings: Settings, api_key: str | None) -> list[Upstream]:
    """The default upstream (xAI, at /v1/) and each ``[upstreams.NAME]`` under its prefix.

    Raises `ConfigError` when an upstream names a key variable that is not set.
    """
    up = settings.upstream
    upstreams = [
        Upstream(
            provider="xai",
            base_url=up.url,
            connect_timeout=up.connect_timeout,
            read_timeout=up.read_timeout,
            api_key=api_key,
            price_multiplier=exact_multiplier(up.price_multiplier),
        )
    ]
    for name, entry in settings.upstreams.items():
        key_env = entry.api_key_env
        key = os.environ.get(key_env) if key_env else None
        if key_env and not key:
            raise ConfigError(
                f"upstreams.{name}.api_key_env = {key_env!r}, but ${key_env} "
                f"is not set or empty. Fix: export it, or remove the setting."
            )
        upstreams.append(
            Upstream(
                provider=entry.provider,
                base_url=URL(entry.base_url),
                connect_timeout=up.connect_timeout,
                read_timeout=up.read_timeout,
                api_key=key,
                prefix=entry.prefix,
                price_multiplier=exact_multiplier(entry.price_multiplier),
            )
        )
    return upstreams


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
    # Tests: listen for gRPC on a port the OS picks, whatever grpc.port says (0 there means off).
    grpc_any_port: bool = False

    def __post_init__(self) -> None:
        s = self.settings
        self.metrics = Metrics(
            self.registry,
            max_models=s.metrics.max_models,
            apps=s.metrics.apps,
            max_apps=s.metrics.max_apps,
            max_keys=s.metrics.max_keys,
        )
        self.tasks = TaskGroup()
        self.book = PriceBook(overrides=s.pricing.overrides)
        self.ledger = Ledger(
            s.ledger.path,
            batch_size=s.ledger.batch_size,
            flush_interval=s.ledger.flush_interval,
            on_written=self.metrics.ledger_rows.inc,
            on_error=self.metrics.ledger_errors.inc,
        )
        self.metrics.set_queue_depth_source(self.ledger.depth)
        self.keys = KeyHasher(b"")
        self.fingerprints = FingerprintTracker(self.metrics, on_change=self._fingerprint_changed)
        self.deferred = DeferredTracker(self.ledger.submit_op)
        sinks = default_sinks(
            deferred=self.deferred,
            book=self.book,
            fingerprints=self.fingerprints,
            metrics=self.metrics,
            ledger=self.ledger,
            call_log=s.log.calls,
            key_names=self._remember_key_name,
        )
        self.batch_results = BatchResults()  # the meter's gate for batch results (derived rows)
        self.meter = Meter(
            sinks,
            on_sink_error=lambda name: self.metrics.sink_errors.labels(name).inc(),
            admit=self.batch_results.admit,
        )
        self._session: aiohttp.ClientSession | None = None
        self.relay = Relay(
            upstreams_of(s, self.api_key),
            self.meter,
            self.keys,
            clock=self.clocks.monotonic,
            wall_clock=self.clocks.wall,
        )
        self.relay.max_scan_bytes = s.relay.max_scan_bytes
        self.grpc: GrpcRelay | None = None
        if s.grpc.port or self.grpc_any_port:
            self.grpc = GrpcRelay(
                s.grpc,
                self.meter,
                self.keys,
                share_key=self._grpc_key if _one_host(s) else None,
                rest=lambda: self.relay_url + "/v1",
                clock=self.clocks.monotonic,
                wall_clock=self.clocks.wall,
            )
        self.metrics.in_flight.set_function(self._in_flight)
        self.prices = PriceUpkeep(
            settings=s.pricing,
            pricing_key=os.environ.get(s.pricing.api_key_env) or None,
            book=self.book,
            ledger=self.ledger,
            metrics=self.metrics,
            fingerprints=self.fingerprints,
            relay=self.relay,
            tasks=self.tasks,
            wall=self.clocks.wall,
            retry_wait=self.retry_wait,
        )
        self.retention = Retention(
            self.ledger, self.metrics, s.ledger.retention_days, self.clocks.wall
        )
        self.ready = False
        self._runners: list[web.BaseRunner] = []
        self._resources_open = AsyncExitStack()
        self.relay_url = ""
        self.admin_url = ""
        self.grpc_address = ""  # host:port of the gRPC listener; "" when off

    # --- the two apps ---------------------------------------------------------------------

    def relay_server(self) -> web.Server:
        """The relay's listener: every request goes to `Relay.handle`, which routes it."""
        return web.Server(
            self.relay.handle,
            request_factory=self._relay_request,
            handler_cancellation=True,  # a client that leaves cancels its call (then recorded)
            access_log=None,  # the call log line is the access log
        )

    def _relay_request(
        self,
        message: Any,
        payload: Any,
        protocol: Any,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # As aiohttp's own factory, with room for bodies up to xAI's limit and beyond.
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=MAX_REQUEST_BYTES,
        )

    def admin_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    @asynccontextmanager
    async def _resources(self) -> AsyncIterator[None]:
        await self.ledger.open()
        db = self.ledger.db
        self.keys.use_salt(await self.ledger.run_in_writer(lambda: store.ensure_salt(db())))
        for price_set in await self.ledger.run_in_writer(lambda: load_price_history(db())):
            self.book.add(price_set)
        seen, current = await self.ledger.run_in_writer(lambda: store.load_fingerprints(db()))
        self.fingerprints.load(seen, current)
        since = self.clocks.wall() - 2 * RESULT_TTL
        pending, done = await self.ledger.run_in_writer(lambda: store.load_deferred(db(), since))
        self.deferred.load(pending, done)
        self.batch_results.load(
            await self.ledger.run_in_writer(lambda: store.load_batch_results(db()))
        )
        self.prices.prices_changed()
        self.ledger.start()
        connector = aiohttp.TCPConnector(
            limit=self.settings.upstream.max_connections, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # no cookie may pass from one app to another
        )
        self.relay.session = self._session
        if self.settings.pricing.refresh:
            self.prices.start(self._session, self.settings.upstream.base_url)
        self.tasks.spawn(expire_deferred(self.deferred, self.clocks.wall), name="deferred-expiry")
        if self.settings.ledger.retention_days:
            self.tasks.spawn(self.retention.run(), name="retention")
        try:
            yield
        finally:
            if self.grpc is not None:  # its calls drain beside HTTP's; all end before the ledger
                await self.grpc.stop(self.settings.shutdown.grace_period)
            self.meter.flush()  # calls that ended in the last loop iteration, before the ledger
            await self.tasks.cancel()
            await self._session.close()
            await self.ledger.close()

    def _grpc_hint(self) -> str:
        if self.grpc_address:
            return f"the gRPC listener at {self.grpc_address} (api_host={self.grpc_address!r})"
        return "the gRPC listener, which is off here (set grpc.port, or --grpc-port N)"

    def _in_flight(self) -> float:
        return float(self.relay.in_flight + (self.grpc.in_flight if self.grpc else 0))

    def _grpc_key(self, key: str) -> None:
        """A key a gRPC client sent, for pricing's listing fetches (the REST upstream is the
        same host), as the HTTP relay keeps its own: in memory only."""
        self.relay.last_client_key = key
        self.relay.client_key_seen.set()

    # --- sinks and events that write beside the calls -------------------------------------

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

    def _fingerprint_changed(self, change: FingerprintChange) -> None:
        row = (change.at, change.provider, change.model, change.old, change.new, change.kind)
        self.ledger.submit_op(partial(store.save_fingerprint_change, row=row))
        url = self.settings.alerts.webhook_url
        if url and self._session is not None:
            self.tasks.spawn(notify_webhook(self._session, url, change, wait=self.retry_wait))

    # --- the admin listener ---------------------------------------------------------------

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
        await self._resources_open.enter_async_context(self._resources())
        relay_runner = web.ServerRunner(
            self.relay_server(), handle_signals=False, shutdown_timeout=s.shutdown.grace_period
        )
        admin_runner = web.AppRunner(self.admin_app(), handle_signals=False, access_log=None)
        await relay_runner.setup()
        self._runners.append(relay_runner)
        await admin_runner.setup()
        self._runners.append(admin_runner)
        try:
            # HTTP/2 spoken to this port (a gRPC client) gets one plain line naming the gRPC one
            sniffing = SniffingSite(relay_runner, s.relay.host, s.relay.port, self._grpc_hint)
            self.relay_url = await _listen(
                relay_runner, "relay", s.relay.host, s.relay.port, sniffing
            )
            self.admin_url = await _listen(admin_runner, "admin", s.admin.host, s.admin.port)
            if self.grpc is not None:
                self.grpc_address = await _listen_grpc(
                    self.grpc, s.grpc.host, 0 if self.grpc_any_port else s.grpc.port
                )
        except ConfigError:
            await self.stop()  # the ledger and the session opened already: close them in order
            raise
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
            grpc=self.grpc_address or None,
            upstream=s.upstream.base_url,
            grpc_upstream=s.grpc.upstream if self.grpc else None,
            ledger=s.ledger.path,
        )

    async def stop(self) -> None:
        """Drain calls in flight, flush the ledger, close the listeners."""
        grace = self.settings.shutdown.grace_period
        self.relay.drain(grace)
        log.info("draining", grace_period=grace)
        if self.grpc is not None:
            # Drains beside the HTTP relay; closing the resources awaits it before the ledger.
            spawn(self.grpc.stop(grace), name="grpc-drain")
        runners, self._runners = self._runners, []
        if runners:  # the relay: stop listening, let calls in flight end (or cancel them)
            await runners[0].cleanup()
        await self._resources_open.aclose()  # then write what they left, and close the ledger
        for runner in runners[1:]:
            await runner.cleanup()
        log.info("stopped")
        logs.flush()


async def _listen(
    runner: web.BaseRunner, section: str, host: str, port: int, site: web.BaseSite | None = None
) -> str:
    """Listen on host:port (through `site` when given); the URL it answers on. Raises
    `ConfigError` naming the setting when the address cannot be had (in use, not an address of
    this machine, not allowed)."""
    site = site or web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        flag = "--port" if section == "relay" else "--admin-port"
        raise ConfigError(
            f"{section}.host = {host!r}, {section}.port = {port}: cannot listen there "
            f"({exc.strerror or exc}). Fix: stop what uses that port, or choose another "
            f"({flag} N, or 0 for any free port)."
        ) from None
    sock_host, sock_port = runner.addresses[-1][:2]
    shown = f"[{sock_host}]" if ":" in sock_host else sock_host
    return f"http://{shown}:{sock_port}"


async def _listen_grpc(grpc_relay: GrpcRelay, host: str, port: int) -> str:
    """Listen for gRPC on host:port; the address it answers on. Raises `ConfigError` naming
    the setting when the address cannot be had."""
    try:
        return await grpc_relay.start(host, port)
    except OSError as exc:
        raise ConfigError(
            f"grpc.host = {host!r}, grpc.port = {port}: cannot listen there ({exc}). Fix: stop "
            f"what uses that port, or choose another (--grpc-port N, or 0 for no gRPC listener)."
        ) from None


def _one_host(settings: Settings) -> bool:
    """The gRPC and REST upstreams are one host (api.x.ai both): a key sent to one is meant
    for the other, so pricing may fetch the REST listings with a gRPC client's key."""
    return URL(settings.grpc.upstream).host == settings.upstream.url.host


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
