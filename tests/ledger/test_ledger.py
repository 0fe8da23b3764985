"""Ledger schema, migrations and the batched writer."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlite_utils

from daemon.ledger import CALL_COLUMNS, MIGRATIONS, Ledger, migrate, open_database
from daemon.record import CallRecord, Usage
from daemon.testing import make_record


def test_migrations_are_applied_once_in_order(tmp_path: Path) -> None:
    db = open_database(tmp_path / "l.db")
    assert migrate(db) == [m.__name__ for m in MIGRATIONS]
    assert migrate(db) == []
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert set(db["calls"].columns_dict) == set(CALL_COLUMNS)  # type: ignore[union-attr]
    assert [r[0] for r in db.execute("select name from _migrations order by rowid")] == [
        m.__name__ for m in MIGRATIONS
    ]


def test_issue_required_columns_exist() -> None:
    required = {
        "id",
        "started_at",
        "provider",
        "endpoint",
        "method",
        "status",
        "stream",
        "requested_model",
        "model",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "image_input_tokens",
        "reported_cost_ticks",
        "fingerprint",
        "response_id",
        "duration_ms",
        "upstream_ms",
        "ttft_ms",
        "error",
        "key_id",
        "app",
        "metered",
    }
    assert set(required) <= set(CALL_COLUMNS)


def test_record_row_matches_the_schema() -> None:
    r = CallRecord(
        id="x", started_at=1.0, t0=0.0, provider="xai", endpoint="e", method="GET", path="/v1/x"
    )
    assert list(r.as_row()) == list(CALL_COLUMNS)


def test_m008_moves_the_upstreams_code_out_of_error_detail(tmp_path: Path) -> None:
    """A ledger made before m008: upstream codes sat in error_detail beside the relay's words."""
    db = open_database(tmp_path / "old.db")
    migrate(db)  # the whole chain, then pretend m008 never ran
    db.execute("alter table calls drop column upstream_error")
    db.execute("delete from _migrations where name = 'm008_upstream_error'")
    rows = [
        ("http", "http_error", "rate_limit_exceeded"),  # upstream 4xx: its code
        ("event", None, "Internal error"),  # an error event mid-stream: the upstream's code
        ("cut", "upstream_disconnect", "at chunk"),  # the relay's own words stay
        ("fine", None, None),
    ]
    with db.conn:
        db.conn.executemany(
            "insert into calls (id, started_at, provider, endpoint, method, path, error, "
            "error_detail, metered) values (?, 0, 'xai', 'e', 'POST', '/v1/x', ?, ?, 1)",
            rows,
        )
    assert migrate(db) == ["m008_upstream_error"]
    got = {r[0]: r[1:] for r in db.execute("select id, error_detail, upstream_error from calls")}
    assert got == {
        "http": (None, "rate_limit_exceeded"),
        "event": (None, "Internal error"),
        "cut": ("at chunk", None),
        "fine": (None, None),
    }


@pytest.mark.parametrize("interval", [0.0, 0.01])
async def test_writer_batches_and_flushes_on_close(tmp_path: Path, interval: float) -> None:
    written: list[int] = []
    ledger = Ledger(
        tmp_path / "l.db", batch_size=3, on_written=written.append, flush_interval=interval
    )
    await ledger.open()
    ledger.start()
    for i in range(7):
        ledger.submit(
            CallRecord(
                id=f"c{i}",
                started_at=float(i),
                t0=0.0,
                provider="xai",
                endpoint="chat.completions",
                method="POST",
                path="/v1/x",
                usage=Usage(input_tokens=i),
            )
        )
    await ledger.close()
    assert sum(written) == 7 and max(written) <= 3
    if interval:
        assert written == [3, 3, 1]  # the interval let full batches gather
    rows = list(
        sqlite_utils.Database(tmp_path / "l.db").query(
            "select id, input_tokens from calls order by id"
        )
    )
    assert rows == [{"id": f"c{i}", "input_tokens": i} for i in range(7)]


@pytest.mark.parametrize("readonly", [True])
def test_readonly_connection_cannot_write(tmp_path: Path, readonly: bool) -> None:
    db = open_database(tmp_path / "l.db")
    migrate(db)
    ro = open_database(tmp_path / "l.db", readonly=readonly)
    with pytest.raises(Exception, match="readonly"):
        ro.execute("insert into meta values ('a', 'b')")


