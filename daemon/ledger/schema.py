"""Every table of the ledger and the named, ordered migrations that made them.

A migration is a function named ``mNNN_what``; `migrate` applies, in order, those not yet in
``_migrations`` (llm's ``migrations.py`` pattern). A migration is frozen once released: later
changes are new migrations, so the column lists below are the ones each migration made.
`open_database` gives every user of the ledger (the writer, the CLI's reports) the same
connection settings.

Why it is long: the migrations are frozen history, one function each (sixteen so far, each on
both engines where they differ); they belong in one place, in order, with the column lists they
made.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from daemon.ledger.engine import Database, is_pg, serialized

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
    "deferred_state": str,  # daemon.record.DeferredState: pending | completed | expired | ...
    "deferred_ms": float,  # deferred result: from the POST to the result
    "tool_calls": str,  # server-side tool calls by kind, JSON
}
_CALL_COLUMNS_M008: dict[str, type] = {
    # the upstream's own error code or type, from its body; error_detail is the relay's words
    "upstream_error": str,
}
_CALL_COLUMNS_M009_RULES: dict[str, type] = {
    # the upstream's token price multiplier (1.1: US regional endpoint); null = 1
    "price_multiplier": float,
    # images: the request's "quality/resolution" (the listing's pricing[] tier); null otherwise
    "image_tier": str,
}
# m010 renamed a column in place (its position stays) and added the 1-hour part of it.
_RENAMED_M010: dict[str, str] = {"cache_write_tokens": "cache_creation_input_tokens"}
_CALL_COLUMNS_M010: dict[str, type] = {
    # Anthropic cache writes for 1 hour (priced 2x input); the rest of
    # cache_creation_input_tokens are 5-minute writes (1.25x input)
    "cache_creation_1h_input_tokens": int,
}
# m011 added `transport` (TEXT NOT NULL DEFAULT 'http'; every row before it came over HTTP):
# how the client reached the daemon, daemon.record.Transport (http | grpc | websocket).
_CALL_COLUMNS_M011: dict[str, type] = {"transport": str}
_CALL_COLUMNS_M012: dict[str, type] = {
    # products billed by the unit (daemon.record.Usage): the catalog rate that priced the call
    # (tts | stt:rest | stt:streaming | realtime | video:RESOLUTION) and the quantities it prices
    "catalog_rate": str,
    "characters": int,  # text-to-speech input, Unicode code points
    "audio_seconds": float,  # speech-to-text audio, realtime audio sent
    "video_seconds": float,  # generated video
    "video_image_inputs": int,  # a video request's input images
    "video_input_seconds": float,  # a video request's input video
}
# m013: a video POST's "KIND/RESOLUTION/IMAGES" (daemon.record.CallRecord.video_request)
_CALL_COLUMNS_M013: dict[str, type] = {"video_request": str}
# m015: the daemon that wrote the row (ledger.instance, default the host name): several share
# one PostgreSQL ledger. NULL on rows written before it.
_CALL_COLUMNS_M015: dict[str, type] = {"instance": str}
CALL_COLUMNS: dict[str, type] = {
    **{
        _RENAMED_M010.get(name, name): kind
        for name, kind in {
            **_CALL_COLUMNS_M001,
            **_CALL_COLUMNS_M005,
            **_CALL_COLUMNS_M008,
            **_CALL_COLUMNS_M009_RULES,
        }.items()
    },
    **_CALL_COLUMNS_M010,
    **_CALL_COLUMNS_M011,
    **_CALL_COLUMNS_M012,
    **_CALL_COLUMNS_M013,
    **_CALL_COLUMNS_M015,
}


# --- the DDL the two engines spell differently ----------------------------------------------
# SQLite: sqlite_utils, exactly as each migration was released. PostgreSQL: the same tables,
# columns, keys and index names, in its types (text, bigint, double precision; an integer
# ``id`` key is an identity column, as SQLite's INTEGER PRIMARY KEY numbers rows itself).

_PG_TYPES: dict[type, str] = {str: "text", int: "bigint", float: "double precision"}


def _create_table(
    db: Database,
    name: str,
    columns: dict[str, type],
    *,
    pk: str | tuple[str, ...],
    not_null: set[str] | None = None,
    foreign_keys: list[tuple[str, str, str]] | None = None,
    if_not_exists: bool = False,
) -> None:
    if not isinstance(db, sqlite_utils.Database):
        keys = (pk,) if isinstance(pk, str) else pk
        parts = []
        for column, kind in columns.items():
            if keys == (column,) and kind is int:
                parts.append(f"{column} bigint generated by default as identity primary key")
                continue
            null = " not null" if column in (not_null or ()) else ""
            parts.append(f"{column} {_PG_TYPES[kind]}{null}")
        if len(keys) > 1 or columns[keys[0]] is not int:
            parts.append(f"primary key ({', '.join(keys)})")
        parts += [f"foreign key ({c}) references {t} ({o})" for c, t, o in foreign_keys or ()]
        exists = "if not exists " if if_not_exists else ""
        db.execute(f"create table {exists}{name} ({', '.join(parts)})")
        return
    extra: dict[str, object] = {}
    if not_null is not None:
        extra["not_null"] = not_null
    if foreign_keys is not None:
        extra["foreign_keys"] = foreign_keys
    if if_not_exists:
        extra["if_not_exists"] = True
    db.table(name).create(columns, pk=pk, **extra)  # type: ignore[arg-type]


def _add_column(db: Database, table: str, column: str, kind: type) -> None:
    if isinstance(db, sqlite_utils.Database):
        db.table(table).add_column(column, kind)
    else:
        db.execute(f"alter table {table} add column {column} {_PG_TYPES[kind]}")


def _create_index(db: Database, table: str, columns: list[str]) -> None:
    if isinstance(db, sqlite_utils.Database):
        db.table(table).create_index(columns)
    else:  # sqlite_utils' index name, so later migrations drop it by name on either engine
        name = f"idx_{table}_{'_'.join(columns)}"
        db.execute(f"create index {name} on {table} ({', '.join(columns)})")


# --- migrations: named, ordered, each applied once ------------------------------------------


def m001_calls(db: Database) -> None:
    _create_table(db, "calls", _CALL_COLUMNS_M001, pk="id")
    _create_index(db, "calls", ["started_at"])
    _create_index(db, "calls", ["model", "started_at"])
    _create_index(db, "calls", ["response_id"])


def m002_meta(db: Database) -> None:
    _create_table(db, "meta", {"key": str, "value": str}, pk="key")


# The price columns as migration m003 made them (ticks; see daemon/units.py). Never edit.
PRICE_COLUMNS_M003: tuple[str, ...] = (
    "input",
    "cached_input",
    "output",
    "image_input",
    "search",
    "image",
    "long_context_threshold",
    "input_long",
    "cached_input_long",
    "output_long",
)


def m003_prices(db: Database) -> None:
    """Every fetched price set, kept forever: a call is priced at the set in force then."""
    _create_table(
        db,
        "price_sets",
        {"id": int, "effective_at": float, "fetched_at": float, "source": str, "digest": str},
        pk="id",
        if_not_exists=True,
    )
    _create_table(
        db,
        "prices",
        {
            "price_set_id": int,
            "model": str,
            "aliases": str,  # JSON list
            **dict.fromkeys(PRICE_COLUMNS_M003, int),
            "fingerprint": str,
        },
        pk=("price_set_id", "model"),
        foreign_keys=[("price_set_id", "price_sets", "id")],
        if_not_exists=True,
    )


def m004_unpriced_index(db: Database) -> None:
    _create_index(db, "calls", ["cost_source"])


def m005_dialects_fingerprints_keys(db: Database) -> None:
    for name, kind in _CALL_COLUMNS_M005.items():
        _add_column(db, "calls", name, kind)
    _create_index(db, "calls", ["deferred_state"])
    _create_table(
        db,
        "fingerprints",
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
    _create_table(
        db,
        "fingerprint_changes",
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
    _create_table(
        db,
        "api_keys",
        {"key_id": str, "name": str, "team_id": str, "api_key_id": str, "updated_at": float},
        pk="key_id",
    )


# Calls still to price: unpriced ones, and reported ones without a computed cost.
TO_PRICE = "cost_source = 'unpriced' or (cost_source = 'reported' and computed_cost_ticks is null)"


def m006_partial_indexes(db: Database) -> None:
    """Every index is paid for on every insert: index only the rows the daemon looks up
    (unpriced, pending deferred), and none for the response id nobody queries by."""
    for name in ("idx_calls_cost_source", "idx_calls_deferred_state", "idx_calls_response_id"):
        db.execute(f"drop index if exists {name}")
    db.execute(f"create index idx_calls_unpriced on calls (cost_source) where {TO_PRICE}")
    db.execute(
        "create index idx_calls_pending on calls (deferred_state) where deferred_state = 'pending'"
    )


def m007_no_model_index(db: Database) -> None:
    """Reports filter by time and group in memory; the (model, started_at) index cost every
    insert and served no query of the daemon's."""
    db.execute("drop index if exists idx_calls_model_started_at")


