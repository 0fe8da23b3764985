"""The ledger writer: the queue the hot path feeds, and the one thread that writes in batches.

The hot path only calls `submit(record)` (a queue put). A background task takes what is queued,
and the one writer thread (which owns the write connection, as datasette's `_execute_writes`
does) writes it in one transaction through `daemon.ledger.store`. What the database refuses
after retries is spilled as JSON lines beside it, never dropped.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
import sqlite_utils
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from daemon.ledger.schema import migrate, open_database
from daemon.ledger.store import insert_calls
from daemon.record import CallRecord
from daemon.tasks import spawn

log = structlog.get_logger("xai_meter.ledger")
LedgerOp = Callable[[sqlite_utils.Database], object]
T = TypeVar("T")


class Ledger:
    """Owns the write connection (in its one thread) and the queue that feeds it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_size: int = 500,
        flush_interval: float = 0.0,
        on_written: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
        retry_wait: Any = None,
    ) -> None:
        self.path = str(path)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        # Items: a call, a list of calls (a meter batch), a write to run, or None (stop).
        self._queue: asyncio.Queue[CallRecord | list[CallRecord] | LedgerOp | None] = (
            asyncio.Queue()
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xai-meter-ledger")
        self._db: sqlite_utils.Database | None = None
        self._on_written = on_written or (lambda n: None)
        self._on_error = on_error or (lambda: None)
        self._retry_wait = retry_wait or wait_exponential_jitter(
            multiplier=0.05, max=2.0, jitter=0.05
        )
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.rows_written = 0
        self._depth = 0  # items queued, a batch counting its length
        self._progress = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        await self.run_in_writer(self._open)

    def _open(self) -> None:
        self._db = open_database(self.path)
        applied = migrate(self._db)
        if applied:
            log.info("ledger_migrated", path=self.path, applied=applied)

    def start(self) -> None:
        self._task = spawn(self._run(), name="ledger-writer")

    async def close(self) -> None:
        """Write everything queued, then close the connection. Nothing queued is dropped."""
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        if self._db is not None:
            await self.run_in_writer(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    # --- the hot path ---------------------------------------------------------------------

    def submit(self, record: CallRecord) -> None:
        self._idle.clear()
        self._depth += 1
        self._queue.put_nowait(record)

    def submit_batch(self, records: list[CallRecord]) -> None:
        """A meter batch, queued as one item (the list is the ledger's from now on)."""
        self._idle.clear()
        self._depth += len(records)
        self._queue.put_nowait(records)

    def submit_op(self, op: LedgerOp) -> None:
        """Queue a write (run in the writer thread, in order with the calls around it)."""
        self._idle.clear()
        self._depth += 1
        self._queue.put_nowait(op)

    def depth(self) -> int:
        return self._depth

    async def drained(self) -> None:
        """Wait until every submitted record is written (tests await this, never sleep)."""
        await self._idle.wait()

    async def wait_written(self, count: int) -> None:
        """Wait until `count` rows in all have been written since start."""
        while self.rows_written < count:
            await self._progress.wait()

    # --- the writer -----------------------------------------------------------------------

    async def run_in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the writer thread, the one place the write connection lives."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def db(self) -> sqlite_utils.Database:
        """The write connection; only for functions run through `run_in_writer`."""
        if self._db is None:
            raise RuntimeError("ledger is not open")
        return self._db

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            batch: list[CallRecord | LedgerOp] = []
            if item is None:
                stopping = True
            else:
                self._take(item, batch)
                if self.flush_interval and self._depth < self.batch_size:
                    # Let a batch gather: one transaction (and one thread hand-off) per
                    # interval costs far less per call than one per call.
                    await asyncio.sleep(self.flush_interval)
            while len(batch) < self.batch_size and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                else:
                    self._take(nxt, batch)
            if batch:
                await self._write(batch)
            if self._queue.empty():
                self._idle.set()

    def _take(
        self, item: CallRecord | list[CallRecord] | LedgerOp, batch: list[CallRecord | LedgerOp]
    ) -> None:
        if isinstance(item, list):
            batch.extend(item)
            self._depth -= len(item)
        else:
            batch.append(item)
            self._depth -= 1

    async def _write(self, batch: list[CallRecord | LedgerOp]) -> None:
        try:
            try:
                await self.run_in_writer(self._insert, batch)  # the usual case: no retry set-up
            except sqlite3.Error:
                self._on_error()
                await self._write_retrying(batch)
        except Exception as exc:  # never let the writer die: what it cannot write, it keeps
            records = [r for r in batch if isinstance(r, CallRecord)]
            spill = await self.run_in_writer(self._spill, records)
            log.error("ledger_write_failed", rows=len(records), error=str(exc), spilled_to=spill)
        else:
            written = sum(isinstance(r, CallRecord) for r in batch)
            self.rows_written += written
            self._on_written(written)
        finally:
            self._progress.set()
            self._progress = asyncio.Event()

    async def _write_retrying(self, batch: list[CallRecord | LedgerOp]) -> None:
        """A write failed: retry with backoff (locked database, full disk clearing up)."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(sqlite3.Error),
            stop=stop_after_attempt(4),
            wait=self._retry_wait,
            reraise=True,
        ):
            with attempt:
                try:
                    await self.run_in_writer(self._insert, batch)
                except sqlite3.Error:
                    self._on_error()
                    raise

    def _spill(self, batch: list[CallRecord]) -> str:
        """The database refused the rows: keep them as JSON lines beside it, never drop them."""
        path = self.path + ".unwritten.jsonl"
        with open(path, "ab") as f:
            for record in batch:
                f.write(orjson.dumps(record.as_row()) + b"\n")
        return path

    def _insert(self, batch: list[CallRecord | LedgerOp]) -> None:
        """One transaction: the batch's calls, their fingerprints, and queued writes, in order."""
        db = self.db()
        with db.conn:
            records: list[CallRecord] = []
            for item in batch:
                if isinstance(item, CallRecord):
                    records.append(item)
                    continue
                insert_calls(db, records)
                records = []
                item(db)
            insert_calls(db, records)
