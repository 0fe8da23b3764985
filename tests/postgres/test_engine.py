"""The ledger on PostgreSQL (issue 15): the same schema and named migrations (run once however
many daemons start together), the same batched writer and its failure handling, and the
statements written once reading alike on both engines.

Every test runs on the session's throwaway cluster (the ``postgres`` fixture), each in a new
database (``pg_url``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.cli import main
from daemon.config import ConfigError
from daemon.ledger import CALL_COLUMNS, MIGRATIONS, Ledger, migrate, open_database
from daemon.ledger.billing import BilledRow, ledger_costs, load_billed_usage, save_billed_usage
from daemon.ledger.engine import Database, PgDatabase, open_ledger, redact
from daemon.ledger.prices import load_price_history, save_price_set
from daemon.ledger.reports import REPORT_GROUPS, report
from daemon.ledger.store import (
    all_calls,
    delete_calls_before,
    fingerprint_history,
    insert_calls,
    missing_ids,
    save_fingerprint_change,
    save_key_name,
)
from daemon.pricing.book import PriceSet
from daemon.pricing.model import ModelPrice
from daemon.record import CallError, CostSource, Unmetered, Usage
from daemon.testing import PgCluster, eventually, free_port, make_record
from daemon.windows import Window

T0 = 1772582400.0  # 2026-03-04T00:00:00Z


def _pg(url: str) -> PgDatabase:
    db = PgDatabase.connect(url)
    migrate(db)
    return db


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated ledger of each engine: a statement must read the same on both."""
    if request.param == "sqlite":
        found: Database = open_database(tmp_path / "ledger.db")
        migrate(found)
    else:
        found = _pg(request.getfixturevalue("pg_url"))
    try:
        yield found
    finally:
        found.close()


def _columns(db: PgDatabase, table: str) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in db.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_name = ? order by ordinal_position",
            [table],
        )
    ]


def test_the_schema_and_its_migrations_are_the_same_on_postgresql(pg_url: str) -> None:
    db = PgDatabase.connect(pg_url)
    assert migrate(db) == [m.__name__ for m in MIGRATIONS]
    assert migrate(db) == []
    kinds = {str: "text", int: "bigint", float: "double precision"}
    assert _columns(db, "calls") == [(c, kinds[k]) for c, k in CALL_COLUMNS.items()]
    names = [r[0] for r in db.execute("select name from _migrations order by name")]
    assert names == sorted(m.__name__ for m in MIGRATIONS)
    tables = {
        r[0]
        for r in db.execute(
            "select table_name from information_schema.tables where table_schema = 'public'"
        )
    }
    sqlite = open_database(":memory:")
    migrate(sqlite)
    assert tables == set(sqlite.table_names())
    indexes = {
        r[0] for r in db.execute("select indexname from pg_indexes where tablename = 'calls'")
    }
    assert indexes == {
        "calls_pkey",
        "idx_calls_started_at",
        "idx_calls_unpriced",
        "idx_calls_pending",
        "idx_calls_batch_result",
    }
    db.close()


def test_migrations_run_once_when_several_daemons_start_together(pg_url: str) -> None:
    """Four connections migrate one new database at the same moment: under the advisory lock
    each migration is applied once, by whichever holds it first; the others find it done;
    none fails."""
    starting = threading.Barrier(4)
    applied: list[list[str]] = []
    failed: list[BaseException] = []

    def start() -> None:
        db = PgDatabase.connect(pg_url)
        try:
            starting.wait(timeout=10)
            applied.append(migrate(db))
        except BaseException as exc:  # reported by the assertion below
            failed.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failed
    # Each migration applied by exactly one of them (whichever held the lock first), in order.
    every = sorted(name for names in applied for name in names)
    assert every == [m.__name__ for m in MIGRATIONS] and len(applied) == 4
    assert all(names == sorted(names) for names in applied)
    db = PgDatabase.connect(pg_url)
    assert db.execute("select count(*) from _migrations").fetchone()[0] == len(MIGRATIONS)
    db.close()


def _records(count: int, prefix: str = "c", **fields: Any) -> list[Any]:
    return [
        make_record(
            id=f"{prefix}{i:04d}",
            started_at=T0 + i,
            model="grok-4",
            fingerprint="fp_a",
            usage=Usage(input_tokens=10 + i, output_tokens=2),
            cost_ticks=1000 + i,
            key_id="k1",
            **fields,
        )
        for i in range(count)
    ]