def m008_upstream_error(db: Database) -> None:
    """error_detail had two meanings: the relay's account of a failure, and, on an upstream
    4xx/5xx or an error event, the upstream's own code. The code moves to its own column."""
    _add_column(db, "calls", "upstream_error", str)
    db.execute(
        "update calls set upstream_error = error_detail, error_detail = null "
        "where error = 'http_error' or (error is null and error_detail is not null)"
    )


def m009_rules_multiplier_image_tiers(db: Database) -> None:
    """What repricing a call needs beyond its usage: the upstream's price multiplier and an
    image call's quality/resolution; and the listings' image price tiers (JSON)."""
    for name, kind in _CALL_COLUMNS_M009_RULES.items():
        _add_column(db, "calls", name, kind)
    _add_column(db, "prices", "image_tiers", str)


def m010_anthropic_cache_creation(db: Database) -> None:
    """Cache writes take Anthropic's standard name, and their 1-hour part its own column (the two
    durations bill differently). Old rows keep their counts; with no 1-hour part recorded they
    count as 5-minute writes. ``cached_input_tokens`` stays the cache-read count."""
    for old, new in _RENAMED_M010.items():
        db.execute(f"alter table calls rename column {old} to {new}")
    for name, kind in _CALL_COLUMNS_M010.items():
        _add_column(db, "calls", name, kind)


