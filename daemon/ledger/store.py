"""Every SQL statement of the daemon outside the schema: one owner for what it reads and writes.

Functions take a ledger connection of either engine (`daemon.ledger.engine.Database`: SQLite or
PostgreSQL, each statement written once in the form both read) and run in the caller's context:
the daemon calls the writing ones in the ledger's writer thread (`Ledger.run_in_writer`, or
queued in order with the calls through `Ledger.submit_op`), the CLI calls the reading ones on a
read-only connection.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from daemon.ledger.engine import Database, greatest, is_pg, least, table_exists
from daemon.ledger.schema import CALL_COLUMNS, TO_PRICE
from daemon.pricing.cost import exact_multiplier
from daemon.record import (
    ROW_COLUMNS,
    CallError,
    CallRecord,
    CostSource,
    Transport,
    Unmetered,
    Usage,
)

_NULLS = (None,) * len(CALL_COLUMNS)


@functools.lru_cache(maxsize=128)
def _insert_for(present: tuple[bool, ...], pg: bool) -> str:
    """The insert statement naming only the columns `present` marks (the rest stay NULL).

    A row already there (same id; or a second row of one Batch API result, m013's unique
    index) is replaced on SQLite, kept on PostgreSQL (where ``on conflict`` names no one
    constraint to replace by): a batch committed whose acknowledgement the network lost is
    written again, to the same effect either way."""
    columns = list(itertools.compress(CALL_COLUMNS, present))
    marks = ", ".join("?" for _ in columns)
    if pg:
        return f"insert into calls ({', '.join(columns)}) values ({marks}) on conflict do nothing"
    return f"insert or replace into calls ({', '.join(columns)}) values ({marks})"


def insert_calls(db: Database, records: list[CallRecord]) -> None:
    """Insert calls (one row each) and count their fingerprints; the caller's transaction."""
    insert_rows(db, [r.as_tuple() for r in records])


_STATUS = ROW_COLUMNS.index("status")
_FINGERPRINT = ROW_COLUMNS.index("fingerprint")
_FP_KEY = operator.itemgetter(
    ROW_COLUMNS.index("provider"), ROW_COLUMNS.index("model"), _FINGERPRINT
)
_STARTED_AT = ROW_COLUMNS.index("started_at")


def insert_rows(db: Database, rows: list[tuple[Any, ...]]) -> None:
    """Insert ledger rows (`CallRecord.as_tuple` order) and count their fingerprints; the
    caller's transaction.

    A row names only its non-NULL columns: Python's sqlite3 binds a None through its adapter
    look-up, which raises and formats two AttributeErrors per value (measured: 0.55 µs per
    NULL, 12 µs of a 45-column row with 22 of them; grouping by which columns are NULL costs
    2 µs). Rows are grouped by that shape, one `executemany` per shape.
    """
    if not rows:
        return
    pg = is_pg(db)
    by_shape: dict[tuple[bool, ...], list[tuple[Any, ...]]] = {}
    is_not = operator.is_not
    for row in rows:
        present = tuple(map(is_not, row, _NULLS))
        values = tuple(itertools.compress(row, present))
        same = by_shape.get(present)
        if same is None:
            by_shape[present] = [values]
        else:
            same.append(values)
    for present, grouped in by_shape.items():
        db.conn.executemany(_insert_for(present, pg), grouped)
    seen: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        status = row[_STATUS]
        if row[_FINGERPRINT] and status is not None and status < 400:
            key = _FP_KEY(row)
            if key[1]:
                seen.setdefault(key, []).append(row[_STARTED_AT])
    # In key order: two daemons upserting the same rows take their locks in one order.
    db.conn.executemany(
        "insert into fingerprints (provider, model, fingerprint, first_seen, last_seen, "
        "calls) values (?, ?, ?, ?, ?, ?) on conflict (provider, model, fingerprint) do "
        f"update set first_seen = {least(db, 'fingerprints.first_seen', 'excluded.first_seen')}, "
        f"last_seen = {greatest(db, 'fingerprints.last_seen', 'excluded.last_seen')}, "
        "calls = fingerprints.calls + excluded.calls",
        [(*key, min(times), max(times), len(times)) for key, times in sorted(seen.items())],
    )