async def test_the_writer_writes_batches_with_the_instance(pg_url: str, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db", url=pg_url, instance="host-a", batch_size=7)
    await ledger.open()
    ledger.start()
    ledger.submit_batch(_records(40))
    await ledger.drained()
    await ledger.close()
    assert not (tmp_path / "ledger.db").exists()  # the journal sits beside it; no SQLite file
    db = PgDatabase.connect(pg_url)
    rows = all_calls(db)
    assert [r["id"] for r in rows] == [f"c{i:04d}" for i in range(40)]
    assert {r["instance"] for r in rows} == {"host-a"}
    assert sum(r["cost_ticks"] for r in rows) == 40 * 1000 + sum(range(40))
    seen, _ = fingerprint_history(db)
    assert [(s["fingerprint"], s["calls"], s["first_seen"], s["last_seen"]) for s in seen] == [
        ("fp_a", 40, T0, T0 + 39)
    ]
    db.close()


async def test_a_row_postgresql_refuses_is_stored_clamped_the_rest_as_they_are(
    pg_url: str, tmp_path: Path
) -> None:
    """A value past 64 bits (bigint out of range) and a NUL in text (PostgreSQL's text has
    none) take only their own row aside, never the batch."""
    ledger = Ledger(tmp_path / "ledger.db", url=pg_url, instance="a")
    await ledger.open()
    ledger.start()
    records = _records(3)
    records[1].usage = Usage(input_tokens=2**70, output_tokens=1)
    records[2].model = "grok\x00-4"
    ledger.submit_batch(records)
    await ledger.drained()
    await ledger.close()
    db = PgDatabase.connect(pg_url)
    rows = {r["id"]: r for r in all_calls(db)}
    assert rows["c0000"]["metered"] == 1 and rows["c0000"]["input_tokens"] == 10
    assert rows["c0001"]["input_tokens"] == 2**63 - 1
    assert (rows["c0001"]["metered"], rows["c0001"]["unmetered_reason"]) == (0, "out_of_range")
    assert rows["c0002"]["model"] == "grok\ufffd-4" and rows["c0002"]["metered"] == 1
    db.close()


async def test_a_lost_connection_is_a_failure_retried_on_a_new_one(
    pg_url: str, tmp_path: Path
) -> None:
    """The server ends the writer's connection (a restart, a failover): the next batch fails,
    the ledger reads unhealthy, and the retry connects again; nothing is lost."""
    errors: list[int] = []
    ledger = Ledger(
        tmp_path / "ledger.db",
        url=pg_url,
        instance="a",
        on_error=lambda: errors.append(1),
        retry_wait=lambda attempt: 0.01,
    )
    await ledger.open()
    ledger.start()
    ledger.submit_batch(_records(5))
    await ledger.drained()
    admin = PgDatabase.connect(pg_url)
    ended = admin.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity "
        "where datname = current_database() and pid <> pg_backend_pid()"
    ).fetchall()
    assert ended == [(True,)]
    ledger.submit_batch(_records(5, prefix="d"))
    await ledger.drained()
    assert ledger.healthy and errors == [1]
    await ledger.close()
    assert len(all_calls(admin)) == 10
    admin.close()


async def test_postgresql_out_of_reach_stops_the_start_naming_ledger_url(tmp_path: Path) -> None:
    url = f"postgresql://meter:s3cret@127.0.0.1:{free_port()}/ledger"
    ledger = Ledger(tmp_path / "ledger.db", url=url)
    with pytest.raises(ConfigError) as caught:
        await ledger.open()
    await ledger.close()
    message = str(caught.value)
    assert message.startswith("ledger.url = 'postgresql://meter:***@127.0.0.1:"), message
    assert "s3cret" not in message and "Connection refused" in message
    assert "Fix: check that PostgreSQL runs there" in message
    assert redact("postgres://u@h/db") == "postgres://u@h/db"


