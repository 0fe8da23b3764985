"""The ledger writer: the journal and the queue the hot path feeds, and the one thread that
writes the ledger (SQLite, or PostgreSQL by URL: `daemon.ledger.engine`) in batches.

The hot path only calls `Ledger.begin` (a call was sent: its start goes to the journal) and,
through the meter, `Ledger.submit_batch` (calls ended: their rows go to the journal in one
write, then to the queue). A background task takes what is queued, and the one writer thread
(which owns the write connection, as datasette's `_execute_writes` does) writes it in one
transaction through `daemon.ledger.store`; then the journal is told, and trims what is
committed. See `daemon.ledger.journal` for the journal's format and what it survives.

The writer never dies and never drops a row:
- a failure of the database (locked, full, read-only, I/O, gone) is logged once per kind,
  counted, and retried with backoff for as long as it lasts; meanwhile rows gather in the
  queue up to ``max_queue_rows``, and past that wait in the journal only (memory stays
  bounded), to be read back from it once the database takes writes again (a catch-up);
- a row the database refuses on its own (a value past a signed 64-bit integer, say) never
  takes its batch down: the batch is written row by row, and that row is stored with its
  numbers clamped and ``unmetered_reason = 'out_of_range'``;
- the ledger file deleted or replaced under the daemon is noticed (its inode, checked before
  and after each commit): the writer opens a new file at ``ledger.path`` and writes there,
  the batch that went into the deleted file included (SQLite only);
- PostgreSQL: a connection lost (the server restarted, the network) is a failure like any
  other; the next try connects again. Several daemons may write one PostgreSQL ledger: row
  ids differ by their process tag (`daemon.record.new_call_id`), and each row names its
  writer (``instance``, `ledger.instance`), in the journal too.
On start, what the journal holds and the ledger lacks is written (`open`); calls an earlier
run sent and never ended become rows with ``error = 'crash'``.

Why it is long: the loop side (queue, retries, catch-up, health) and the thread side (the
transaction, row-by-row isolation, replay, the file's identity) are one protocol around one
connection and one journal; split, each half would reach into the other's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog
from tenacity import wait_exponential_jitter

from daemon.config import ConfigError
from daemon.keys import KNOWN_KEYS
from daemon.ledger import journal as journal_
from daemon.ledger.engine import Database, PgDatabase, ledger_errors, redact
from daemon.ledger.journal import Journal, Replay, lines_of, read_segments
from daemon.ledger.schema import migrate, open_database
from daemon.ledger.store import check_writable, insert_rows, missing_ids
from daemon.record import ROW_COLUMNS, CallError, CallRecord, Transport, Unmetered
from daemon.tasks import spawn

log = structlog.get_logger("xai_meter.ledger")
LedgerOp = Callable[[Database], object]
T = TypeVar("T")
Row = tuple[Any, ...]
#: What the queue holds: (journal segment, rows), a write to run, or None (stop).
_Item = tuple[int, list[Row]] | LedgerOp | None

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
#: The writer's own wait on a lock held by another connection: short, since the writer
#: retries with backoff itself, and a stop must not wait long on it.
WRITER_BUSY_TIMEOUT_MS = 250
#: What a single row brings on itself (a value SQLite cannot bind or store), as opposed to
#: the database failing: the batch goes row by row, never retried whole.
_ROW_REFUSED = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    OverflowError,
    TypeError,
    ValueError,
)
_METERED = ROW_COLUMNS.index("metered")
_UNMETERED = ROW_COLUMNS.index("unmetered_reason")
_ERROR_DETAIL = ROW_COLUMNS.index("error_detail")


class Ledger:
    """Owns the journal, the queue, and the write connection (in its one thread).

    ``path``: the SQLite file; ``url``: a PostgreSQL ledger instead (``path`` then only
    places the journal); ``instance``: the name each row carries (``ledger.instance``).
    ``journal_path``: the journal's directory (default beside ``path``,
    `daemon.ledger.journal.default_path`). ``max_queue_rows``: rows held in memory
    for the database at most. ``fsync_interval``: seconds between fsyncs of the journal (0: never,
    the OS decides). ``clock``: monotonic seconds (how long the ledger has been failing).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        url: str | None = None,
        instance: str | None = None,
        journal_path: str | os.PathLike[str] | None = None,
        batch_size: int = 500,
        flush_interval: float = 0.0,
        max_queue_rows: int = 100_000,
        fsync_interval: float = 1.0,
        on_written: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
        retry_wait: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = str(path)
        self.url = url or None
        self.instance = instance
        #: The setting naming the ledger, and its value as messages show it (no password).
        self.setting = "url" if self.url else "path"
        self.where = redact(self.url) if self.url else self.path
        #: What the database raises: sqlite3's errors, and psycopg's for a PostgreSQL ledger.
        self.errors = ledger_errors(self.url)
        self._open_errors: tuple[type[BaseException], ...] = (*self.errors, OSError)
        self._down, self._refused = _failure_kinds(self.url is not None)
        self.journal = Journal(
            journal_path or journal_.default_path(self.path),
            on_error=self._journal_failed,
            on_recovered=self._journal_recovered,
            keys_for=KNOWN_KEYS.keys_for,
        )
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue_rows = max_queue_rows
        self.fsync_interval = fsync_interval
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xai-meter-ledger")
        self._db: Database | None = None
        self._identity: tuple[int, int] | None = None
        self._on_written = on_written or (lambda n: None)
        self._on_error = on_error or (lambda: None)
        self._retry_wait: Callable[[Any], float] = retry_wait or wait_exponential_jitter(
            multiplier=0.05, max=2.0, jitter=0.05
        )
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._fsync_task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop = asyncio.Event()  # close() gave up waiting: leave the rest to the journal
        self._closing = asyncio.Event()  # close() began: write what is queued, now
        self.rows_written = 0
        self._depth = 0  # rows (and writes) queued
        self._progress = asyncio.Event()
        self._behind = False  # rows wait in the journal only: read them back when possible
        self.failing_since: float | None = None  # monotonic; None while writes succeed
        self._failures: dict[str, int] = {}  # kind -> count, since the last success
        self.reopened = 0
        self._opened = False  # opened, migrated and written once (a lock may delay that)

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the ledger, migrate it, check it takes writes, open the journal,
        and write what an earlier run's journal holds that the ledger lacks.

        Raises `ConfigError` naming ``ledger.path`` (``ledger.url``, or
        ``ledger.journal_path``) and the fix when the file cannot be opened, is not a ledger,
        or cannot be written, or PostgreSQL cannot be reached or refuses; a database that is
        only locked is no start-up failure (the rows wait in the journal).
        """
        try:
            await self.run_in_writer(self._open)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise open_error("path", self.path, exc) from None
            self._note_failure(exc)
        except self._open_errors as exc:
            raise open_error(self.setting, self.where, exc) from None
        try:
            earlier = self.journal.earlier_segments()
            self.journal.open()
        except OSError as exc:
            raise open_error("journal_path", str(self.journal.directory), exc) from None
        if earlier:
            self._behind = True
            if self.failing_since is None:
                await self._catch_up(earlier, retry=False)  # else the writer does, once it can

    def _open(self) -> None:
        if self._db is not None:
            with contextlib.suppress(*self.errors):
                self._db.close()
            self._db = None
        if self.url:
            self._db = PgDatabase.connect(self.url)
        else:
            self._db = open_database(self.path, busy_timeout_ms=WRITER_BUSY_TIMEOUT_MS)
            self._identity = _identity(self.path)
        applied = migrate(self._db)
        if applied:
            log.info("ledger_migrated", path=self.where, applied=applied)
        check_writable(self._db, time.time())
        self._opened = True

    def start(self) -> None:
        self._task = spawn(self._run(), name="ledger-writer")
        if self._behind:  # an earlier run's journal still to write: wake the writer for it
            self.submit_op(_nothing)
        if self.fsync_interval > 0:
            self._fsync_task = spawn(self._fsync_every(self.fsync_interval), name="journal-fsync")

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Write everything queued, then close. Within ``timeout`` seconds (None: as long as
        it takes): what is not in the database by then stays in the journal for the next
        start."""
        self._closing.set()
        if self._task is not None:
            self._queue.put_nowait(None)
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._stop.set()
                self._task.cancel()
                log.warning(
                    "ledger_close_timed_out",
                    rows_left_in_journal=self._depth,
                    journal=str(self.journal.directory),
                )
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._fsync_task is not None:
            self._fsync_task.cancel()
            await asyncio.gather(self._fsync_task, return_exceptions=True)
            self._fsync_task = None
        self.journal.close()
        if self._db is not None and not self._stop.is_set():
            await self.run_in_writer(self._db.close)
            self._db = None
        # A thread still in a write (close timed out) ends within its busy timeout.
        self._executor.shutdown(wait=not self._stop.is_set())

    # --- the hot path ---------------------------------------------------------------------

    def begin(self, record: CallRecord) -> None:
        """A call was sent to its upstream: journal its start (a crash row if it never ends),
        its text masked first as its row's will be (the journal is stored too)."""
        self.journal.begin(record)

    def unstarted(self, record: CallRecord) -> bool:
        """Whether nothing of this call in flight is on disk yet (`Journal.unstarted`)."""
        return self.journal.unstarted(record.id)

    def void(self, record: CallRecord) -> None:
        """A call begun will have no row of its own: its start is void (`Journal.void`)."""
        self.journal.void(record.id)

    def submit(self, record: CallRecord) -> None:
        """One finished call (`submit_batch` of one)."""
        self.submit_batch([record])

    def submit_batch(self, records: list[CallRecord]) -> None:
        """Finished calls: journaled now (one write), then queued for the database, unless
        the queue holds ``max_queue_rows`` already (then they wait in the journal only)."""
        instance = self.instance
        rows = [r.as_tuple(instance) for r in records]
        try:
            lines = lines_of(rows)
        except TypeError:  # orjson: an integer past 64 bits (the dialects drop such usage)
            rows = [_clamped(row) if _out_of_range(row) else row for row in rows]
            lines = lines_of(rows)
        seq = self.journal.end([row[0] for row in rows], lines)
        if self._depth + len(rows) > self.max_queue_rows:
            if not self._behind:
                log.warning(
                    "ledger_queue_full",
                    max_queue_rows=self.max_queue_rows,
                    journal=str(self.journal.directory),
                )
            self._behind = True
            return
        self._idle.clear()
        self._depth += len(rows)
        self._queue.put_nowait((seq, rows))

    def submit_op(self, op: LedgerOp) -> None:
        """Queue a write (run in the writer thread, in order with the calls around it)."""
        self._idle.clear()
        self._depth += 1
        self._queue.put_nowait(op)

    def depth(self) -> int:
        return self._depth

    @property
    def healthy(self) -> bool:
        """The last write to the database and to the journal succeeded."""
        return self.failing_since is None and not self.journal.failing

    def unhealthy_for(self) -> float:
        """Seconds the ledger has been unable to write (0 while healthy)."""
        return 0.0 if self.failing_since is None else self._clock() - self.failing_since

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

    def db(self) -> Database:
        """The write connection; only for functions run through `run_in_writer`."""
        if self._db is None:
            raise RuntimeError("ledger is not open")
        return self._db

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            batch: list[tuple[int, list[Row]] | LedgerOp] = []
            if item is None:
                stopping = True
            else:
                batch.append(item)
                if self.flush_interval and self._depth < self.batch_size:
                    # Let a batch gather: one transaction (and one thread hand-off) per
                    # interval costs far less per call than one per call. A close ends it.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.flush_interval):
                            await self._closing.wait()
            rows = _rows(batch)
            while rows < self.batch_size and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                else:
                    batch.append(nxt)
                    rows += len(nxt[1]) if isinstance(nxt, tuple) else 0
            if batch:
                await self._write(batch)
            if self._queue.empty():
                if self._behind:
                    await self._catch_up(self.journal.rotate())
                if self._queue.empty():
                    self._idle.set()

    async def _write(self, batch: list[tuple[int, list[Row]] | LedgerOp]) -> None:
        """Write a batch, retrying for as long as the database fails (never dropping it)."""
        attempt = 0
        while True:
            try:
                written = await self.run_in_writer(self._insert, batch)
            except Exception as exc:
                self._note_failure(exc)
                attempt += 1
                await self._backoff(attempt)
                continue
            break
        self._succeeded()
        for item in batch:
            if isinstance(item, tuple):
                self.journal.committed(item[0], len(item[1]))
        self._depth -= _rows(batch) + sum(not isinstance(i, tuple) for i in batch)
        self.rows_written += written
        self._on_written(written)
        self._progress.set()
        self._progress = asyncio.Event()

    async def _catch_up(self, segments: list[Path] | None, retry: bool = True) -> None:
        """Write what closed journal segments hold and the ledger lacks (rows that waited in
        the journal only, or an earlier run's), then delete them. An earlier run's calls that
        never ended become ``crash`` rows. None: the journal cannot close its segment now
        (its disk refuses): try later."""
        if segments is None:
            return
        attempt = 0
        while segments:
            try:
                written = await self.run_in_writer(self._replay, segments)
            except Exception as exc:
                self._note_failure(exc)
                if not retry:
                    return
                attempt += 1
                await self._backoff(attempt)
                continue
            break
        else:
            self._behind = False
            return
        self._succeeded()
        self.journal.forget(segments)
        self._behind = False
        self.rows_written += written
        self._on_written(written)
        self._progress.set()
        self._progress = asyncio.Event()

    async def _backoff(self, attempt: int) -> None:
        """Wait before the next try (tenacity's exponential wait); a stop ends the wait and
        the writer (what is unwritten stays in the journal)."""
        delay = float(self._retry_wait(_Attempt(attempt)))
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            return
        raise asyncio.CancelledError

    async def _fsync_every(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            await loop.run_in_executor(None, self.journal.fsync)

    # --- health -----------------------------------------------------------------------------

    def _note_failure(self, exc: BaseException) -> None:
        """A write failed: log its kind the first time (with what it is), count the rest."""
        self._on_error()
        if self.failing_since is None:
            self.failing_since = self._clock()
        kind = _kind(exc)
        count = self._failures.get(kind, 0) + 1
        self._failures[kind] = count
        if count == 1:
            log.error("ledger_write_failed", kind=kind, path=self.where, queued=self._depth)

    def _succeeded(self) -> None:
        if self.failing_since is not None:
            log.warning(
                "ledger_recovered",
                path=self.where,
                failed_for_s=round(self._clock() - self.failing_since, 3),
                failures=self._failures,
            )
            self.failing_since = None
            self._failures = {}

    def _journal_failed(self, exc: OSError) -> None:
        if not self.journal.failing:
            log.error("journal_write_failed", error=str(exc), journal=str(self.journal.directory))

    def _journal_recovered(self) -> None:
        log.warning("journal_recovered", journal=str(self.journal.directory))

    # --- in the writer thread ----------------------------------------------------------------

    def _insert(self, batch: list[tuple[int, list[Row]] | LedgerOp]) -> int:
        """Write a batch; returns its rows. The file is checked after the commit (one stat):
        a commit that went into a deleted or replaced file is written again, into the new one."""
        if not self._opened:  # a lock (or PostgreSQL gone) kept the last open from finishing
            self._open()
        try:
            self._insert_once(batch)
        except BaseException:
            if isinstance(self._db, PgDatabase) and self._db.broken:
                self._opened = False  # connect again on the next try
            raise
        if self._check_identity():  # deleted or replaced: what went into it goes again
            self._insert_once(batch)
        return _rows(batch)

    def _insert_once(self, batch: list[tuple[int, list[Row]] | LedgerOp]) -> None:
        """One transaction: the batch's rows, their fingerprints, and queued writes, in order.
        A row refused on its own (not the database failing) sends the batch row by row
        (`_insert_each`)."""
        try:
            self._transaction(batch)
        except self._down:
            raise
        except self._refused:
            self._insert_each(batch)

    def _transaction(self, batch: list[tuple[int, list[Row]] | LedgerOp]) -> None:
        db = self.db()
        with db.conn:
            rows: list[Row] = []
            for item in batch:
                if isinstance(item, tuple):
                    rows.extend(item[1])
                    continue
                insert_rows(db, rows)
                rows = []
                item(db)
            insert_rows(db, rows)

    def _insert_each(self, batch: list[tuple[int, list[Row]] | LedgerOp]) -> None:
        """Row by row, each its own transaction: a refused row is stored clamped."""
        db = self.db()
        for item in batch:
            if not isinstance(item, tuple):
                try:
                    with db.conn:
                        item(db)
                except self._down:
                    raise
                except Exception:
                    log.exception("ledger_op_failed")
                continue
            for row in item[1]:
                try:
                    with db.conn:
                        insert_rows(db, [row])
                except self._down:
                    raise
                except Exception:
                    with db.conn:
                        insert_rows(db, [_clamped(row)])
                    log.warning("ledger_row_clamped", call_id=row[0])

    def _replay(self, segments: list[Path]) -> int:
        """Write the ends these segments hold that the ledger lacks, and ``crash`` rows for an
        earlier run's calls that never ended; returns the rows written."""
        self._check_identity()
        found: Replay = read_segments(segments, crash_before=self.journal.first_seq)
        if found.bad_lines:
            log.warning("journal_lines_unreadable", lines=found.bad_lines)
        db = self.db()
        missing = missing_ids(db, [*found.ends, *found.starts])
        rows = [row for call_id, row in found.ends.items() if call_id in missing]
        crashed = [
            crash_row(s, self.instance) for call_id, s in found.starts.items() if call_id in missing
        ]
        every = rows + crashed
        for i in range(0, len(every), 1000):
            self._insert_once([(0, every[i : i + 1000])])
        if rows or crashed:
            log.warning(
                "journal_replayed", rows=len(rows), crash_rows=len(crashed), segments=len(segments)
            )
        return len(rows) + len(crashed)

    def _check_identity(self) -> bool:
        """The file at ``path`` is still the one open (same device and inode); if it was
        deleted or replaced, open a new one there. True when it did. PostgreSQL: never."""
        if not self._opened:  # a lock kept the start from finishing it
            self._open()
            return False
        if self.url:
            return False
        now = _identity(self.path)
        if now == self._identity and now is not None:
            return False
        log.error(
            "ledger_replaced",
            path=self.path,
            what="deleted" if now is None else "replaced",
            action="writing to a new file at the same path",
        )
        self._opened = False
        self._open()
        self.reopened += 1
        return True


class _Attempt:
    """What tenacity's wait functions read of a retry: its attempt number."""

    def __init__(self, number: int) -> None:
        self.attempt_number = number


def crash_row(start: dict[str, Any], instance: str | None = None) -> Row:
    """The row of a call an earlier run sent and never ended (from its journal start line);
    `instance`: the daemon writing it (the journal is this daemon's own)."""
    record = CallRecord(
        id=start["id"],
        started_at=start["started_at"],
        t0=0.0,
        provider=start["provider"],
        endpoint=start["endpoint"],
        method=start["method"],
        path=start["path"],
        key_id=start["key_id"],
        app=start["app"],
        requested_model=start["requested_model"],
        stream=bool(start["stream"]),
        transport=Transport(start["transport"]),
        sent=True,
        error=CallError.CRASH,
        error_detail="the daemon stopped (killed, or crashed) before the call ended",
        unmetered_reason=Unmetered.CRASH,
    )
    return record.as_tuple(instance)


def _nothing(db: Database) -> None:
    """A write that writes nothing (it wakes the writer)."""


def _out_of_range(row: Row) -> bool:
    return any(isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX for v in row)


def _clamped(row: Row) -> Row:
    """A row whose integers fit SQLite's and PostgreSQL's (signed 64-bit): any that does not
    is clamped, and the call is not booked as metered (`Unmetered.OUT_OF_RANGE`). A NUL
    character (PostgreSQL's text refuses it) becomes U+FFFD."""
    out = list(row)
    bad = []
    nul = False
    for i, v in enumerate(out):
        if isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:
            out[i] = INT64_MAX if v > 0 else INT64_MIN
            bad.append(ROW_COLUMNS[i])
        elif isinstance(v, float) and v != v:  # NaN cannot be stored either
            out[i] = None
        elif isinstance(v, str) and "\0" in v:
            out[i] = v.replace("\0", "\ufffd")
            nul = True
    if nul and not bad:  # the numbers stand: only the text changed
        return tuple(out)
    out[_METERED] = 0
    out[_UNMETERED] = Unmetered.OUT_OF_RANGE.value
    detail = f"out of range, clamped: {', '.join(bad) or 'a value'}"
    out[_ERROR_DETAIL] = f"{out[_ERROR_DETAIL]}; {detail}" if out[_ERROR_DETAIL] else detail
    return tuple(out)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _failure_kinds(
    pg: bool,
) -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(the database failing: retried whole; a row refused on its own: the batch goes row by
    row) for an engine. PostgreSQL: unreachable, shut down, out of disk, a deadlock or a
    serialization failure (``OperationalError``), a broken connection (``InterfaceError``),
    a read-only server or a grant missing (``InternalError``, ``ProgrammingError``) fail;
    a value out of range, a NUL in text (``DataError``) or a constraint (``IntegrityError``)
    are a row's own."""
    if not pg:
        return (sqlite3.OperationalError,), _ROW_REFUSED
    import psycopg

    down = (
        psycopg.OperationalError,
        psycopg.InterfaceError,
        psycopg.InternalError,
        psycopg.ProgrammingError,
        psycopg.NotSupportedError,
    )
    return down, (psycopg.DataError, psycopg.IntegrityError, OverflowError, TypeError, ValueError)


def _kind(exc: BaseException) -> str:
    """A failure's kind, for logs and counts: its type and message (no row data in them)."""
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def open_error(setting: str, where: str, exc: BaseException) -> ConfigError:
    """A ledger (``setting`` "path") or journal ("journal_path") that cannot be opened or
    written, as one line naming the setting and the fix."""
    reason = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        reason = f"{exc.strerror}: {exc.filename!r}" if exc.filename else exc.strerror
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in reason:
        fix = f"set ledger.{setting} (--ledger FILE) to an xai-meter ledger or a new file"
    elif setting == "url":
        reason = " ".join(reason.split())  # libpq's messages span lines
        fix = (
            "check that PostgreSQL runs there and that this user may log in (the password "
            "from PGPASSWORD or ~/.pgpass) and create tables in that database"
        )
    elif setting == "path":
        fix = "set ledger.path (--ledger FILE) to a file this user can create and write"
    else:
        fix = f"set ledger.{setting} to a directory this user can create and write"
    what = "the ledger" if setting == "path" else "the journal"
    return ConfigError(f"ledger.{setting} = {where!r}: cannot open {what} ({reason}). Fix: {fix}.")


def _rows(items: Iterable[tuple[int, list[Row]] | LedgerOp]) -> int:
    return sum(len(i[1]) for i in items if isinstance(i, tuple))