def missing_ids(db: Database, ids: Iterable[str], chunk: int = 500) -> set[str]:
    """Which of these call ids have no row yet (a journal replay writes only those)."""
    wanted = list(ids)
    have: set[str] = set()
    for i in range(0, len(wanted), chunk):
        part = wanted[i : i + chunk]
        marks = ", ".join("?" for _ in part)
        have.update(r[0] for r in db.execute(f"select id from calls where id in ({marks})", part))
    return set(wanted) - have


def check_writable(db: Database, at: float) -> None:
    """Write one small row (``meta.opened_at``): raises `sqlite3.Error` (or psycopg's) when
    the ledger cannot be written (read-only file or directory, locked, full; no grant)."""
    with db.conn:
        db.execute(
            "insert into meta (key, value) values ('opened_at', ?) "
            "on conflict (key) do update set value = excluded.value",
            [str(at)],
        )


def load_fingerprints(
    db: Database,
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
    db: Database, model: str | None = None
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
        cost_source=CostSource(row["cost_source"]) if row["cost_source"] else None,
        service_tier=row["service_tier"],
        app=row["app"],
        key_id=row["key_id"],
        error=CallError(row["error"]) if row["error"] else None,
        unmetered_reason=Unmetered(row["unmetered_reason"]) if row["unmetered_reason"] else None,
        price_multiplier=(
            exact_multiplier(row["price_multiplier"]) if row["price_multiplier"] else None
        ),
        image_tier=_image_tier(row["image_tier"]),
        transport=Transport(row["transport"]),
        video_request=row["video_request"],
    )
    if row["input_tokens"] is not None:
        record.usage = Usage(
            input_tokens=row["input_tokens"],
            cached_input_tokens=row["cached_input_tokens"] or 0,
            cache_creation_input_tokens=row["cache_creation_input_tokens"] or 0,
            cache_creation_1h_input_tokens=row["cache_creation_1h_input_tokens"] or 0,
            output_tokens=row["output_tokens"] or 0,
            reasoning_tokens=row["reasoning_tokens"] or 0,
            image_input_tokens=row["image_input_tokens"] or 0,
            images=row["images"] or 0,
            sources=row["sources"] or 0,
            reported_cost_ticks=row["reported_cost_ticks"],
            server_tool_calls=orjson.loads(row["tool_calls"]) if row["tool_calls"] else {},
            catalog_rate=row["catalog_rate"],
            characters=row["characters"] or 0,
            audio_seconds=row["audio_seconds"] or 0.0,
            video_seconds=row["video_seconds"] or 0.0,
            video_image_inputs=row["video_image_inputs"] or 0,
            video_input_seconds=row["video_input_seconds"] or 0.0,
        )
    return record


def _image_tier(text: str | None) -> tuple[str | None, str | None] | None:
    """The ``image_tier`` column ("quality/resolution", a half empty when not requested)."""
    quality, slash, resolution = (text or "").partition("/")
    return (quality or None, resolution or None) if slash else None


def reprice_unpriced(db: Database, price: Callable[[CallRecord], None]) -> list[CallRecord]:
    """Price the calls that had no price when made: unpriced ones, and reported ones still
    without a computed cost (needed to reconcile), all in one transaction. Return the formerly
    unpriced that now have a cost (their spend was not counted yet). The daemon does the same
    in chunks: `ids_to_price`, then `reprice_calls` per chunk."""
    return reprice_calls(db, ids_to_price(db), price)


def ids_to_price(db: Database) -> list[str]:
    """The ids of the calls still to price (see `reprice_unpriced`), in no set order."""
    return [row[0] for row in db.execute(f"select id from calls where {TO_PRICE}")]


_ID_CHUNK = 500  # bound parameters per statement: under SQLite's oldest limit (999)


