"""The composition root: builds the daemon's parts, its listeners, and their lifecycle.

The relay listener is aiohttp's low-level `web.Server`: the relay routes every path itself
(`daemon.upstream.UpstreamRoutes`), so an `Application`'s router, middleware chain and
response signals would only add cost to every call. `start` opens the resources (the ledger, the
one keep-alive `ClientSession`) before listening, and `stop` closes them only after every call in
flight has ended, so a call cut short by shutdown is still written before exit. What runs per
finished call is `default_sinks`; what runs in the background is `daemon.background`.

The listeners: the HTTP relay, the gRPC relay (`daemon.grpc_relay`, unless ``grpc.port`` is 0)
and the admin listener. Both relays feed the one meter, so their calls share the sinks.

Shutdown order (SIGTERM or SIGINT; `daemon.lifecycle` keeps its one clock): readiness turns
false; both relays stop accepting; calls in flight on either get `shutdown.grace_period` seconds
(the same seconds, side by side; a second signal ends them at once), then are cut (each still
recorded, as `shutdown`); the session and the gRPC channel close; the ledger writes everything
queued; the admin listener closes. All within the grace period + `lifecycle.STOP_MARGIN`.

Why it is long: it is the composition root. Every part is built here and the order of start and
stop is one sequence across all of them (listeners, resources, drain, ledger); split, that
order would be spread over modules that each see half of it.
"""

from __future__ import annotations

import asyncio
import gc
import os
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

from daemon import lifecycle, logs, salt
from daemon.background import PriceUpkeep, Retention, expire_deferred
from daemon.config import ConfigError, Settings
from daemon.connections import MAX_REQUEST_BYTES, RelayServer, relay_limits
from daemon.grpc_relay import GrpcRelay
from daemon.keys import KNOWN_KEYS, KeyHasher
from daemon.ledger import Ledger, store
from daemon.ledger.engine import instance_name
from daemon.ledger.prices import load_price_history
from daemon.logs import CallLog
from daemon.management.client import ManagementClient
from daemon.management.reconcile import DailyReconciliation
from daemon.management.refresh import (
    ManagementRefresher,
    ledger_names,
    ledger_save,
    lookup_api_key,
    management_key,
)
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
from daemon.status import StatusPage
from daemon.tasks import TaskGroup, spawn
from daemon.upstream import PoolConnector, Upstream

log = structlog.get_logger("xai_meter.app")