def m011_transport(db: Database) -> None:
    """How the client reached the daemon: ``http`` (every row before this), ``grpc`` (the gRPC
    relay, xai-sdk's calls) or ``websocket``. Not null, so a report can group by it as it is."""
    db.execute("alter table calls add column transport text not null default 'http'")


def m012_catalog_units(db: Database) -> None:
    """Products priced by the unit from the price catalog (issue 11: text-to-speech per
    character, speech-to-text and realtime voice per second of audio, video per second): the
    rate that priced a call and its quantities, so a repricing or a report reads them back.
    NULL on every other row."""
    for name, kind in _CALL_COLUMNS_M012.items():
        _add_column(db, "calls", name, kind)


def m013_video_batches(db: Database) -> None:
    """Video and the Batch API (issue 11). ``video_request``: what a video POST asked that
    prices its result ("KIND/RESOLUTION/IMAGES"), so a result polled after a restart is priced
    as asked. A Batch API result is billed once: its row (endpoint ``batches.result``) is
    unique by batch id (``linked_id``) and ``batch_request_id`` (``response_id``). The daemon
    keeps that in memory (`daemon.meter.batches`), loading these keys at start through this
    index; the index is also the last guard (a second row would replace the first)."""
    for name, kind in _CALL_COLUMNS_M013.items():
        _add_column(db, "calls", name, kind)
    db.execute(
        "create unique index idx_calls_batch_result on calls (linked_id, response_id) "
        "where endpoint = 'batches.result'"
    )


def m014_billed_usage(db: Database) -> None:
    """xAI's own bill (issue 13): what ``POST /v1/billing/teams/{id}/usage`` said was charged,
    per UTC day (``YYYY-MM-DD``), xAI ``api_key_id`` and ``unit_type``: ``usd`` as xAI gave it
    (a float), ``ticks`` its exact integer (round(usd * 1e10)), ``fetched_at`` (epoch seconds).
    A day pulled again replaces every row of that day (`daemon.ledger.billing`). ``billed_days``:
    each day a pull covered, and when (a day with no charges has no ``billed_usage`` row)."""
    _create_table(
        db,
        "billed_usage",
        {
            "day": str,
            "api_key_id": str,
            "unit_type": str,
            "usd": float,
            "ticks": int,
            "fetched_at": float,
        },
        pk=("day", "api_key_id", "unit_type"),
        not_null={"day", "api_key_id", "unit_type", "usd", "ticks", "fetched_at"},
    )
    # Every day a pull covered, charged or not: a day xAI billed nothing is $0, not unknown.
    _create_table(
        db,
        "billed_days",
        {"day": str, "fetched_at": float},
        pk="day",
        not_null={"day", "fetched_at"},
    )


def m015_instance(db: Database) -> None:
    """Several daemons may share one ledger (PostgreSQL, issue 15): each row names the one that
    wrote it (``ledger.instance``, default the host name). NULL on rows written before."""
    for name, kind in _CALL_COLUMNS_M015.items():
        _add_column(db, "calls", name, kind)


def m016_fingerprint_current(db: Database) -> None:
    """The fleet's current fingerprint per (provider, model), so that a change seen by several
    daemons sharing the ledger is recorded once: the first to move ``fingerprint`` to the new
    value records it (`daemon.ledger.store.save_fingerprint_change`), the others find it moved.
    ``previous``: the value it replaced; ``changed_at``: the call that showed it (epoch s).
    Filled from ``fingerprints`` (each model's last seen)."""
    _create_table(
        db,
        "fingerprint_current",
        {
            "provider": str,
            "model": str,
            "fingerprint": str,
            "previous": str,
            "changed_at": float,
        },
        pk=("provider", "model"),
        not_null={"provider", "model", "fingerprint"},
    )
    latest: dict[tuple[str, str], tuple[float, str]] = {}
    for provider, model, fingerprint, last_seen in db.execute(
        "select provider, model, fingerprint, last_seen from fingerprints"
    ).fetchall():
        if (provider, model) not in latest or last_seen > latest[(provider, model)][0]:
            latest[(provider, model)] = (last_seen, fingerprint)
    db.conn.executemany(
        "insert into fingerprint_current (provider, model, fingerprint, changed_at) "
        "values (?, ?, ?, ?)",
        [(p, m, fp, at) for (p, m), (at, fp) in sorted(latest.items())],
    )