def reprice_calls(
    db: Database, ids: Sequence[str], price: Callable[[CallRecord], None]
) -> list[CallRecord]:
    """Price those of the calls `ids` that are still to price (a call priced meanwhile, or
    gone, is skipped), writing their costs in one transaction. Return the formerly unpriced
    that now have a cost (their spend was not counted yet)."""
    rows: list[dict[str, Any]] = []
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = list(ids[start : start + _ID_CHUNK])
        marks = ", ".join("?" for _ in chunk)
        rows += db.query(f"select * from calls where id in ({marks}) and ({TO_PRICE})", chunk)
    priced, newly_costed = [], []
    for row in rows:
        record = record_from_row(row)
        price(record)
        if record.computed_cost_ticks is not None or record.cost_source is not CostSource.UNPRICED:
            priced.append(record)
            if (
                row["cost_source"] == CostSource.UNPRICED
                and record.cost_source is not CostSource.UNPRICED
            ):
                newly_costed.append(record)
    if priced:
        with db.conn:
            db.conn.executemany(
                "update calls set computed_cost_ticks = ?, cost_ticks = ?, cost_source = ?, "
                "price_id = ?, model = ? where id = ?",
                [
                    (r.computed_cost_ticks, r.cost_ticks, r.cost_source, r.price_id, r.model, r.id)
                    for r in priced
                ],
            )
    return newly_costed


def delete_calls_before(db: Database, cutoff: float, chunk: int = 10_000) -> int:
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


def legacy_salt(db: Database) -> bytes | None:
    """The key-id salt an older version kept in ``meta.key_salt`` (16 bytes), or None.

    The salt now lives in its own file (`daemon.salt`); this is read once, to move it there,
    and then `forget_legacy_salt` deletes the row (whoever holds the DB file could otherwise
    confirm a guessed key against the key ids).
    """
    row = db.execute("select value from meta where key = 'key_salt'").fetchone()
    return bytes.fromhex(row[0]) if row else None


def forget_legacy_salt(db: Database) -> None:
    """Delete ``meta.key_salt`` (after its salt is safe in the salt file)."""
    with db.conn:
        db.execute("delete from meta where key = 'key_salt'")


def mark_demo_ledger(db: Database) -> None:
    """Mark the ledger as one `xai-meter demo` made (``meta.demo``), so a later demo may
    replace it; a ledger without the mark is never replaced."""
    with db.conn:
        db.execute(
            "insert into meta (key, value) values ('demo', '1') "
            "on conflict (key) do update set value = excluded.value"
        )


def is_demo_ledger(db: Database) -> bool:
    """The ledger carries `mark_demo_ledger`'s mark."""
    if not table_exists(db, "meta"):
        return False
    return db.execute("select 1 from meta where key = 'demo'").fetchone() is not None


def all_calls(db: Database) -> list[dict[str, Any]]:
    """Every call row, oldest first (tests and small ledgers)."""
    return list(db.query("select * from calls order by started_at, id"))


def last_calls(db: Database, count: int) -> list[dict[str, Any]]:
    """The `count` most recent call rows, oldest of them first (`xai-meter demo`)."""
    rows = db.query("select * from calls order by started_at desc, id desc limit ?", [count])
    return list(rows)[::-1]


def save_key_name(db: Database, row: tuple[Any, ...]) -> None:
    """Keep what GET /v1/api-key said of a key: (key_id, name, team_id, api_key_id, at)."""
    db.execute(
        "insert into api_keys (key_id, name, team_id, api_key_id, updated_at) "
        "values (?, ?, ?, ?, ?) on conflict (key_id) do update set name = excluded.name, "
        "team_id = excluded.team_id, api_key_id = excluded.api_key_id, "
        "updated_at = excluded.updated_at",
        row,
    )


def key_join(db: Database) -> dict[str, str]:
    """``{key_id: api_key_id}`` for every key GET /v1/api-key named (the Management API join)."""
    rows = db.execute("select key_id, api_key_id from api_keys where api_key_id != ''")
    return {str(key_id): str(api_key_id) for key_id, api_key_id in rows.fetchall()}


