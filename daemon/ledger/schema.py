"""Every table of the ledger and the named, ordered migrations that made them.

A migration is a function named ``mNNN_what``; `migrate` applies, in order, those not yet in
``_migrations`` (llm's ``migrations.py`` pattern). A migration is frozen once released: later
changes are new migrations, so the column lists below are the ones each migration made.
`open_database` gives every user of the ledger (the writer, the CLI's reports) the same
connection settings.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

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
}


# --- migrations: named, ordered, each applied once ------------------------------------------


def m001_calls(db: sqlite_utils.Database) -> None:
    db["calls"].create(_CALL_COLUMNS_M001, pk="id")  # type: ignore[union-attr]
    db["calls"].create_index(["started_at"])  # type: ignore[union-attr]
    db["calls"].create_index(["model", "started_at"])  # type: ignore[union-attr]
    db["calls"].create_index(["response_id"])  # type: ignore[union-attr]


def m002_meta(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")  # type: ignore[union-attr]


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


def m003_prices(db: sqlite_utils.Database) -> None:
    """Every fetched price set, kept forever: a call is priced at the set in force then."""
    db.table("price_sets").create(
        {"id": int, "effective_at": float, "fetched_at": float, "source": str, "digest": str},
        pk="id",
        if_not_exists=True,
    )
    db.table("prices").create(
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
TO_PRICE = "cost_source = 'unpriced' or (cost_source = 'reported' and computed_cost_ticks is null)"


def m006_partial_indexes(db: sqlite_utils.Database) -> None:
    """Every index is paid for on every insert: index only the rows the daemon looks up
    (unpriced, pending deferred), and none for the response id nobody queries by."""
    for name in ("idx_calls_cost_source", "idx_calls_deferred_state", "idx_calls_response_id"):
        db.execute(f"drop index if exists {name}")
    db.execute(f"create index idx_calls_unpriced on calls (cost_source) where {TO_PRICE}")
    db.execute(
        "create index idx_calls_pending on calls (deferred_state) where deferred_state = 'pending'"
    )


def m007_no_model_index(db: sqlite_utils.Database) -> None:
    """Reports filter by time and group in memory; the (model, started_at) index cost every
    insert and served no query of the daemon's."""
    db.execute("drop index if exists idx_calls_model_started_at")


def m008_upstream_error(db: sqlite_utils.Database) -> None:
    """error_detail had two meanings: the relay's account of a failure, and, on an upstream
    4xx/5xx or an error event, the upstream's own code. The code moves to its own column."""
    db["calls"].add_column("upstream_error", str)  # type: ignore[union-attr]
    db.execute(
        "update calls set upstream_error = error_detail, error_detail = null "
        "where error = 'http_error' or (error is null and error_detail is not null)"
    )


def m009_rules_multiplier_image_tiers(db: sqlite_utils.Database) -> None:
    """What repricing a call needs beyond its usage: the upstream's price multiplier and an
    image call's quality/resolution; and the listings' image price tiers (JSON)."""
    for name, kind in _CALL_COLUMNS_M009_RULES.items():
        db["calls"].add_column(name, kind)  # type: ignore[union-attr]
    db["prices"].add_column("image_tiers", str)  # type: ignore[union-attr]


def m010_anthropic_cache_creation(db: sqlite_utils.Database) -> None:
    """Cache writes take Anthropic's standard name, and their 1-hour part its own column (the two
    durations bill differently). Old rows keep their counts; with no 1-hour part recorded they
    count as 5-minute writes. ``cached_input_tokens`` stays the cache-read count."""
    for old, new in _RENAMED_M010.items():
        db.execute(f"alter table calls rename column {old} to {new}")
    for name, kind in _CALL_COLUMNS_M010.items():
        db["calls"].add_column(name, kind)  # type: ignore[union-attr]


def m011_transport(db: sqlite_utils.Database) -> None:
    """How the client reached the daemon: ``http`` (every row before this), ``grpc`` (the gRPC
    relay, xai-sdk's calls) or ``websocket``. Not null, so a report can group by it as it is."""
    db.execute("alter table calls add column transport text not null default 'http'")


def m012_catalog_units(db: sqlite_utils.Database) -> None:
    """Products priced by the unit from the price catalog (issue 11: text-to-speech per
    character, speech-to-text and realtime voice per second of audio, video per second): the
    rate that priced a call and its quantities, so a repricing or a report reads them back.
    NULL on every other row."""
    for name, kind in _CALL_COLUMNS_M012.items():
        db["calls"].add_column(name, kind)  # type: ignore[union-attr]


def m013_video_batches(db: sqlite_utils.Database) -> None:
    """Video and the Batch API (issue 11). ``video_request``: what a video POST asked that
    prices its result ("KIND/RESOLUTION/IMAGES"), so a result polled after a restart is priced
    as asked. A Batch API result is billed once: its row (endpoint ``batches.result``) is
    unique by batch id (``linked_id``) and ``batch_request_id`` (``response_id``). The daemon
    keeps that in memory (`daemon.meter.batches`), loading these keys at start through this
    index; the index is also the last guard (a second row would replace the first)."""
    for name, kind in _CALL_COLUMNS_M013.items():
        db["calls"].add_column(name, kind)  # type: ignore[union-attr]
    db.execute(
        "create unique index idx_calls_batch_result on calls (linked_id, response_id) "
        "where endpoint = 'batches.result'"
    )


def m014_billed_usage(db: sqlite_utils.Database) -> None:
    """xAI's own bill (issue 13): what ``POST /v1/billing/teams/{id}/usage`` said was charged,
    per UTC day (``YYYY-MM-DD``), xAI ``api_key_id`` and ``unit_type``: ``usd`` as xAI gave it
    (a float), ``ticks`` its exact integer (round(usd * 1e10)), ``fetched_at`` (epoch seconds).
    A day pulled again replaces every row of that day (`daemon.ledger.billing`). ``billed_days``:
    each day a pull covered, and when (a day with no charges has no ``billed_usage`` row)."""
    db["billed_usage"].create(  # type: ignore[union-attr]
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
    db["billed_days"].create(  # type: ignore[union-attr]
        {"day": str, "fetched_at": float}, pk="day", not_null={"day", "fetched_at"}
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
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