MIGRATIONS: list[Callable[[Database], None]] = [
    m001_calls,
    m002_meta,
    m003_prices,
    m004_unpriced_index,
    m005_dialects_fingerprints_keys,
    m006_partial_indexes,
    m007_no_model_index,
    m008_upstream_error,
    m009_rules_multiplier_image_tiers,
    m010_anthropic_cache_creation,
    m011_transport,
    m012_catalog_units,
    m013_video_batches,
    m014_billed_usage,
    m015_instance,
    m016_fingerprint_current,
]


def migrate(db: Database) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; return their names.

    PostgreSQL: each transaction first takes an advisory lock (`daemon.ledger.engine.
    serialized`) and then reads whether its migration is applied, so of several daemons
    starting together on one ledger one applies each migration and the others, waiting on
    the lock, find it done."""
    applied_at = "double precision" if is_pg(db) else "real"
    with db.conn:
        serialized(db, "migrations")
        db.execute(
            f"create table if not exists _migrations (name text primary key, applied_at "
            f"{applied_at})"
        )
    done = {row[0] for row in db.execute("select name from _migrations").fetchall()}
    applied = []
    for migration in MIGRATIONS:
        name = migration.__name__
        if name in done:
            continue
        with db.conn:
            serialized(db, "migrations")
            if db.execute("select 1 from _migrations where name = ?", [name]).fetchone():
                continue  # another daemon applied it while this one waited
            migration(db)
            db.execute(
                "insert into _migrations (name, applied_at) values (?, ?)", [name, time.time()]
            )
        applied.append(name)
    return applied


def open_database(
    path: str | os.PathLike[str],
    *,
    readonly: bool = False,
    busy_timeout_ms: int = 5000,
    warn: Callable[[str], None] | None = None,
) -> sqlite_utils.Database:
    """A connection with the settings every user of the ledger needs; it waits up to
    ``busy_timeout_ms`` for a lock another connection holds.

    ``readonly``: SQLite's ``mode=ro``. A ledger in WAL mode on a read-only file system cannot
    be opened so (SQLite cannot make its ``-shm`` file there: "unable to open database file");
    it is then opened ``immutable=1`` (no locks, no ``-shm``: nothing can write it there
    anyway). Immutable reading does not see a ``-wal`` file's rows; when a non-empty one lies
    beside the ledger, ``warn`` (if given) is called with one line saying so. Raises
    `sqlite3.Error` as SQLite does (a missing file, not a database)."""
    if readonly:
        uri = Path(path).resolve().as_uri()
        conn = sqlite3.connect(uri + "?mode=ro", uri=True, check_same_thread=False)
        try:
            conn.execute("pragma schema_version").fetchone()  # opens the file (lazily opened)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_CANTOPEN or not Path(path).is_file():
                conn.close()
                raise
            conn.close()
            conn = _open_immutable(Path(path), uri, warn)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute(f"pragma busy_timeout = {int(busy_timeout_ms)}")
    db = sqlite_utils.Database(conn)
    if not readonly:
        db.enable_wal()
        conn.execute("pragma synchronous = normal")
        # Checkpoint the WAL every ~40 MB rather than every ~4 MB: fewer, larger copies.
        conn.execute("pragma wal_autocheckpoint = 10000")
    return db


def _open_immutable(path: Path, uri: str, warn: Callable[[str], None] | None) -> sqlite3.Connection:
    """`path` opened ``immutable=1`` (after ``mode=ro`` could not open it: a WAL ledger on a
    read-only file system); ``warn`` told when a ``-wal`` file holds rows this cannot see."""
    conn = sqlite3.connect(uri + "?immutable=1", uri=True, check_same_thread=False)
    conn.execute("pragma schema_version").fetchone()  # not a database: raises here
    wal = path.with_name(path.name + "-wal")
    size = wal.stat().st_size if wal.is_file() else 0
    if size and warn is not None:
        warn(
            f"{path} is read-only here and its write-ahead log ({wal.name}, {size:,} bytes) "
            "holds calls not yet copied into it, which this does not show: stop the daemon "
            "that wrote it cleanly (it checkpoints at exit), or copy both files somewhere "
            "writable and read that copy"
        )
    return conn
