"""The daemon's process dies or is told to stop: SIGKILL under load with streams open (then a
restart on the same ledger), and SIGTERM's timing with streams open.

Each test compares, tag by tag, what the clients saw with the ledger: a call whose end the
client saw has its normal row; a call in flight when the process died has a ``crash`` row
(after the restart), one cut by a shutdown a ``shutdown`` row; nothing twice, nothing else.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from daemon.simulator import Simulator
from daemon.testing import (
    CRASH_ROW,
    NORMAL_ROW,
    TEST_KEY,
    Daemons,
    Driver,
    Seen,
    eventually,
    expect_rows,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]


async def test_sigkill_under_load_loses_no_call(
    sim: Simulator, daemons: Daemons, driver: Driver
) -> None:
    """SIGKILL with 10 streams open, calls still coming and 5 s of rows waiting to be written:
    after a restart on the same ledger, every call the client saw end has one row (its own; a
    longer load call that ended in the kill's last loop iteration may be ``crash``), each open
    stream a ``crash`` row, a call cut before its answer at most one (crash or normal)."""
    # Rows gather for 5 s before a write: at the kill, the finished calls' rows are in memory
    # (and, with the journal, on disk) only.
    meter = await daemons.start(sim.url, ledger__flush_interval=5)
    driver.use(meter)
    done = await driver.many(30, "done")
    done += await driver.many(10, "done", stream=True)
    streams = await driver.held_streams(10, "open")
    stop_load, flowing = asyncio.Event(), asyncio.Event()
    busy: list[Seen] = []

    async def keep_calling() -> None:  # until the call that fails
        while not stop_load.is_set():
            seen = await driver.chat("load")
            busy.append(seen)
            if len(busy) >= 20:
                flowing.set()
            if seen.status is None:
                return

    workers = [asyncio.ensure_future(keep_calling()) for _ in range(4)]
    try:
        async with asyncio.timeout(10):
            await flowing.wait()
        meter.signal(signal.SIGKILL)
        assert await meter.wait_exit(5) == -signal.SIGKILL
    finally:
        stop_load.set()
        await asyncio.gather(*workers)
    for stream in streams:
        await stream.finish()
        assert not stream.seen.ended

    again = await daemons.start(sim.url, ledger=daemons.ledger)
    driver.use(again)
    later = await driver.many(5, "later")
    crashed = driver.tags("open")
    await daemons.rows_with([s.tag for s in done] + crashed)
    assert await again.stop() == 0

    cut = [seen for seen in busy if not seen.ended]
    assert cut, "the kill cut no call of the load"
    # A load call whose client saw it end has a row, however close to the kill: a quick one
    # (no start line yet) its own, as the relay yields once so that the row is journaled
    # before the last byte goes out; a longer one may be booked crash if it ended in the
    # kill's last loop iteration (README, "Nothing lost"). Never lost, never twice.
    expect_rows(
        daemons.rows(),
        {seen.tag: seen.row() for seen in done + later if seen.ended}
        | {tag: CRASH_ROW for tag in crashed},
        {seen.tag: [CRASH_ROW, NORMAL_ROW] for seen in cut},
        {seen.tag: [seen.row(), CRASH_ROW] for seen in busy if seen.ended},
    )


async def test_sigkill_mid_turn_on_a_responses_socket_leaves_that_turn_a_crash_row(
    sim: Simulator, daemons: Daemons, driver: Driver
) -> None:
    """A Responses WebSocket whose turn is in flight at SIGKILL (answered, stalled before its
    end): after a restart that turn has a ``crash`` row, and the session itself (its upgrade,
    whose turns are its rows) none."""
    meter = await daemons.start(sim.url)
    journal = Path(f"{daemons.ledger}.journal")
    headers = {"Authorization": f"Bearer {TEST_KEY}", "X-Meter-App": "socket"}
    async with driver.session.ws_connect(
        f"{meter.relay_url}/v1/responses", headers={**headers, "X-Sim-Stall": "body"}
    ) as ws:
        await ws.send_json({"type": "response.create", "model": "grok-4.3", "input": "one"})
        await ws.receive_json()  # the turn is answered and in flight: stalled before its end

        def on_disk() -> bool:
            lines = b"".join(p.read_bytes() for p in journal.glob("*.jsonl")).splitlines()
            return any(line.startswith(b'["S"') and b"grok-4.3" in line for line in lines)

        async def started() -> bool:  # its start line is on disk (the journal's timer ran)
            return await asyncio.to_thread(on_disk)

        await eventually(started, "the open turn's start line", 5)
        meter.signal(signal.SIGKILL)
        assert await meter.wait_exit(5) == -signal.SIGKILL
    again = await daemons.start(sim.url, ledger=daemons.ledger)
    await daemons.rows_with(["socket"])
    assert await again.stop() == 0
    rows = daemons.rows()
    assert [(r["error"], r["endpoint"], r["requested_model"], r["app"]) for r in rows] == [
        ("crash", "responses", "grok-4.3", "socket")
    ], rows


GRACE = 2.5  # shutdown.grace_period of the SIGTERM test (s)


async def test_sigterm_exits_within_grace_with_every_row(
    sim: Simulator, daemons: Daemons, driver: Driver
) -> None:
    """SIGTERM with 10 streams that never end and rows still queued: the process exits 0
    within grace_period + 2 s, each stream recorded ``shutdown``, every finished call too."""
    meter = await daemons.start(sim.url, ledger__flush_interval=5, shutdown__grace_period=GRACE)
    driver.use(meter)
    done = await driver.many(20, "done")
    streams = await driver.held_streams(10, "open")
    started = time.monotonic()
    meter.signal(signal.SIGTERM)
    assert await meter.wait_exit(GRACE + 10) == 0
    took = time.monotonic() - started
    assert took <= GRACE + 2, f"SIGTERM took {took:.2f} s, grace_period is {GRACE} s"
    for stream in streams:
        await stream.finish()
        assert not stream.seen.ended
    cut = {"status": 200, "error": "shutdown", "metered": 0, "unmetered_reason": "incomplete"}
    expect_rows(
        daemons.rows(),
        {seen.tag: seen.row() for seen in done} | {tag: cut for tag in driver.tags("open")},
    )
