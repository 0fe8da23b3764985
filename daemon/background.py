"""The daemon's background work, off the hot path: prices, deferred expiry, retention.

- `PriceUpkeep`: refresh the price listings (waiting for a key when there is none yet), then
  tell metrics and the fingerprint watch what the listing says, and price the calls that had
  no price when they were made (backfill, in the ledger's writer thread, `BACKFILL_CHUNK`
  calls per turn so the rows of new calls are written in between; a backfill of more than one
  chunk logs its start and, every `BACKFILL_LOG_ROWS` calls or `BACKFILL_LOG_SECONDS`, its
  progress: `BackfillProgress`).
- `expire_deferred`: every 10 minutes, close deferred requests whose result can no longer come.
- `Retention`: hourly, delete calls older than ``ledger.retention_days``.

None of these may slow a call: each awaits only the ledger's writer thread or the upstream's
listing endpoints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import structlog

from daemon.config import PricingSettings
from daemon.keys import KNOWN_KEYS
from daemon.ledger import Ledger, store
from daemon.ledger.prices import save_price_set
from daemon.meter.deferred import DeferredTracker
from daemon.meter.fingerprints import FingerprintTracker
from daemon.metrics import Metrics
from daemon.pricing import PriceBook, PriceRefresher
from daemon.record import CallRecord, CostSource
from daemon.relay import Relay
from daemon.tasks import TaskGroup

log = structlog.get_logger("xai_meter.app")

RETENTION_INTERVAL = 3600.0  # seconds between retention sweeps
RETENTION_FIRST_DELAY = 60.0  # start-up is not slowed by a big delete
DEFERRED_EXPIRY_INTERVAL = 600.0  # seconds between sweeps for deferred requests past 24 h
BACKFILL_CHUNK = 5_000  # calls priced per turn of the writer thread (new rows go in between)
BACKFILL_LOG_ROWS = 100_000  # a progress line at least every this many calls...
BACKFILL_LOG_SECONDS = 10.0  # ...or this many seconds, whichever comes first


class BackfillProgress:
    """The log lines of one backfill of `total` calls, priced `chunk` at a time: nothing for a
    backfill of one chunk or less; else ``unpriced_backfill_started`` (calls, chunk) at once,
    then ``unpriced_backfill_progress`` (done, total, percent) after a chunk once `every_rows`
    calls or `every_seconds` (by `clock`, monotonic seconds) have passed since the last line.
    The end is the caller's ``unpriced_calls_backfilled`` line. The daemon's stderr is a log
    stream, so progress is lines, not a terminal's rewritten line (`daemon.progress`)."""

    def __init__(
        self,
        total: int,
        *,
        chunk: int,
        every_rows: int,
        every_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.total = total
        self.big = total > chunk
        self.every_rows = every_rows
        self.every_seconds = every_seconds
        self.clock = clock
        self._rows = 0
        self._at = clock()
        if self.big:
            log.info("unpriced_backfill_started", calls=total, chunk=chunk)

    def step(self, done: int) -> None:
        """`done` of `total` calls are priced (or found unpriceable) so far."""
        if not self.big or done >= self.total:
            return
        now = self.clock()
        if done - self._rows >= self.every_rows or now - self._at >= self.every_seconds:
            log.info(
                "unpriced_backfill_progress",
                done=done,
                total=self.total,
                percent=done * 100 // self.total,
            )
            self._rows, self._at = done, now


class PriceUpkeep:
    """Keeps the price book current and every call priced. `updated` is set after each
    refresh and its backfill (tests await it)."""

    def __init__(
        self,
        *,
        settings: PricingSettings,
        pricing_key: str | None,
        book: PriceBook,
        ledger: Ledger,
        metrics: Metrics,
        fingerprints: FingerprintTracker,
        relay: Relay,
        tasks: TaskGroup,
        wall: Callable[[], float],
        retry_wait: Any = None,
    ) -> None:
        self.settings = settings
        self.pricing_key = pricing_key
        KNOWN_KEYS.pin(pricing_key)  # an upstream may echo it in a listing error we log
        self.book = book
        self.ledger = ledger
        self.metrics = metrics
        self.fingerprints = fingerprints
        self.relay = relay
        self.tasks = tasks
        self.wall = wall
        self.retry_wait = retry_wait
        self.refresher: PriceRefresher | None = None
        self.updated = asyncio.Event()
        # the backfill's pace and its progress lines (tests make them small, the clock fake)
        self.backfill_chunk = BACKFILL_CHUNK
        self.backfill_log_rows = BACKFILL_LOG_ROWS
        self.backfill_log_seconds = BACKFILL_LOG_SECONDS
        self.monotonic: Callable[[], float] = time.monotonic

    def start(self, session: aiohttp.ClientSession, base_url: str) -> None:
        """Fetch the listings now and every ``pricing.refresh_interval`` seconds."""
        self.metrics.price_refresh_enabled.set(1)
        self.refresher = PriceRefresher(
            self.book,
            session,
            base_url,
            self.listing_key,
            save=lambda ps: self.ledger.run_in_writer(save_price_set, self.ledger.db(), ps),
            on_success=lambda ps: self.tasks.spawn(self._after_refresh()),
            on_failure=lambda exc: self.metrics.price_refresh_failures.inc(),
            wait=self.retry_wait,
            clock=self.wall,
        )
        self.tasks.spawn(self._refresh(self.refresher), name="price-refresh")

    def listing_key(self) -> str | None:
        """The key to fetch listings with: ``pricing.api_key_env``'s, else (when allowed) the
        key of the most recent relayed call, held in memory only."""
        if self.pricing_key:
            return self.pricing_key
        return self.relay.last_client_key if self.settings.use_client_key else None

    async def _refresh(self, refresher: PriceRefresher) -> None:
        if self.listing_key() is None:
            log.info(
                "prices_waiting_for_key",
                api_key_env=self.settings.api_key_env,
                use_client_key=self.settings.use_client_key,
            )
            await self.relay.client_key_seen.wait()
        await refresher.run(self.settings.refresh_interval)

    async def _after_refresh(self) -> None:
        self.metrics.price_refresh_last_success.set(self.wall())
        self.prices_changed()
        await self.ledger.drained()  # calls priced-or-not before now are all in the ledger
        ids = await self.ledger.run_in_writer(lambda: store.ids_to_price(self.ledger.db()))
        progress = BackfillProgress(
            len(ids),
            chunk=self.backfill_chunk,
            every_rows=self.backfill_log_rows,
            every_seconds=self.backfill_log_seconds,
            clock=self.monotonic,
        )
        priced = 0
        for start in range(0, len(ids), self.backfill_chunk):
            chunk = ids[start : start + self.backfill_chunk]
            records = await self.ledger.run_in_writer(self._reprice, chunk)
            for record in records:
                self.metrics.observe_backfill(record)
            priced += len(records)
            progress.step(start + len(chunk))
        if priced:
            log.info("unpriced_calls_backfilled", calls=priced)
        self.updated.set()

    def _reprice(self, ids: Sequence[str]) -> list[CallRecord]:
        """In the writer thread: price one chunk of the backfill."""
        return store.reprice_calls(self.ledger.db(), ids, self._price_late)

    def _price_late(self, record: CallRecord) -> None:
        """An unpriced call: its own time's prices if they know it now, else today's."""
        self.book.price_record(record)
        if record.cost_source is CostSource.UNPRICED:
            self.book.price_record(record, at=self.wall())

    def prices_changed(self) -> None:
        """Tell metrics and the fingerprint watch what the prices in force now say."""
        models = self.book.models_at()
        self.metrics.set_prices(models)
        self.fingerprints.set_listing(
            {mp.model: mp.fingerprint for mp in models if mp.fingerprint},
            lambda name: p.model if (p := self.book.price_for(name, self.wall())) else None,
        )


async def expire_deferred(deferred: DeferredTracker, wall: Callable[[], float]) -> None:
    """Forever: close deferred requests past xAI's 24 h result window."""
    while True:
        deferred.expire(wall())
        await asyncio.sleep(DEFERRED_EXPIRY_INTERVAL)


class Retention:
    """Deletes calls older than `days` (prices and fingerprint history are always kept)."""

    def __init__(
        self, ledger: Ledger, metrics: Metrics, days: int, wall: Callable[[], float]
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.days = days
        self.wall = wall

    async def run(self) -> None:
        await asyncio.sleep(RETENTION_FIRST_DELAY)
        while True:
            await self.apply()
            await asyncio.sleep(RETENTION_INTERVAL)

    async def apply(self) -> int:
        """Delete calls older than the retention window now; return how many."""
        cutoff = self.wall() - self.days * 86400.0
        deleted = await self.ledger.run_in_writer(
            lambda: store.delete_calls_before(self.ledger.db(), cutoff)
        )
        if deleted:
            self.metrics.ledger_deleted.inc(deleted)
            log.info("retention_deleted", calls=deleted, days=self.days)
        return deleted
