"""The ledger: SQLite, one row per relayed call, written by one thread in batches.

The hot path only calls `submit(record)` (a queue put). A background task takes what is queued,
and the one writer thread (which owns the write connection, as datasette's `_execute_writes`
does) inserts it in one transaction. Schema changes are named, ordered migrations.
"""

from __future__ import annotations

import asyncio
import operator
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
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

from daemon.pricing import migrate_prices
from daemon.record import CallError, CallRecord, Unmetered, Usage

log = structlog.get_logger("xai_meter.ledger")
LedgerOp = Callable[[sqlite_utils.Database], object]
TICKS_PER_USD = 10**10
T = TypeVar("T")

# The calls table as migration m001 made it. Never edit: later migrations add columns.
_CALL_COLUMNS_M001: dict[str, type] = {
    "id": str,
    "started_at": float,
    "provider": str,
    "endpoint": str,
    "method": str,
    "path": str,
    "status": int,
    "stream": int,
    "deferred": int,
    "requested_model": str,
    "model": str,
    "input_tokens": int,
    "cached_input_tokens": int,
    "cache_write_tokens": int,
    "output_tokens": int,
    "reasoning_tokens": int,
    "image_input_tokens": int,
    "images": int,
    "sources": int,
    "server_tool_calls": int,
    "reported_cost_ticks": int,
    "computed_cost_ticks": int,
    "cost_ticks": int,
    "cost_source": str,
    "price_id": int,
    "fingerprint": str,
    "service_tier": str,
    "response_id": str,
    "request_id": str,
    "duration_ms": float,
    "upstream_ms": float,
    "ttft_ms": float,
    "error": str,
    "error_detail": str,
    "key_id": str,
    "app": str,
    "metered": int,
    "unmetered_reason": str,
}
_CALL_COLUMNS_M005: dict[str, type] = {
    "previous_response_id": str,  # Responses: the conversation this turn continues
    "linked_id": str,  # deferred: the result row points at the POST that asked for it
    "deferred_state": str,  # deferred POST: pending | completed | expired
    "deferred_ms": float,  # deferred result: from the POST to the result
    "tool_calls": str,  # server-side tool calls by kind, JSON
}
CALL_COLUMNS: dict[str, type] = {**_CALL_COLUMNS_M001, **_CALL_COLUMNS_M005}


# --- migrations: named, ordered, each applied once ------------------------------------------


def m001_calls(db: sqlite_utils.Database) -> None:
    db["calls"].create(_CALL_COLUMNS_M001, pk="id")  # type: ignore[union-attr]
    db["calls"].create_index(["started_at"])  # type: ignore[union-attr]
    db["calls"].create_index(["model", "started_at"])  # type: ignore[union-attr]
    db["calls"].create_index(["response_id"])  # type: ignore[union-attr]


def m002_meta(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")  # type: ignore[union-attr]


def m003_prices(db: sqlite_utils.Database) -> None:
    migrate_prices(db)


def m004_unpriced_index(db: sqlite_utils.Database) -> None:
    db["calls"].create_index(["cost_source"])  # type: ignore[union-attr]


def m005_dialects_fingerprints_keys(db: sqlite_utils.Database) -> None:
    calls = db["calls"]
    for name, kind in _CALL_COLUMNS_M005.items():
        calls.add_column(name, kind)  # type: ignore[union-attr]
    calls.create_index(["deferred_state"])  # type: ignore[union-attr]
    db["fingerprints"].create(  # type: ignore[union-attr]
        {
            "provider": str,
            "model": str,
            "fingerprint": str,
            "first_seen": float,
            "last_seen": float,
            "calls": int,
        },
        pk=("provider", "model", "fingerprint"),
    )
    db["fingerprint_changes"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "at": float,
            "provider": str,
            "model": str,
            "old": str,
            "new": str,
            "kind": str,
        },
        pk="id",
    )
    db["api_keys"].create(  # type: ignore[union-attr]
        {"key_id": str, "name": str, "team_id": str, "api_key_id": str, "updated_at": float},
        pk="key_id",
    )


# Calls still to price: unpriced ones, and reported ones without a computed cost.
_TO_PRICE = "cost_source = 'unpriced' or (cost_source = 'reported' and computed_cost_ticks is null)"