def save_fingerprint_change(db: Database, row: tuple[Any, ...]) -> bool:
    """One fingerprint change a daemon saw: (at, provider, model, old, new, kind); True when
    it is recorded, False when the ledger already had it (another daemon sharing the ledger
    saw the same change first). The caller's transaction.

    The database decides, by compare-and-set on the model's current fingerprint
    (``fingerprint_current``, m016): the update moves it from the value read to ``new`` only
    if nobody moved it meanwhile (PostgreSQL re-reads a row another transaction updated
    before it compares), so of several daemons one moves it and records the change. ``old``
    recorded is the ledger's previous value (a daemon that missed a change between two others'
    knows an older one); the daemon's own when the ledger knew none."""
    at, provider, model, old, new, kind = row
    found = db.execute(
        "select fingerprint from fingerprint_current where provider = ? and model = ?",
        [provider, model],
    ).fetchone()
    if found is None:
        moved = db.execute(
            "insert into fingerprint_current (provider, model, fingerprint, previous, "
            "changed_at) values (?, ?, ?, ?, ?) on conflict (provider, model) do nothing",
            [provider, model, new, old, at],
        ).rowcount
    elif found[0] == new:
        return False
    else:
        old = found[0]
        moved = db.execute(
            "update fingerprint_current set fingerprint = ?, previous = ?, changed_at = ? "
            "where provider = ? and model = ? and fingerprint = ?",
            [new, old, at, provider, model, old],
        ).rowcount
    if moved != 1:
        return False
    db.execute(
        "insert into fingerprint_changes (at, provider, model, old, new, kind) "
        "values (?, ?, ?, ?, ?, ?)",
        [at, provider, model, old, new, kind],
    )
    return True


def fleet_salt_check(db: Database, check: str) -> str:
    """The check value of the key-id salt every daemon sharing this ledger uses (``meta.
    salt_check``, `daemon.salt.salt_check`): `check` when none was recorded yet (this daemon
    is the first: it records it), else the one recorded. Never the salt itself."""
    with db.conn:
        db.execute(
            "insert into meta (key, value) values ('salt_check', ?) on conflict (key) do nothing",
            [check],
        )
        found = db.execute("select value from meta where key = 'salt_check'").fetchone()
    return str(found[0])


def complete_deferred(db: Database, call_id: str) -> None:
    """A deferred request's result arrived: its POST row becomes `completed`."""
    db.execute("update calls set deferred_state = 'completed' where id = ?", [call_id])


def end_deferred(db: Database, call_id: str, state: str) -> None:
    """A deferred job ended without a result (``state`` ``failed`` or ``expired``, as its poll
    said): its POST row says so, unless it already ended."""
    db.execute(
        "update calls set deferred_state = ? where id = ? and deferred_state = 'pending'",
        [state, call_id],
    )


def expire_deferred(db: Database, call_ids: Iterable[str]) -> None:
    """Deferred requests whose result can no longer come: `pending` rows become `expired`."""
    db.conn.executemany(
        "update calls set deferred_state = 'expired' where id = ? and deferred_state = 'pending'",
        [(i,) for i in call_ids],
    )


def load_deferred(
    db: Database, completed_since: float
) -> tuple[list[CallRecord], list[tuple[str, str]]]:
    """Pending deferred requests, as the records of their POST rows (`record_from_row`, with
    ``response_id``, the request id: what `daemon.meter.deferred` carries to the result), and
    (endpoint, request_id) of those completed since `completed_since` (their result must not be
    billed again); the endpoint is the POST's, which names the kind of job."""
    pending = []
    for row in db.query("select * from calls where deferred_state = 'pending'"):
        record = record_from_row(row)
        record.response_id = row["response_id"]
        pending.append(record)
    done = [
        (r[0], r[1])
        for r in db.execute(
            "select p.endpoint, p.response_id from calls p where p.deferred_state = 'completed' "
            "and p.started_at >= ?",
            [completed_since],
        )
    ]
    return pending, done


def load_batch_results(db: Database) -> list[tuple[str, str]]:
    """Every Batch API result billed so far, as (batch id, batch_request_id): the keys
    `daemon.meter.batches.BatchResults` must never bill again (read through m013's index)."""
    return [
        (r[0], r[1])
        for r in db.execute(
            "select linked_id, response_id from calls where endpoint = 'batches.result' "
            "and linked_id is not null and response_id is not null"
        )
    ]
