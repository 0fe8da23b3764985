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
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from daemon.config import Settings
from daemon.keys import KeyHasher
from daemon.ledger import Ledger, ensure_salt
from daemon.logs import CallLog
from daemon.meter import Meter, Sink
from daemon.metrics import Metrics
from daemon.relay import Relay, Upstream

log = structlog.get_logger("xai_meter.app")

MAX_REQUEST_BYTES = 100 * 1024 * 1024  # above xAI's own 50 MB limit, so the upstream answers 413

DAEMON_KEY: web.AppKey[Daemon] = web.AppKey("daemon")
SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)


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

    def __post_init__(self) -> None:
        s = self.settings
        self.metrics = Metrics(self.registry, max_models=s["metrics.max_models"])
        self.ledger = Ledger(s["ledger.path"], batch_size=s["ledger.batch_size"],
                             on_written=self.metrics.ledger_rows.inc,
                             on_error=self.metrics.ledger_errors.inc)
        self.metrics.set_queue_depth_source(self.ledger.depth)
        self.keys = KeyHasher(b"")
        sinks = [Sink("metrics", self.metrics.observe)]
        if s["log.calls"]:
            sinks.append(Sink("log", CallLog()))
        sinks.append(Sink("ledger", self.ledger.submit))
        self.meter = Meter(sinks, on_sink_error=lambda name: self.metrics.sink_errors.labels(
            name).inc())
        upstream = Upstream(provider="xai", base_url=s.upstream_url,
                            connect_timeout=s["upstream.connect_timeout"],
                            read_timeout=s["upstream.read_timeout"], api_key=self.api_key)
        self._session: aiohttp.ClientSession | None = None
        self.relay = Relay(upstream, self.meter, self.keys, self.session,
                           clock=self.clocks.monotonic, wall_clock=self.clocks.wall,
                           on_start=self.metrics.in_flight.inc, on_end=self.metrics.in_flight.dec)
        self.ready = False
        self._runners: list[web.AppRunner] = []
        self.relay_url = ""
        self.admin_url = ""

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the relay's upstream session is not open")
        return self._session

    # --- the two apps ---------------------------------------------------------------------

    def relay_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app[DAEMON_KEY] = self
        app.cleanup_ctx.append(self._resources)
        app.router.add_route("*", "/{tail:.*}", self.relay.handle)
        return app

    def admin_app(self) -> web.Application:
        app = web.Application()
        app[DAEMON_KEY] = self
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def _resources(self, app: web.Application) -> AsyncIterator[None]:
        await self.ledger.open()
        salt = await self.ledger.run_in_writer(lambda: ensure_salt(self.ledger.db()))
        self.keys.use_salt(salt)
        self.ledger.start()
        connector = aiohttp.TCPConnector(limit=self.settings["upstream.max_connections"],
                                         ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar())  # no cookie may pass from one app to another
        app[SESSION_KEY] = self._session
        try:
            yield
        finally:
            await self._session.close()
            await self.ledger.close()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(
            None, generate_latest, self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready and not self.relay.draining:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "draining" if self.relay.draining
                                  else "starting"}, status=503)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on both ports (port 0 picks a free one; see relay_url/admin_url)."""
        s = self.settings
        relay_runner = web.AppRunner(self.relay_app(), handle_signals=False, access_log=None,
                                     shutdown_timeout=s["shutdown.grace_period"],
                                     handler_cancellation=True)
        admin_runner = web.AppRunner(self.admin_app(), handle_signals=False, access_log=None)
        await relay_runner.setup()
        self._runners.append(relay_runner)
        await admin_runner.setup()
        self._runners.append(admin_runner)
        self.relay_url = await _listen(relay_runner, s.relay_host, s.relay_port)
        self.admin_url = await _listen(admin_runner, s.admin_host, s.admin_port)
        self.ready = True
        log.info("listening", relay=self.relay_url + "/v1", admin=self.admin_url,
                 upstream=str(s.upstream_url), ledger=s["ledger.path"])

    async def stop(self) -> None:
        """Drain calls in flight, flush the ledger, close the listeners."""
        self.relay.draining = True
        log.info("draining", grace_period=self.settings["shutdown.grace_period"])
        for runner in self._runners:  # relay first: its cleanup flushes the ledger
            await runner.cleanup()
        self._runners.clear()
        log.info("stopped")


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