GC_THRESHOLD = 20_000


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
            url=s.ledger.url or None,
            instance=instance_name(s.ledger.instance),
            journal_path=s.ledger.journal_path or None,
            batch_size=s.ledger.batch_size,
            flush_interval=s.ledger.flush_interval,
            max_queue_rows=s.ledger.max_queue_rows,
            fsync_interval=s.ledger.fsync_interval,
            on_written=self.metrics.ledger_rows.inc,
            on_error=self.metrics.ledger_errors.inc,
            retry_wait=self.retry_wait,
        )
        self.metrics.set_ledger_sources(self.ledger.depth, lambda: self.ledger.healthy)
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
            on_begin=self.ledger.begin,
            on_void=self.ledger.void,
            unstarted=self.ledger.unstarted,
        )
        self._session: aiohttp.ClientSession | None = None
        # The relay port's limits (daemon.connections); the file limit is read now, at start.
        rejected = self.metrics.relay_rejected
        self.guard, bodies = relay_limits(s, lambda reason: rejected.inc((reason,)))
        self.relay = Relay(
            upstreams_of(s, self.api_key),
            self.meter,
            self.keys,
            clock=self.clocks.monotonic,
            wall_clock=self.clocks.wall,
            bodies=bodies,
        )
        guard = self.guard
        guard.also_open = lambda: self.relay.sockets_open
        self.metrics.watch_relay_limits(
            lambda: guard.open, guard.max_connections, lambda: bodies.held
        )
        self.relay.max_scan_bytes = s.relay.max_scan_bytes
        missing_v1 = self.metrics.missing_v1
        self.relay.missing_v1.count = lambda endpoint: missing_v1.labels(endpoint).inc()
        doubled_v1 = self.metrics.doubled_v1
        self.relay.missing_v1.count_doubled = lambda endpoint: doubled_v1.labels(endpoint).inc()
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
        # The Management and Billing API: only with a management key (masked everywhere).
        self._management_key = management_key(s)
        KNOWN_KEYS.pin(self._management_key)
        self.management: ManagementRefresher | None = None
        self.retention = Retention(
            self.ledger, self.metrics, s.ledger.retention_days, self.clocks.wall
        )
        self.ready = False
        self._runners: list[web.BaseRunner] = []
        self._resources_open = AsyncExitStack()
        self.relay_url = ""
        self.admin_url = ""
        self.grpc_address = ""  # host:port of the gRPC listener; "" when off
        self.shutdown = lifecycle.Shutdown()  # the clock of the shutdown (`stop`)
        self._stopping: asyncio.Task[None] | None = None

    # --- the two apps ---------------------------------------------------------------------

    def relay_server(self) -> web.Server:
        """The relay's listener: every request goes to `Relay.handle`, which routes it; its
        connections are counted by the guard (`daemon.connections`)."""
        return RelayServer(
            self.guard,
            self.relay.handle,
            request_factory=self._relay_request,
            handler_cancellation=True,  # a client that leaves cancels its call (then recorded)
            access_log=None,  # the call log line is the access log
            keepalive_timeout=self.settings.relay.idle_timeout,
            auto_decompress=False,  # a coded request body goes upstream as the client sent it
        )

    def _relay_request(
        self,
        message: Any,
        payload: Any,
        protocol: Any,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # As aiohttp's own factory, with room for bodies up to xAI's limit and beyond (the
        # relay reads bodies itself, within its limits: daemon.connections.BodyLimits).
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
        StatusPage(self, started_at=self.clocks.wall()).add_routes(app)  # GET /, /api/*
        return app

    @asynccontextmanager
    async def _resources(self) -> AsyncIterator[None]:
        await self.ledger.open()  # first: a ledger.path that cannot be is the likelier mistake
        salt_path = salt.salt_file(self.settings)
        salt.check_salt_file(salt_path)  # a bad salt file stops the start (the ledger closes)
        db = self.ledger.db
        key_salt = await self.ledger.run_in_writer(salt.settle_salt, salt_path, db())
        if self.ledger.url:  # daemons sharing a ledger share the salt: refuse another one
            await self.ledger.run_in_writer(salt.check_fleet_salt, salt_path, key_salt, db())
        self.keys.use_salt(key_salt)
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
        # A call that waits for a free connection in the full pool is told apart (503)
        connector = PoolConnector(limit=self.settings.upstream.max_connections, ttl_dns_cache=300)
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
        if self._management_key:
            self.management = self._management(self._session, self._management_key)
            self.tasks.spawn(self.management.run(), name="management-refresh")
        if self.settings.ledger.retention_days:
            self.tasks.spawn(self.retention.run(), name="retention")
        try:
            yield
        finally:  # every call has ended (`stop`): what they left goes to the ledger
            self.meter.flush()  # calls that ended in the last loop iteration, before the ledger
            await self.tasks.cancel()
            await self._session.close()
            # What SQLite cannot take by then stays in the journal for the next start.
            await self.ledger.close(timeout=self.shutdown.left())

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

    def _management(self, session: aiohttp.ClientSession, key: str) -> ManagementRefresher:
        """The refresher of keys, limits and bill (`daemon.management.refresh`)."""
        m = self.settings.management
        client = ManagementClient(session, m.base_url, key, m.team_id, retry_wait=self.retry_wait)
        upstream = self.settings.upstream.base_url
        return ManagementRefresher(
            client,
            self.metrics,
            interval=m.refresh_interval,
            lookup=lambda api_key: lookup_api_key(session, upstream, api_key),
            names=ledger_names(self.ledger.run_in_writer, self.ledger.db),
            save=ledger_save(self.ledger.submit_op),
            wall=self.clocks.wall,
            reconciliation=DailyReconciliation(
                self.ledger,
                self.metrics.reconciliation,
                hour_utc=m.reconcile_hour_utc,
                days=m.reconcile_days,
                wall=self.clocks.wall,
            ),
        )

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
        if not self.ledger.url:
            self.ledger.submit_op(partial(store.save_fingerprint_change, row=row))
            self._notify(change)
            return
        # A shared ledger: of the daemons that see this change, the one whose write records it
        # sends the webhook (the others find it recorded). Told from the writer thread.
        loop = asyncio.get_running_loop()

        def record(db: Any) -> None:
            if store.save_fingerprint_change(db, row):
                loop.call_soon_threadsafe(self._notify, change)

        self.ledger.submit_op(record)

    def _notify(self, change: FingerprintChange) -> None:
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
        """200 ready; 503 while starting or draining, and degraded once the ledger has been
        unable to write for ``ledger.unhealthy_after`` seconds (calls are still relayed, and
        their rows wait in the journal)."""
        if not self.ready or self.relay.draining:
            return web.json_response(
                {"status": "draining" if self.relay.draining else "starting"}, status=503
            )
        failing = self.ledger.unhealthy_for()
        if self.ledger.journal.failing or (
            failing and failing >= self.settings.ledger.unhealthy_after
        ):
            return web.json_response(
                {
                    "status": "degraded",
                    "reason": "the ledger cannot write"
                    + (" (nor the journal)" if self.ledger.journal.failing else ""),
                    "failing_for_s": round(failing, 3),
                    "rows_waiting": self.ledger.depth(),
                },
                status=503,
            )
        return web.json_response({"status": "ready"})

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the ledger and the session, then listen on every port (port 0 picks a free one;
        see relay_url/admin_url). Raises `ConfigError` naming the setting and the fix when the
        ledger cannot be opened or an address cannot be had, having closed whatever it opened."""
        s = self.settings
        await lifecycle.open_resources(self._resources_open, self._resources(), self.ledger)
        # aiohttp's own wait for calls, a backstop only: `stop` cuts them at the grace period's
        # end itself (the same instant would race aiohttp's timer with the handler's end).
        relay_runner = web.ServerRunner(
            self.relay_server(),
            handle_signals=False,
            shutdown_timeout=s.shutdown.grace_period + lifecycle.STOP_MARGIN,
        )
        admin_runner = web.AppRunner(self.admin_app(), handle_signals=False, access_log=None)
        await relay_runner.setup()
        self._runners.append(relay_runner)
        await admin_runner.setup()
        self._runners.append(admin_runner)
        try:
            # HTTP/2 spoken to this port (a gRPC client) gets one plain line naming the gRPC one
            sniffing = SniffingSite(
                relay_runner, s.relay.host, s.relay.port, self._grpc_hint, self.guard
            )
            self.relay_url = await _listen(
                relay_runner, "relay", s.relay.host, s.relay.port, sniffing
            )
            self.admin_url = await _listen(admin_runner, "admin", s.admin.host, s.admin.port)
            if self.grpc is not None:
                self.grpc_address = await _listen_grpc(
                    self.grpc, s.grpc.host, 0 if self.grpc_any_port else s.grpc.port
                )
        except BaseException:
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
            ledger=self.ledger.where,
        )

    async def stop(self) -> None:
        """Shut down in order (the module docstring) within ``shutdown.grace_period`` +
        `lifecycle.STOP_MARGIN` seconds; calls cut are recorded ``shutdown``. Safe to call again
        (a second call waits for the first)."""
        if self._stopping is None:
            self._stopping = spawn(self._stop(), name="stop")
        await asyncio.shield(self._stopping)

    def cut_short(self) -> None:
        """End the grace period now (a second SIGTERM or SIGINT): calls still in flight are cut
        at once, each recorded ``shutdown``; the rest of the shutdown runs as ever."""
        if self._stopping is not None and not self.shutdown.is_cut:
            log.info("cut_short", in_flight=int(self._in_flight()))
        self.shutdown.cut()

    async def _stop(self) -> None:
        grace = self.settings.shutdown.grace_period
        started, self.ready = self.ready, False
        self.relay.drain(grace)  # /readyz: draining; sockets close; cut calls are `shutdown`
        if started:
            log.info("draining", grace_period=grace)
        runners, self._runners = self._runners, []
        await lifecycle.drain(self.shutdown, grace, runners[0] if runners else None, self.grpc)
        await self._resources_open.aclose()  # then write what they left, and close the ledger
        for runner in runners[1:]:  # the admin listener, last: /readyz said draining until now
            await lifecycle.close_runner(runner, self.shutdown.left())
        if started:
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
            f"({lifecycle.listen_reason(exc)}). Fix: stop what uses that port, or choose another "
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
            f"grpc.host = {host!r}, grpc.port = {port}: cannot listen there "
            f"({lifecycle.listen_reason(exc)}). Fix: stop what uses that port, or choose another "
            f"(--grpc-port N, or 0 for no gRPC listener)."
        ) from None


def _one_host(settings: Settings) -> bool:
    """The gRPC and REST upstreams are one host (api.x.ai both): a key sent to one is meant
    for the other, so pricing may fetch the REST listings with a gRPC client's key."""
    return URL(settings.grpc.upstream).host == settings.upstream.url.host
