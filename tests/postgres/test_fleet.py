"""Two daemons, one PostgreSQL ledger (issue 15, "Done when"): real daemon processes started
at the same moment on a new database, calls through each, then what the ledger holds.

- the migrations ran once (the advisory lock), though both started together;
- N calls through each: exactly 2N rows, each naming the daemon that wrote it (``instance``);
- `xai-meter report --ledger postgresql://...` totals them exactly;
- one key, one key id on both (they share the salt file), and a daemon with another salt
  does not start (exit 2, one line naming ledger.salt_path);
- a fingerprint change both daemons see is recorded once;
- a daemon SIGKILLed under load on PostgreSQL, restarted: its journal replays into
  PostgreSQL, every call exactly once.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from daemon.cli import main
from daemon.ledger import MIGRATIONS
from daemon.ledger.engine import open_ledger
from daemon.ledger.store import fingerprint_history
from daemon.simulator import Simulator
from daemon.testing import (
    CRASH_ROW,
    FAULTS_MODEL,
    Daemons,
    Driver,
    eventually,
    expect_rows,
)

pytestmark = [pytest.mark.slow]


def _read(url: str, sql: str) -> list[Any]:
    db = open_ledger(url, readonly=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


async def test_two_daemons_share_one_postgresql_ledger(
    sim: Simulator,
    daemons: Daemons,
    driver: Driver,
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hooks: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        hooks.append(await request.json())
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    on_pg = {"ledger__url": pg_url, "alerts__webhook_url": f"http://127.0.0.1:{port}/hook"}
    a, b = await asyncio.gather(
        daemons.start(sim.url, ledger=tmp_path / "a.db", ledger__instance="a", **on_pg),
        daemons.start(sim.url, ledger=tmp_path / "b.db", ledger__instance="b", **on_pg),
    )
    migrated = _read(pg_url, "select name, count(*) from _migrations group by name")
    assert sorted(migrated) == sorted((m.__name__, 1) for m in MIGRATIONS)

    n = 15
    driver.use(a)
    through_a = await driver.many(n, "a")
    driver.use(b)
    through_b = await driver.many(n, "b")
    tags = [s.tag for s in through_a + through_b]
    rows = await daemons.rows_with(tags)
    expect_rows(
        rows,
        {s.tag: {**s.row(), "instance": "a"} for s in through_a}
        | {s.tag: {**s.row(), "instance": "b"} for s in through_b},
    )
    assert len(rows) == 2 * n
    assert len({r["key_id"] for r in rows}) == 1 and rows[0]["key_id"]  # one key, one id
    assert all(r["cost_ticks"] for r in rows)

    # `xai-meter report` reads PostgreSQL by URL: its totals are the rows' own, exactly.
    capsys.readouterr()
    assert main(["report", "--ledger", pg_url, "--since", "1d", "--format", "json"]) == 0
    total = orjson.loads(capsys.readouterr().out)["total"]
    assert total["calls"] == 2 * n
    assert total["cost_ticks"] == sum(r["cost_ticks"] for r in rows)
    assert total["input_tokens"] == sum(r["input_tokens"] for r in rows)

    # The model's fingerprint changes; both daemons see it: one change in the ledger.
    before = {r["fingerprint"] for r in rows}
    assert len(before) == 1
    sim.state.fingerprints[FAULTS_MODEL] = "fp_pg_changed"
    driver.use(a)
    after = [await driver.chat("fp-a")]
    driver.use(b)
    after.append(await driver.chat("fp-b"))
    await daemons.rows_with([s.tag for s in after])  # each one's change was written with it
    db = open_ledger(pg_url, readonly=True)
    seen, changes = fingerprint_history(db, FAULTS_MODEL)
    db.close()
    assert [(c["old"], c["new"], c["kind"]) for c in changes] == [
        (before.pop(), "fp_pg_changed", "new")
    ]
    assert sum(s["calls"] for s in seen) == 2 * n + 2
    # ... and one webhook: from the daemon whose write recorded it.

    async def hooked() -> int:
        return len(hooks)

    await eventually(hooked, "the fingerprint webhook", 10)
    for meter in (a, b):  # a round trip through each: a second webhook would be on its way
        driver.use(meter)
        await driver.chat("after")
    assert [(h["event"], h["new"]) for h in hooks] == [("fingerprint_changed", "fp_pg_changed")]

    # A daemon with a salt of its own would give the same key another id: it does not start.
    other = tmp_path / "other" / "xai-meter.salt"
    other.parent.mkdir()
    odd = await daemons.fail_to_start(
        sim.url, ledger=tmp_path / "c.db", ledger__salt_path=str(other), **on_pg
    )
    assert odd.returncode == 2
    said = [line for line in odd.log().splitlines() if "ledger.salt_path" in line]
    assert len(said) == 1, odd.log()
    assert "differs from the one the other daemons sharing the ledger use" in said[0]
    assert "Fix: give every daemon the same salt file" in said[0]

    assert await a.stop() == 0 and await b.stop() == 0
    await runner.cleanup()


async def test_sigkill_on_postgresql_then_restart_replays_the_journal(
    sim: Simulator, daemons: Daemons, driver: Driver, pg_url: str, tmp_path: Path
) -> None:
    """Rows gather for 5 s before a write: at the SIGKILL the finished calls' rows are in the
    journal only, and five streams are open. After a restart on the same journal: every
    finished call has its one row in PostgreSQL, each open stream a crash row."""
    settings = {"ledger__url": pg_url, "ledger__instance": "a"}
    meter = await daemons.start(
        sim.url, ledger=tmp_path / "a.db", ledger__flush_interval=5, **settings
    )
    driver.use(meter)
    done = await driver.many(30, "done")
    streams = await driver.held_streams(5, "open")

    async def started() -> bool:  # a start is journaled START_DELAY after the call began
        text = b"".join(p.read_bytes() for p in (tmp_path / "a.db.journal").iterdir())
        return all(tag.encode() in text for tag in driver.tags("open"))

    await eventually(started, "the open streams' starts in the journal", 5)
    meter.signal(signal.SIGKILL)
    assert await meter.wait_exit(5) == -signal.SIGKILL
    for stream in streams:
        await stream.finish()
        assert not stream.seen.ended
    assert daemons.rows() == []  # nothing reached PostgreSQL before the kill

    again = await daemons.start(sim.url, ledger=tmp_path / "a.db", **settings)
    driver.use(again)
    later = await driver.many(5, "later")
    rows = await daemons.rows_with([s.tag for s in done + later] + driver.tags("open"))
    assert await again.stop() == 0
    expect_rows(
        daemons.rows(),
        {s.tag: {**s.row(), "instance": "a"} for s in done + later}
        | {tag: {**CRASH_ROW, "instance": "a"} for tag in driver.tags("open")},
    )
    assert len(rows) == 30 + 5 + 5
