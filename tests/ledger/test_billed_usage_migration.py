"""m014: xAI's bill per day, key and unit type, and the ledger's cost in the same shape."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from daemon.ledger import migrate, open_database
from daemon.ledger.billing import (
    BilledRow,
    LedgerCost,
    api_key_names,
    day_start,
    days_between,
    ledger_costs,
    load_billed_usage,
    pulled_days,
    save_billed_usage,
)
from daemon.ledger.schema import MIGRATIONS, m014_billed_usage
from daemon.ledger.store import insert_calls, save_key_name
from daemon.record import CostSource, Unmetered, Usage
from daemon.testing import make_record

DAY = "2026-03-04"
T0 = 1772582400.0  # 2026-03-04T00:00:00Z


def _ledger(tmp_path: Path) -> sqlite_utils.Database:
    db = open_database(tmp_path / "ledger.db")
    assert "m014_billed_usage" in migrate(db)
    return db


def test_the_migration_runs_on_a_ledger_of_m013(tmp_path: Path) -> None:
    db = open_database(tmp_path / "ledger.db")
    db.execute("create table _migrations (name text primary key, applied_at real)")
    for migration in MIGRATIONS[: MIGRATIONS.index(m014_billed_usage)]:
        migration(db)
        db.execute("insert into _migrations (name, applied_at) values (?, 0)", [migration.__name__])
    assert migrate(db)[0] == "m014_billed_usage"
    assert db["billed_usage"].pks == ["day", "api_key_id", "unit_type"]  # type: ignore[union-attr]
    assert migrate(db) == []


def test_a_day_pulled_again_replaces_itself(tmp_path: Path) -> None:
    db = _ledger(tmp_path)
    first = [
        BilledRow(DAY, "k1", "input_tokens", 0.0123, 123_000_000),
        BilledRow(DAY, "k1", "output_tokens", 1.5, 15_000_000_000),
        BilledRow("2026-03-05", "k1", "input_tokens", 0.25, 2_500_000_000),
    ]
    assert save_billed_usage(db, [DAY, "2026-03-05"], first, fetched_at=100.0) == 3
    # Pulled again: 03-04 lost a unit type and changed another; 03-05 came back empty;
    # 03-03 was not pulled and stays.
    save_billed_usage(db, ["2026-03-03"], [BilledRow("2026-03-03", "k2", "x", 1.0, 10**10)], 50.0)
    again = [BilledRow(DAY, "k1", "input_tokens", 0.0125, 125_000_000)]
    save_billed_usage(db, [DAY, "2026-03-05"], again, fetched_at=200.0)
    rows, fetched = load_billed_usage(db, "2026-03-01", "2026-03-31")
    assert rows == [BilledRow("2026-03-03", "k2", "x", 1.0, 10**10), *again]
    assert fetched == 200.0
    assert load_billed_usage(db, "2026-03-03", "2026-03-03") == (
        [BilledRow("2026-03-03", "k2", "x", 1.0, 10**10)],
        50.0,
    )
    assert load_billed_usage(db, "2026-04-01", "2026-04-02") == ([], None)
    # 03-05 came back empty: still a day pulled (billed $0), not a day unknown
    assert pulled_days(db, "2026-03-01", "2026-03-31") == ["2026-03-03", DAY, "2026-03-05"]
    assert load_billed_usage(db, "2026-03-05", "2026-03-05") == ([], 200.0)
    assert pulled_days(db, "2026-04-01", "2026-04-02") == []


def test_ledger_cost_per_day_key_and_class(tmp_path: Path) -> None:
    db = _ledger(tmp_path)
    with db.conn:
        save_key_name(db, ("kid-a", "prod", "team", "api-a", 1.0))
        save_key_name(db, ("kid-b", "dev", "team", None, 1.0))  # not joined yet
        insert_calls(
            db,
            [
                make_record(id="1", started_at=T0, key_id="kid-a", cost_ticks=1_000),
                make_record(id="2", started_at=T0 + 86_399.9, key_id="kid-a", cost_ticks=2_000),
                make_record(
                    id="3", started_at=T0 + 5, key_id="kid-a", cost_ticks=300,
                    endpoint="images.generations",
                ),
                make_record(
                    id="4", started_at=T0 + 6, key_id="kid-a", cost_ticks=40,
                    endpoint="audio.speech", usage=Usage(catalog_rate="tts", characters=10),
                ),
                make_record(
                    id="5", started_at=T0 + 7, key_id="kid-a", cost_ticks=5,
                    endpoint="batches.result",
                ),
                make_record(
                    id="6", started_at=T0 + 8, key_id="kid-a", cost_ticks=6,
                    endpoint="videos.result", usage=Usage(catalog_rate="video:720p"),
                ),
                # the next day, and the day before: outside the range asked
                make_record(id="7", started_at=T0 + 86_400, key_id="kid-a", cost_ticks=7),
                make_record(id="8", started_at=T0 - 0.1, key_id="kid-a", cost_ticks=8),
                # not joined: a key without api_key_id, a key never named, no key at all
                make_record(id="9", started_at=T0 + 9, key_id="kid-b", cost_ticks=900),
                make_record(id="10", started_at=T0 + 10, key_id="kid-c", cost_ticks=1_000),
                make_record(id="11", started_at=T0 + 11, key_id=None, cost_ticks=None,
                            cost_source=CostSource.UNPRICED),
                make_record(id="12", started_at=T0 + 12, key_id="kid-b",
                            unmetered_reason=Unmetered.NO_USAGE),
                # another upstream is not on xAI's bill
                make_record(id="13", started_at=T0 + 13, key_id="kid-a", cost_ticks=99,
                            provider="openai"),
            ],
        )  # fmt: skip
    assert ledger_costs(db, DAY, DAY) == [
        LedgerCost(DAY, None, "text", 1_900, 4, 1, 1, (("no_usage", 1),)),
        LedgerCost(DAY, "api-a", "batch", 5, 1, 0, 0),
        LedgerCost(DAY, "api-a", "image", 300, 1, 0, 0),
        LedgerCost(DAY, "api-a", "text", 3_000, 2, 0, 0),
        LedgerCost(DAY, "api-a", "video", 6, 1, 0, 0),
        LedgerCost(DAY, "api-a", "voice", 40, 1, 0, 0),
    ]
    assert [c.day for c in ledger_costs(db, "2026-03-03", "2026-03-05")] == [
        "2026-03-03", *[DAY] * 6, "2026-03-05",
    ]  # fmt: skip
    assert api_key_names(db) == {"api-a": "prod"}


def test_days() -> None:
    assert day_start(DAY) == T0
    assert days_between("2026-02-27", "2026-03-01") == ["2026-02-27", "2026-02-28", "2026-03-01"]
    assert days_between(DAY, DAY) == [DAY]