def test_a_fingerprint_change_is_recorded_once_however_many_daemons_see_it(pg_url: str) -> None:
    """Two daemons' connections see grok-4 go from fp_a to fp_b: the first to move the fleet's
    current fingerprint records the change; the second finds it moved. A third that missed
    the change and sees fp_c records fp_b -> fp_c (the ledger's previous value)."""
    a, b, c = _pg(pg_url), PgDatabase.connect(pg_url), PgDatabase.connect(pg_url)
    change = (T0, "xai", "grok-4", "fp_a", "fp_b", "new")
    with a.conn:
        assert save_fingerprint_change(a, change) is True
    with b.conn:
        assert save_fingerprint_change(b, (T0 + 1, *change[1:])) is False
    with c.conn:
        assert save_fingerprint_change(c, (T0 + 2, "xai", "grok-4", "fp_a", "fp_c", "new"))
    _, changes = fingerprint_history(a)
    assert [(x["at"], x["old"], x["new"]) for x in changes] == [
        (T0, "fp_a", "fp_b"),
        (T0 + 2, "fp_b", "fp_c"),
    ]
    for db in (a, b, c):
        db.close()


def test_concurrent_fingerprint_changes_record_one(pg_url: str) -> None:
    """Both transactions are open at once: the second waits for the first's row, then finds
    the fingerprint moved (PostgreSQL re-reads an updated row before it compares)."""
    a, b = _pg(pg_url), PgDatabase.connect(pg_url)
    with a.conn:
        assert save_fingerprint_change(a, (T0, "xai", "grok-4", "fp_0", "fp_a", "new"))
    results: list[bool] = []
    with a.conn:
        results.append(save_fingerprint_change(a, (T0 + 1, "xai", "grok-4", "fp_a", "fp_b", "new")))
        waiting = threading.Thread(
            target=lambda: results.append(
                _in_transaction(b, (T0 + 2, "xai", "grok-4", "fp_a", "fp_b", "new"))
            )
        )
        waiting.start()
        waiting.join(timeout=0.5)  # it blocks on a's row lock until a commits
        assert waiting.is_alive()
    waiting.join(timeout=10)
    assert results == [True, False]
    assert a.execute("select count(*) from fingerprint_changes").fetchone()[0] == 2
    a.close()
    b.close()


def _in_transaction(db: PgDatabase, row: tuple[Any, ...]) -> bool:
    with db.conn:
        return save_fingerprint_change(db, row)


def test_daemons_share_the_price_history(pg_url: str) -> None:
    """A listing change both daemons fetch is one price set, with one id for both."""
    a, b = _pg(pg_url), PgDatabase.connect(pg_url)
    models = [ModelPrice(model="grok-4", input=30000, output=150000)]
    first = PriceSet.of(models, effective_at=T0, fetched_at=T0)
    again = PriceSet.of(models, effective_at=T0 + 60, fetched_at=T0 + 60)
    assert save_price_set(a, first) == save_price_set(b, again) == 1
    history = load_price_history(b)
    assert [(p.id, p.fetched_at) for p in history] == [(1, T0 + 60)]
    assert history[0].models["grok-4"].output == 150000
    a.close()
    b.close()


def test_the_statements_read_alike_on_both_engines(db: Database) -> None:
    """Bill, ledger costs, key names, fingerprints, retention, replay's look-up: each is
    written once and gives the same answer on SQLite and PostgreSQL."""
    unread = make_record(
        id="u0", started_at=T0 + 3, key_id="k1", unmetered_reason=Unmetered.NO_USAGE
    )
    with db.conn:
        insert_calls(db, [*_records(3), unread])
        save_key_name(db, ("k1", "prod", "team", "api-1", T0))
        save_key_name(db, ("k1", "prod-2", "team", "api-1", T0 + 1))  # an upsert
    save_billed_usage(db, ["2026-03-04"], [BilledRow("2026-03-04", "api-1", "tokens", 1.5, 15)], T0)
    save_billed_usage(db, ["2026-03-04"], [BilledRow("2026-03-04", "api-1", "tokens", 2.5, 25)], T0)
    billed, fetched = load_billed_usage(db, "2026-03-04", "2026-03-05")
    assert billed == [BilledRow("2026-03-04", "api-1", "tokens", 2.5, 25)] and fetched == T0
    costs = ledger_costs(db, "2026-03-04", "2026-03-04")
    assert [tuple(c) for c in costs] == [
        ("2026-03-04", "api-1", "text", 3003, 4, 0, 1, (("no_usage", 1),))
    ]
    assert db.execute("select name from api_keys").fetchall() == [("prod-2",)]
    assert missing_ids(db, ["c0000", "x"]) == {"x"}
    with db.conn:
        assert save_fingerprint_change(db, (T0, "xai", "grok-4", "fp_a", "fp_b", "new"))
    seen, changes = fingerprint_history(db, "grok-4")
    assert [(s["calls"], s["last_seen"]) for s in seen] == [(3, T0 + 2)]
    assert [(c["old"], c["new"], c["kind"]) for c in changes] == [("fp_a", "fp_b", "new")]
    assert delete_calls_before(db, T0 + 2, chunk=1) == 2
    assert [r["id"] for r in all_calls(db)] == ["c0002", "u0"]