def m006_partial_indexes(db: sqlite_utils.Database) -> None:
    """Every index is paid for on every insert: index only the rows the daemon looks up
    (unpriced, pending deferred), and none for the response id nobody queries by."""
    for name in ("idx_calls_cost_source", "idx_calls_deferred_state", "idx_calls_response_id"):
        db.execute(f"drop index if exists {name}")
    db.execute(f"create index idx_calls_unpriced on calls (cost_source) where {_TO_PRICE}")
    db.execute(
        "create index idx_calls_pending on calls (deferred_state) where deferred_state = 'pending'"
    )


def m007_no_model_index(db: sqlite_utils.Database) -> None:
    """Reports filter by time and group in memory; the (model, started_at) index cost every
    insert and served no query of the daemon's."""
    db.execute("drop index if exists idx_calls_model_started_at")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    m001_calls,
    m002_meta,
    m003_prices,
    m004_unpriced_index,
    m005_dialects_fingerprints_keys,
    m006_partial_indexes,
    m007_no_model_index,
]


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply the migrations not yet applied; return their names."""
    db.execute("create table if not exists _migrations (name text primary key, applied_at real)")
    done = {row[0] for row in db.execute("select name from _migrations").fetchall()}
    applied = []
    for migration in MIGRATIONS:
        name = migration.__name__
        if name in done:
            continue
        with db.conn:
            migration(db)
            db.execute(
                "insert into _migrations (name, applied_at) values (?, ?)", [name, time.time()]
            )
        applied.append(name)
    return applied


def open_database(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite_utils.Database:
    """A connection with the settings every user of the ledger needs."""
    if readonly:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute("pragma busy_timeout = 5000")
    db = sqlite_utils.Database(conn)
    if not readonly:
        db.enable_wal()
        conn.execute("pragma synchronous = normal")
        # Checkpoint the WAL every ~40 MB rather than every ~4 MB: fewer, larger copies.
        conn.execute("pragma wal_autocheckpoint = 10000")
    return db


_INSERT = (
    f"insert or replace into calls ({', '.join(CALL_COLUMNS)}) "
    f"values ({', '.join('?' for _ in CALL_COLUMNS)})"
)
_RARE_COLUMNS = (
    "cache_write_tokens",
    "images",
    "sources",
    "server_tool_calls",
    "price_id",
    "service_tier",
    "request_id",
    "error_detail",
    "app",
    "unmetered_reason",
    "previous_response_id",
    "linked_id",
    "deferred_state",
    "deferred_ms",
    "tool_calls",
    "error",
)
_RARE = tuple(list(CALL_COLUMNS).index(c) for c in _RARE_COLUMNS)
_COMMON = tuple(i for i in range(len(CALL_COLUMNS)) if i not in _RARE)
_pick_rare = operator.itemgetter(*_RARE)
_pick_common = operator.itemgetter(*_COMMON)
_INSERT_NARROW = (
    f"insert or replace into calls "
    f"({', '.join(list(CALL_COLUMNS)[i] for i in _COMMON)}) "
    f"values ({', '.join('?' for _ in _COMMON)})"
)


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
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

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
                self._insert_calls(db, records)
                records = []
                item(db)
            self._insert_calls(db, records)

    @staticmethod
    def _insert_calls(db: sqlite_utils.Database, records: list[CallRecord]) -> None:
        if not records:
            return
        # Most calls leave the rarer columns empty: insert those with a narrower statement
        # (binding a parameter costs about as much as anything else per row).
        narrow: list[tuple[Any, ...]] = []
        full: list[tuple[Any, ...]] = []
        rare_empty = (None,) * len(_RARE)
        for r in records:
            row = r.as_tuple()
            if _pick_rare(row) == rare_empty:
                narrow.append(_pick_common(row))
            else:
                full.append(row)
        if narrow:
            db.conn.executemany(_INSERT_NARROW, narrow)
        if full:
            db.conn.executemany(_INSERT, full)
        seen: dict[tuple[str, str, str], list[float]] = {}
        for r in records:
            if r.fingerprint and r.model and r.status is not None and r.status < 400:
                seen.setdefault((r.provider, r.model, r.fingerprint), []).append(r.started_at)
        db.conn.executemany(
            "insert into fingerprints (provider, model, fingerprint, first_seen, last_seen, "
            "calls) values (?, ?, ?, ?, ?, ?) on conflict (provider, model, fingerprint) do "
            "update set first_seen = min(first_seen, excluded.first_seen), "
            "last_seen = max(last_seen, excluded.last_seen), calls = calls + excluded.calls",
            [(*key, min(times), max(times), len(times)) for key, times in seen.items()],
        )


def load_fingerprints(
    db: sqlite_utils.Database,
) -> tuple[list[tuple[str, str, str]], dict[tuple[str, str], str]]:
    """Every fingerprint seen per (provider, model), and the latest one of each."""
    seen: list[tuple[str, str, str]] = []
    latest: dict[tuple[str, str], tuple[float, str]] = {}
    for provider, model, fingerprint, last_seen in db.execute(
        "select provider, model, fingerprint, last_seen from fingerprints"
    ):
        seen.append((provider, model, fingerprint))
        if (provider, model) not in latest or last_seen > latest[(provider, model)][0]:
            latest[(provider, model)] = (last_seen, fingerprint)
    return seen, {key: fp for key, (_, fp) in latest.items()}


def fingerprint_history(
    db: sqlite_utils.Database, model: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """For `xai-meter fingerprints`: fingerprints seen, and changes, oldest first."""
    where, params = ("where model = ?", [model]) if model else ("", [])
    seen = list(
        db.query(
            f"select provider, model, fingerprint, first_seen, last_seen, calls from fingerprints "
            f"{where} order by provider, model, first_seen",
            params,
        )
    )
    changes = list(
        db.query(
            f"select at, provider, model, old, new, kind from fingerprint_changes {where} "
            f"order by at, id",
            params,
        )
    )
    return seen, changes


def record_from_row(row: dict[str, Any]) -> CallRecord:
    """The record a ledger row was written from (as far as pricing needs it)."""
    record = CallRecord(
        id=row["id"],
        started_at=row["started_at"],
        t0=0.0,
        provider=row["provider"],
        endpoint=row["endpoint"],
        method=row["method"],
        path=row["path"],
        requested_model=row["requested_model"],
        model=row["model"],
        status=row["status"],
        cost_ticks=row["cost_ticks"],
        cost_source=row["cost_source"],
        service_tier=row["service_tier"],
        app=row["app"],
        key_id=row["key_id"],
        error=CallError(row["error"]) if row["error"] else None,
        unmetered_reason=Unmetered(row["unmetered_reason"]) if row["unmetered_reason"] else None,
    )
    if row["input_tokens"] is not None:
        record.usage = Usage(
            input_tokens=row["input_tokens"],
            cached_input_tokens=row["cached_input_tokens"] or 0,
            cache_write_tokens=row["cache_write_tokens"] or 0,
            output_tokens=row["output_tokens"] or 0,
            reasoning_tokens=row["reasoning_tokens"] or 0,
            image_input_tokens=row["image_input_tokens"] or 0,
            images=row["images"] or 0,
            sources=row["sources"] or 0,
            reported_cost_ticks=row["reported_cost_ticks"],
            server_tool_calls=orjson.loads(row["tool_calls"]) if row["tool_calls"] else {},
        )
    return record


def reprice_unpriced(
    db: sqlite_utils.Database, price: Callable[[CallRecord], None]
) -> list[CallRecord]:
    """Price the calls that had no price when made: unpriced ones, and reported ones still
    without a computed cost (needed to reconcile). Return the formerly unpriced that now have
    a cost (their spend was not counted yet)."""
    rows = list(db.query(f"select * from calls where {_TO_PRICE}"))
    priced, newly_costed = [], []
    for row in rows:
        record = record_from_row(row)
        price(record)
        if record.computed_cost_ticks is not None or record.cost_source != "unpriced":
            priced.append(record)
            if row["cost_source"] == "unpriced" and record.cost_source != "unpriced":
                newly_costed.append(record)
    if priced:
        with db.conn:
            db.conn.executemany(
                "update calls set computed_cost_ticks = ?, cost_ticks = ?, cost_source = ?, "
                "price_id = ? where id = ?",
                [
                    (r.computed_cost_ticks, r.cost_ticks, r.cost_source, r.price_id, r.id)
                    for r in priced
                ],
            )
    return newly_costed


def delete_calls_before(db: sqlite_utils.Database, cutoff: float, chunk: int = 10_000) -> int:
    """Retention: delete calls started before `cutoff`, in short transactions (readers and
    the writer's own inserts are never held up for long). Return how many went."""
    deleted = 0
    while True:
        with db.conn:
            cursor = db.conn.execute(
                "delete from calls where id in (select id from calls where started_at < ? limit ?)",
                [cutoff, chunk],
            )
        deleted += cursor.rowcount
        if cursor.rowcount < chunk:
            return deleted


def ensure_salt(db: sqlite_utils.Database) -> bytes:
    """The per-ledger salt for key ids, made on first start and kept in `meta`."""
    row = db.execute("select value from meta where key = 'key_salt'").fetchone()
    if row:
        return bytes.fromhex(row[0])
    salt = secrets.token_bytes(16)
    with db.conn:
        db.execute("insert or ignore into meta (key, value) values ('key_salt', ?)", [salt.hex()])
    row = db.execute("select value from meta where key = 'key_salt'").fetchone()
    return bytes.fromhex(row[0])


# --- reports (read-only; safe while the daemon writes) ------------------------------------

REPORT_GROUPS: dict[str, str] = {
    "model": "coalesce(model, requested_model, '-')",
    "app": "coalesce(app, '-')",
    "key": "coalesce((select name || ' (' || calls.key_id || ')' from api_keys k "
    "where k.key_id = calls.key_id), key_id, '-')",
    "day": "date(started_at, 'unixepoch')",
    "endpoint": "endpoint",
}


def report(db: sqlite_utils.Database, since: float, by: str) -> list[dict[str, Any]]:
    """Calls, tokens, cost and latency per group, for calls started at or after `since`."""
    group = REPORT_GROUPS[by]
    rows = list(
        db.query(
            f"""select {group} as grp, count(*) as calls,
                   coalesce(sum(input_tokens), 0) as input_tokens,
                   coalesce(sum(cached_input_tokens), 0) as cached_input_tokens,
                   coalesce(sum(output_tokens), 0) as output_tokens,
                   coalesce(sum(reasoning_tokens), 0) as reasoning_tokens,
                   coalesce(sum(image_input_tokens), 0) as image_input_tokens,
                   coalesce(sum(cost_ticks), 0) as cost_ticks,
                   coalesce(sum(cost_source = 'unpriced'), 0) as unpriced,
                   coalesce(sum(metered = 0), 0) as unmetered,
                   coalesce(sum(error is not null), 0) as errors
            from calls where started_at >= ? group by grp""",
            [since],
        )
    )
    latencies: dict[str, list[float]] = {}
    for grp, duration in db.execute(
        f"select {group}, duration_ms from calls where started_at >= ? and duration_ms is not null",
        [since],
    ).fetchall():
        latencies.setdefault(grp, []).append(duration)
    out = []
    for row in sorted(rows, key=lambda r: (-r["cost_ticks"], -r["calls"], str(r["grp"]))):
        durations = sorted(latencies.get(row["grp"], []))
        inp = row["input_tokens"]
        out.append(
            {
                by: row["grp"],
                "calls": row["calls"],
                "input_tokens": inp,
                "cached_input_tokens": row["cached_input_tokens"],
                "cached_share": f"{row['cached_input_tokens'] / inp:.1%}" if inp else "-",
                "output_tokens": row["output_tokens"],
                "reasoning_tokens": row["reasoning_tokens"],
                "image_input_tokens": row["image_input_tokens"],
                "cost_usd": usd(row["cost_ticks"]),
                "cost_ticks": row["cost_ticks"],
                "p50_ms": percentile(durations, 50),
                "p95_ms": percentile(durations, 95),
                "errors": row["errors"],
                "unmetered": row["unmetered"],
                "unpriced": row["unpriced"],
            }
        )
    return out


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(int(-(-pct * len(sorted_values) // 100)), 1)  # ceil(pct/100 * n)
    return round(sorted_values[rank - 1], 2)


def usd(ticks: int | None) -> str:
    """Exact dollars from ticks (1e-10 USD), to the micro-dollar: no float on the way."""
    if ticks is None:
        return "-"
    return str((Decimal(ticks) / TICKS_PER_USD).quantize(Decimal("0.000001")))
