"""The status page on a daemon whose ledger is PostgreSQL: its JSON API reads the shared
ledger (a read-only connection of its own, in a thread) and every number equals the rows';
and its queries give the same answers on both engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from daemon import simulator
from daemon.ledger import migrate, open_database
from daemon.ledger import status as queries
from daemon.ledger.engine import PgDatabase, open_ledger
from daemon.ledger.store import all_calls, insert_calls, save_key_name
from daemon.record import CallError, CostSource, Unmetered, Usage
from daemon.testing import DaemonFactory, make_record, status_traffic

T0 = 1772582400.0  # 2026-03-04T00:00:00Z


async def test_the_status_api_reads_the_postgresql_ledger(
    sim: simulator.Simulator, start_daemon: DaemonFactory, pg_url: str
) -> None:
    meter = await start_daemon(sim.url, ledger__url=pg_url)
    count = await status_traffic(sim.state, meter.base_url)
    await meter.daemon.ledger.wait_written(count)
    db = open_ledger(pg_url, readonly=True)
    rows = all_calls(db)
    db.close()
    answers: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        for path in (
            "/api/summary?since=2000-01-01T00:00&tz=Europe/Paris",
            "/api/calls",
            "/api/fingerprints",
        ):
            async with http.get(meter.admin_url + path) as response:
                assert response.status == 200, await response.text()
                answers[path.split("?")[0]] = await response.json()
    window = answers["/api/summary"]["totals"]["window"]
    assert window["calls"] == len(rows) == count
    assert window["cost_ticks"] == sum(r["cost_ticks"] or 0 for r in rows)
    assert window["input_tokens"] == sum(r["input_tokens"] or 0 for r in rows)
    assert (window["unmetered"], window["unpriced"], window["errors"]) == (1, 1, 1)
    assert answers["/api/calls"]["calls"][0]["id"] == max(r["id"] for r in rows)


def test_the_status_queries_read_alike_on_both_engines(pg_url: str, tmp_path: Path) -> None:
    sqlite = open_database(tmp_path / "ledger.db")
    migrate(sqlite)
    pg = PgDatabase.connect(pg_url)
    migrate(pg)
    records = [
        make_record(
            id=f"c{i:02d}",
            started_at=T0 + i * 1000.5,
            model=("grok-4", "grok-3")[i % 2],
            usage=Usage(input_tokens=10 + i, output_tokens=2),
            cost_ticks=100 + i,
            key_id="k1",
            ttft_ms=5.0 + i,
        )
        for i in range(12)
    ]
    records[1].error = CallError.HTTP_ERROR
    records[2].unmetered_reason = Unmetered.NO_USAGE
    records[3].cost_source = CostSource.UNPRICED
    for db in (sqlite, pg):
        with db.conn:
            insert_calls(db, records)
            save_key_name(db, ("k1", "prod", "team", "api-1", T0))
    for start, end in ((T0, None), (T0 + 2000, T0 + 9000)):
        assert queries.spend(pg, start, end) == queries.spend(sqlite, start, end)
        series = queries.spend_series(pg, start, end, T0, 3600.0)
        assert series == queries.spend_series(sqlite, start, end, T0, 3600.0)
        assert queries.ttft_by_model(pg, start, end) == queries.ttft_by_model(sqlite, start, end)
        assert queries.problems(pg, start, end) == queries.problems(sqlite, start, end)
    assert [b["bucket"] for b in queries.spend_series(pg, T0, None, T0, 3600.0)][:4] == [0, 0, 1, 1]
    assert queries.recent_calls(pg, 5) == queries.recent_calls(sqlite, 5)
    assert queries.fingerprint_timeline(pg) == queries.fingerprint_timeline(sqlite)
    sqlite.close()
    pg.close()