async def test_retention_deletes_only_old_calls(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from daemon import config
    from daemon.app import Clocks, Daemon

    now = 10 * 86400.0
    settings = config.from_mapping(
        {
            "relay": {"port": 0},
            "grpc": {"port": 0},  # no gRPC listener: its default port may be taken
            "admin": {"port": 0},
            "ledger": {"path": str(tmp_path / "l.db"), "retention_days": 2, "flush_interval": 0},
            "pricing": {"refresh": False},
        }
    )
    daemon = Daemon(settings, registry=CollectorRegistry(), clocks=Clocks(wall=lambda: now))
    await daemon.start()
    try:
        for i, age_days in enumerate((5, 3, 2.5, 1, 0)):
            daemon.ledger.submit(
                CallRecord(
                    id=f"c{i}",
                    started_at=now - age_days * 86400,
                    t0=0.0,
                    provider="xai",
                    endpoint="e",
                    method="GET",
                    path="/v1/x",
                )
            )
        await daemon.ledger.drained()
        assert await daemon.retention.apply() == 3
        left = await daemon.ledger.run_in_writer(
            lambda: [r[0] for r in daemon.ledger.db().execute("select id from calls")]
        )
        assert sorted(left) == ["c3", "c4"]
        assert daemon.registry.get_sample_value("xai_meter_ledger_rows_deleted_total") == 3
    finally:
        await daemon.stop()


def test_a_backfilled_image_row_gets_its_resolved_model(tmp_path: Path) -> None:
    """An image call priced after the fact: pricing resolves the requested alias, and the
    ledger's row takes that model along with the cost."""
    from daemon.ledger.store import insert_calls, reprice_unpriced
    from daemon.pricing import ModelPrice, PriceBook, PriceSet
    from daemon.record import CostSource

    db = open_database(tmp_path / "l.db")
    migrate(db)
    record = CallRecord(
        id="img",
        started_at=10.0,
        t0=0.0,
        provider="xai",
        endpoint="images.generations",
        method="POST",
        path="/v1/images/generations",
        status=200,
        billable=True,
        requested_model="grok-imagine",
        usage=Usage(images=2),
        cost_source=CostSource.UNPRICED,
    )
    with db.conn:
        insert_calls(db, [record])
    imagine = ModelPrice("grok-imagine-image", aliases=("grok-imagine",), image=200_000_000)
    book = PriceBook([PriceSet.of([imagine], effective_at=0.0, id=1)])
    assert [r.id for r in reprice_unpriced(db, book.price_record)] == ["img"]
    row = next(db.query("select model, cost_ticks, cost_source from calls"))
    assert row == {
        "model": "grok-imagine-image",
        "cost_ticks": 400_000_000,
        "cost_source": "computed",
    }


def test_one_batch_of_rows_with_different_null_columns_lands_column_for_column(
    tmp_path: Path,
) -> None:
    """Each row names only its non-NULL columns and rows are grouped by that shape: in a
    batch that mixes shapes (and interleaves them), every value still lands in its own column
    and every empty one reads NULL, in the order the calls came."""
    from daemon.ledger.store import insert_calls
    from daemon.record import CallError, CostSource, DeferredState, Unmetered

    db = open_database(tmp_path / "l.db")
    migrate(db)
    metered = dict(
        usage=Usage(input_tokens=10, cached_input_tokens=4, output_tokens=3, reasoning_tokens=1),
        model="grok-4",
        fingerprint="fp_1",
        cost_ticks=123,
        computed_cost_ticks=123,
        cost_source=CostSource.COMPUTED,
        price_id=7,
        request_id="req-1",
    )
    records = [
        make_record(id="a", started_at=1.0, **metered),
        make_record(id="b", started_at=2.0, status=None, error=CallError.UPSTREAM_UNREACHABLE),
        make_record(id="c", started_at=3.0, **metered, deferred_state=DeferredState.PENDING),
        make_record(id="d", started_at=4.0, unmetered_reason=Unmetered.NO_USAGE, app="ui"),
        make_record(id="e", started_at=5.0, **metered),
    ]
    with db.conn:
        insert_calls(db, records)
    stored = list(db.query("select * from calls order by started_at"))
    assert [row["id"] for row in stored] == ["a", "b", "c", "d", "e"]
    assert stored == [
        {column: record.as_row()[column] for column in stored[0]} for record in records
    ]
    assert stored[1]["status"] is None and stored[1]["input_tokens"] is None
    assert stored[2]["deferred_state"] == "pending" and stored[0]["deferred_state"] is None