def test_the_cli_reads_postgresql_by_url(pg_url: str) -> None:
    db = open_ledger(pg_url, readonly=True)
    assert isinstance(db, PgDatabase)
    db.close()


async def test_the_writer_waits_out_a_server_restart(postgres: PgCluster, tmp_path: Path) -> None:
    """PostgreSQL itself goes away and comes back (a cluster of this test's own): the writer
    reads unhealthy, keeps the rows queued, and writes them all once it can connect again."""
    cluster = PgCluster({"fsync": "off"})
    cluster.start()
    try:
        url = cluster.create_database("ledger")
        ledger = Ledger(tmp_path / "ledger.db", url=url, retry_wait=lambda attempt: 0.05)
        await ledger.open()
        ledger.start()
        cluster.stop_server()
        ledger.submit_batch(_records(5))

        async def unhealthy() -> bool:
            return not ledger.healthy

        await eventually(unhealthy, "the ledger reads unhealthy", 10)
        cluster.start_server()
        async with asyncio.timeout(20):
            await ledger.drained()
        assert ledger.healthy
        await ledger.close()
        db = PgDatabase.connect(url)
        assert len(all_calls(db)) == 5
        db.close()
    finally:
        cluster.stop()


def test_reports_read_alike_on_both_engines(pg_url: str, tmp_path: Path) -> None:
    """`xai-meter report`'s numbers, every grouping, in UTC and in another zone: the same
    from SQLite and from PostgreSQL holding the same rows."""
    sqlite = open_database(tmp_path / "ledger.db")
    migrate(sqlite)
    pg = _pg(pg_url)
    records = _records(6) + _records(3, prefix="e", app="batch", endpoint="batches.result")
    records[1].error = CallError.HTTP_ERROR
    records[2].unmetered_reason = Unmetered.NO_USAGE
    records[3].cost_source = CostSource.UNPRICED
    for i, record in enumerate(records):
        record.duration_ms = 10.0 + i
        record.started_at = T0 - 3 * 3600 + i * 3600  # across midnight UTC and in Paris
    for db in (sqlite, pg):
        with db.conn:
            insert_calls(db, records)
            save_key_name(db, ("k1", "prod", "team", "api-1", T0))
    for tz in ("UTC", "Europe/Paris"):
        window = Window(start=T0 - 86400, end=T0 + 86400, tz=tz, label="")
        for by in REPORT_GROUPS:
            assert report(pg, window, by) == report(sqlite, window, by), (tz, by)
    days = report(pg, Window(start=0, end=None, tz="UTC", label=""), "day")
    assert sorted((r["day"], r["calls"]) for r in days.rows) == [
        ("2026-03-03", 3),
        ("2026-03-04", 6),
    ]
    assert days.total["cost_ticks"] == sum(r.cost_ticks or 0 for r in records) == 9 * 1000 + 18
    sqlite.close()
    pg.close()


def test_the_commands_read_postgresql_by_url(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """prices, fingerprints and report take --ledger postgresql://...; a server out of reach
    is one line naming ledger.url (password hidden) and exit 2."""
    db = _pg(pg_url)
    models = [ModelPrice(model="grok-4", input=30000, output=150000)]
    save_price_set(db, PriceSet.of(models, effective_at=T0, fetched_at=T0))
    with db.conn:
        insert_calls(db, _records(2))
        save_fingerprint_change(db, (T0, "xai", "grok-4", "fp_0", "fp_a", "new"))
    db.close()
    capsys.readouterr()
    assert main(["prices", "--ledger", pg_url, "--format", "json"]) == 0
    prices = orjson.loads(capsys.readouterr().out)
    assert [p["model"] for p in prices] == ["grok-4"]
    assert main(["fingerprints", "--ledger", pg_url, "--format", "json"]) == 0
    shown = capsys.readouterr().out
    assert '"fp_a"' in shown and '"fp_0"' in shown
    gone = f"postgresql://meter:s3cret@127.0.0.1:{free_port()}/ledger"
    assert main(["report", "--ledger", gone]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xai-meter: config error: ledger.url = 'postgresql://meter:***@"), err
    assert len(err.splitlines()) == 1 and "s3cret" not in err
