"""A big backfill of unpriced calls: priced a chunk at a time in the writer thread, with its
start and progress logged, every call priced once and counted once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon import simulator
from daemon.background import BackfillProgress
from daemon.ledger.store import all_calls, insert_calls
from daemon.record import CostSource, Usage
from daemon.testing import DaemonFactory, RunningDaemon, make_record

CALLS = 23  # unpriced calls in the ledger
# grok-3 in the simulator's listing: $3 per 1M input tokens, $15 per 1M output tokens
TICKS = 100 * 30_000 + 10 * 150_000


async def priced_daemon(
    start_daemon: DaemonFactory, sim: simulator.Simulator, monkeypatch: pytest.MonkeyPatch
) -> RunningDaemon:
    monkeypatch.setenv("XAI_API_KEY", "xai-env-key")
    meter = await start_daemon(sim.url, pricing__refresh=True)
    async with asyncio.timeout(5):
        await meter.daemon.prices.updated.wait()  # the first prices, before any call
    meter.daemon.prices.updated.clear()
    return meter


async def add_unpriced(meter: RunningDaemon, count: int, prefix: str = "u") -> None:
    """`count` grok-3 calls (100 tokens in, 10 out) made before any price: unpriced."""
    records = [
        make_record(
            id=f"{prefix}{n:03d}",
            started_at=1.0 + n,
            model="grok-3",
            requested_model="grok-3",
            usage=Usage(input_tokens=100, output_tokens=10),
            cost_source=CostSource.UNPRICED,
        )
        for n in range(count)
    ]

    def insert() -> None:
        db = meter.daemon.ledger.db()
        with db.conn:
            insert_calls(db, records)

    await meter.daemon.ledger.run_in_writer(insert)


async def ledger_rows(meter: RunningDaemon) -> list[dict[str, Any]]:
    """Every row, read on the writer's own connection (the rows added here bypass the queue
    that `RunningDaemon.rows` counts)."""
    return await meter.daemon.ledger.run_in_writer(lambda: all_calls(meter.daemon.ledger.db()))


def ticking(step: float) -> Iterator[float]:
    now = 0.0
    while True:
        yield now
        now += step


async def backfill(meter: RunningDaemon) -> list[dict[str, Any]]:
    """Refresh the prices (the backfill follows); the log lines it made."""
    refresher = meter.daemon.prices.refresher
    assert refresher is not None
    with capture_logs() as logs:
        await refresher.refresh()
        async with asyncio.timeout(5):
            await meter.daemon.prices.updated.wait()
    meter.daemon.prices.updated.clear()
    return [
        {k: v for k, v in line.items() if k != "log_level"}
        for line in logs
        if "backfill" in line["event"]
    ]


async def test_a_big_backfill_logs_its_start_and_progress_by_rows(
    sim: simulator.Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    meter = await priced_daemon(start_daemon, sim, monkeypatch)
    await add_unpriced(meter, CALLS)
    upkeep = meter.daemon.prices
    upkeep.backfill_chunk, upkeep.backfill_log_rows, upkeep.backfill_log_seconds = 5, 10, 1e9
    clock = ticking(0.0)
    upkeep.monotonic = lambda: next(clock)
    assert await backfill(meter) == [
        {"event": "unpriced_backfill_started", "calls": 23, "chunk": 5},
        {"event": "unpriced_backfill_progress", "done": 10, "total": 23, "percent": 43},
        {"event": "unpriced_backfill_progress", "done": 20, "total": 23, "percent": 86},
        {"event": "unpriced_calls_backfilled", "calls": 23},
    ]
    rows = await ledger_rows(meter)
    assert len(rows) == CALLS
    assert {(r["cost_source"], r["cost_ticks"]) for r in rows} == {("computed", TICKS)}
    assert (
        simulator.price_ticks(sim.state, "grok-3", {"prompt_tokens": 100, "completion_tokens": 10})
        == TICKS
    )
    assert meter.metric("xai_meter_backfilled_total") == CALLS
    assert meter.metric(
        "xai_meter_cost_usd_total", provider="xai", model="grok-3"
    ) == pytest.approx(CALLS * TICKS / 1e10)
    # nothing left: the next refresh scans nothing and logs nothing
    assert await backfill(meter) == []
    assert meter.metric("xai_meter_backfilled_total") == CALLS


async def test_progress_by_seconds_and_a_small_backfill_is_one_line(
    sim: simulator.Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    meter = await priced_daemon(start_daemon, sim, monkeypatch)
    await add_unpriced(meter, CALLS)
    upkeep = meter.daemon.prices
    upkeep.backfill_chunk, upkeep.backfill_log_rows, upkeep.backfill_log_seconds = 4, 1000, 5.0
    clock = ticking(3.0)  # 3 s per chunk: a line every second chunk
    upkeep.monotonic = lambda: next(clock)
    assert [(line["event"], line.get("done")) for line in await backfill(meter)] == [
        ("unpriced_backfill_started", None),
        ("unpriced_backfill_progress", 8),
        ("unpriced_backfill_progress", 16),
        ("unpriced_calls_backfilled", None),
    ]
    db_rows = await ledger_rows(meter)
    assert len(db_rows) == CALLS and all(r["cost_source"] == "computed" for r in db_rows)
    # one chunk or less: just the line that says what was priced
    upkeep.backfill_chunk = 5
    await add_unpriced(meter, 2, prefix="v")
    assert await backfill(meter) == [{"event": "unpriced_calls_backfilled", "calls": 2}]


def test_backfill_progress_alone() -> None:
    """The rule: lines only past one chunk; never for the last step (the caller's line)."""
    clock = ticking(0.0)
    with capture_logs() as logs:
        small = BackfillProgress(5, chunk=5, every_rows=1, every_seconds=0.0, clock=lambda: 0.0)
        small.step(5)
        big = BackfillProgress(
            12, chunk=3, every_rows=6, every_seconds=1e9, clock=lambda: next(clock)
        )
        for done in (3, 6, 9, 12):
            big.step(done)
    assert [(line["event"], line.get("done")) for line in logs] == [
        ("unpriced_backfill_started", None),
        ("unpriced_backfill_progress", 6),
    ]
