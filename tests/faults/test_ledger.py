"""Faults under the ledger while calls flow: the disk fills up, another process holds the
database locked, the file is deleted, the upstream reports a usage no SQLite integer can hold.

Each test compares, tag by tag, what the clients saw with the ledger: one row per call, the
values the client was told, nothing twice, nothing else. The relay never waits for the ledger,
so every call answers while the ledger cannot be written.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.ledger import migrate, open_database
from daemon.ledger.store import insert_calls
from daemon.simulator import Simulator
from daemon.testing import (
    ODD_PROMPT_TOKENS,
    DaemonProcess,
    Daemons,
    Driver,
    OddUpstream,
    Seen,
    eventually,
    expect_rows,
    make_record,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

UNHEALTHY_AFTER = 0.5  # ledger.unhealthy_after in these tests (s)
HEALTHY = "xai_meter_ledger_healthy"


def answered(seen: list[Seen]) -> None:
    """Every call got its whole answer."""
    bad = [s for s in seen if not (s.status == 200 and s.ended)]
    assert not bad, f"{len(bad)} calls not answered: {bad[:3]}"


async def unhealthy(meter: DaemonProcess) -> None:
    """The daemon says its ledger is unhealthy: the metric 0, /readyz 503 ``degraded``."""

    async def metric_zero() -> bool:
        return await meter.metric(HEALTHY) == 0

    async def degraded() -> bool:
        status, body = await meter.readyz()
        return status == 503 and body.get("status") == "degraded"

    await eventually(metric_zero, f"{HEALTHY} 0", UNHEALTHY_AFTER + 5)
    await eventually(degraded, "/readyz 503 degraded", UNHEALTHY_AFTER + 5)


async def healthy(meter: DaemonProcess) -> None:
    """The daemon says its ledger is healthy again: the metric 1, /readyz 200 ``ready``."""

    async def metric_one() -> bool:
        return await meter.metric(HEALTHY) == 1

    async def ready() -> bool:
        status, body = await meter.readyz()
        return status == 200 and body.get("status") == "ready"

    await eventually(metric_one, f"{HEALTHY} 1", 10)
    await eventually(ready, "/readyz 200 ready", 10)


class FullDisk:
    """`disk` full, with nothing the daemon can free or reuse, from `take` to `give_back`:

    * a file takes every free byte (`top_up` takes again whatever has come free since);
    * every other file on it but SQLite's own is held open, so deleting one (a journal
      segment trimmed) frees nothing;
    * a read transaction holds a snapshot of `ledger`, as a long report would, so SQLite cannot
      go back to the start of its WAL: every commit needs new space."""

    def __init__(self, disk: Path, ledger: Path) -> None:
        self.disk = disk
        self.ledger = ledger
        self.filler = disk / "filler"
        self.fd = -1
        self.pins: list[int] = []
        self.reader: sqlite3.Connection | None = None

    def take(self) -> None:
        sqlite_files = {self.ledger, Path(f"{self.ledger}-wal"), Path(f"{self.ledger}-shm")}
        files = [p for p in self.disk.rglob("*") if p.is_file() and p not in sqlite_files]
        self.pins = [os.open(p, os.O_RDONLY) for p in files]
        uri = self.ledger.resolve().as_uri() + "?mode=ro"
        self.reader = sqlite3.connect(uri, uri=True, isolation_level=None)
        self.reader.execute("begin")
        self.reader.execute("select count(*) from calls").fetchone()
        self.fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.top_up()
        with pytest.raises(OSError, match="No space left"):
            (self.disk / "probe").write_bytes(b"x" * 4096)

    def top_up(self) -> None:
        """Write until no byte is left (ENOSPC): big pieces, then pages, then single bytes
        (bounded: at most 100,000 writes of each size)."""
        for size in (1 << 20, 4096, 1):
            for _ in range(100_000):
                try:
                    os.write(self.fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break

    def give_back(self) -> None:
        if self.reader is not None:
            self.reader.close()
        for pin in self.pins:
            os.close(pin)
        if self.fd >= 0:
            os.close(self.fd)
        self.filler.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def disk_full(disk: Path, ledger: Path) -> AsyncIterator[None]:
    """`disk` full (`FullDisk`) while the block runs, topped up every 20 ms."""
    full = FullDisk(disk, ledger)
    done = asyncio.Event()

    async def hold() -> None:
        while not done.is_set():
            await asyncio.to_thread(full.top_up)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.02)

    try:
        full.take()
        holder = asyncio.ensure_future(hold())
        try:
            yield
        finally:
            done.set()
            await holder
    finally:
        full.give_back()


async def test_disk_full_then_freed_every_row_arrives(
    sim: Simulator, daemons: Daemons, driver: Driver, tmpfs: Callable[..., Path]
) -> None:
    """Ledger and journal on a 16 MB tmpfs that fills up while calls flow: every call still
    answers, the daemon says it is unhealthy; once space is freed every row arrives, once."""
    disk = tmpfs("16m")
    meter = await daemons.start(
        sim.url, ledger=disk / "ledger.db", ledger__unhealthy_after=UNHEALTHY_AFTER
    )
    driver.use(meter)
    before = await driver.many(10, "before")
    await daemons.rows_with(s.tag for s in before)
    async with disk_full(disk, daemons.ledger):
        full = await driver.many(20, "full") + await driver.many(5, "full", stream=True)
        answered(full)
        await unhealthy(meter)
    await daemons.rows_with((s.tag for s in full), within=30)
    await healthy(meter)
    after = await driver.many(5, "after")
    assert await meter.stop() == 0
    expect_rows(daemons.rows(), {s.tag: s.row() for s in before + full + after})


# Another process holds the ledger's write lock until it reads a line.
LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
db.execute("begin exclusive")
print("locked", flush=True)
sys.stdin.readline()
db.execute("commit")
print("released", flush=True)
"""


class Locker:
    """A sqlite3 connection in another process holding ``BEGIN EXCLUSIVE`` on a ledger."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Locker:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            LOCKER,
            str(self.path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        await self._expect(b"locked")
        return self

    async def _expect(self, word: bytes) -> None:
        assert self.process is not None and self.process.stdout is not None
        async with asyncio.timeout(15):
            line = await self.process.stdout.readline()
        assert line.strip() == word, line

    async def release(self) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        await self.process.stdin.drain()
        await self._expect(b"released")
        async with asyncio.timeout(10):
            assert await self.process.wait() == 0

    async def __aexit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            async with asyncio.timeout(10):
                await self.process.wait()


async def test_ledger_unwritable_at_start_exits_2_with_one_line(
    sim: Simulator, daemons: Daemons, tmpfs: Callable[..., Path]
) -> None:
    """The ledger's directory is a read-only file system: the daemon does not start "ready";
    it exits 2 with one line that names ledger.path."""
    disk = tmpfs("1m", readonly=True)
    meter = await daemons.fail_to_start(sim.url, ledger=disk / "ledger.db")
    lines = meter.log().strip().splitlines()
    assert meter.returncode == 2 and len(lines) == 1 and "ledger.path" in lines[0], meter.log()


async def test_db_locked_by_another_process_then_released(
    sim: Simulator, daemons: Daemons, driver: Driver
) -> None:
    """Another process holds the ledger write-locked while calls flow: every call answers at
    once, the daemon says it is unhealthy, rows beyond ledger.max_queue_rows wait in the
    journal; released, every row arrives, once."""
    # 25 rows wait behind the lock, 10 of them in memory at most: the rest in the journal.
    meter = await daemons.start(
        sim.url, ledger__unhealthy_after=UNHEALTHY_AFTER, ledger__max_queue_rows=10
    )
    driver.use(meter)
    before = await driver.many(10, "before")
    await daemons.rows_with(s.tag for s in before)
    async with Locker(daemons.ledger) as lock:
        locked = await driver.many(20, "locked", within=5) + await driver.many(
            5, "locked", stream=True, within=5
        )
        answered(locked)
        await unhealthy(meter)
        written = {row["app"] for row in daemons.rows()}
        assert not written & {s.tag for s in locked}, "rows got past the lock"
        await lock.release()
    await daemons.rows_with((s.tag for s in locked), within=30)
    await healthy(meter)
    after = await driver.many(5, "after")
    assert await meter.stop() == 0
    expect_rows(daemons.rows(), {s.tag: s.row() for s in before + locked + after})


async def test_sigterm_behind_a_lock_then_restart(
    sim: Simulator, daemons: Daemons, driver: Driver
) -> None:
    """SIGTERM while another process holds the ledger locked: the daemon still exits within
    grace_period + 2 s; the next start, unlocked, writes every row the first one could not."""
    meter = await daemons.start(sim.url, shutdown__grace_period=1)
    driver.use(meter)
    async with Locker(daemons.ledger) as lock:
        locked = await driver.many(20, "locked", within=5)
        answered(locked)
        meter.signal(signal.SIGTERM)
        assert await meter.wait_exit(1 + 2) == 0
        await lock.release()
    again = await daemons.start(sim.url, ledger=daemons.ledger)
    await daemons.rows_with((s.tag for s in locked), within=15)
    assert await again.stop() == 0
    expect_rows(daemons.rows(), {s.tag: s.row() for s in locked})


def delete_ledger(path: Path) -> None:
    """What ``rm ledger.db*`` does to the files SQLite keeps (the journal directory stays)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def test_ledger_deleted_under_the_daemon(
    sim: Simulator, daemons: Daemons, driver: Driver
) -> None:
    """The ledger file (and its -wal and -shm) deleted while the daemon runs: every later row
    goes to a new file at ledger.path, once; none vanishes into the deleted inode."""
    meter = await daemons.start(sim.url)
    driver.use(meter)
    before = await driver.many(10, "before")
    await daemons.rows_with(s.tag for s in before)
    delete_ledger(daemons.ledger)
    after = await driver.many(10, "after") + await driver.many(5, "after", stream=True)
    answered(after)
    await daemons.rows_with((s.tag for s in after), within=15)
    more = await driver.many(5, "more")
    assert await meter.stop() == 0
    expect_rows(
        daemons.rows(),
        {s.tag: s.row() for s in after + more},
        {s.tag: [s.row()] for s in before},  # the daemon may restore them: once, then
    )


# Usage values no SQLite integer holds (its largest is 2^63 - 1): 2^63, 2^64 and 10^30.
HUGE = ("9223372036854775808", "18446744073709551616", "1" + "0" * 30)


async def test_huge_usage_is_unmetered_and_spoils_no_batch(
    odd_upstream: OddUpstream, daemons: Daemons, driver: Driver
) -> None:
    """An upstream answers usages of 2^63 and more among normal calls in the same batch: each
    such call has its row, unmetered ``out_of_range``, its bytes relayed as sent; every other
    row of the batch, and every later one, is written as usual."""
    meter = await daemons.start(odd_upstream.url, ledger__flush_interval=0.3)
    driver.use(meter)
    calls = [driver.chat("plain") for _ in range(10)]
    for value in HUGE:
        calls += [
            driver.chat("huge", headers={ODD_PROMPT_TOKENS: value}),
            driver.chat("huge", stream=True, headers={ODD_PROMPT_TOKENS: value}),
        ]
    seen = list(await asyncio.gather(*calls))  # all within one flush interval: one batch
    answered(seen)
    huge = [s for s in seen if "-huge-" in s.tag]
    for s in huge:
        assert f'"prompt_tokens": {s.sent[ODD_PROMPT_TOKENS]},'.encode() in s.body
    later = await driver.many(5, "later")
    assert await meter.stop() == 0
    out_of_range = {"status": 200, "metered": 0, "unmetered_reason": "out_of_range"}
    expect_rows(
        daemons.rows(),
        {s.tag: s.row() for s in seen if s not in huge}
        | {s.tag: out_of_range for s in huge}
        | {s.tag: s.row() for s in later},
    )


# --- reading a ledger on a read-only file system (xai-meter report) ------------------------


def remount_read_only(where: Path) -> None:
    done = subprocess.run(
        ["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, f"mount -o remount,ro: {done.stderr}"


async def test_a_ledger_on_a_read_only_file_system_can_be_reported(
    sim: Simulator,
    daemons: Daemons,
    driver: Driver,
    tmpfs: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A clean stop leaves the WAL checkpointed (no -wal, no -shm beside the ledger); on a
    read-only mount (where SQLite cannot make the -shm a WAL ledger needs for ``mode=ro``),
    `xai-meter report` reads it all, without a warning. Before: "the ledger cannot be read
    (unable to open database file)", exit 2."""
    disk = tmpfs("16m")
    ledger = disk / "ledger.db"
    meter = await daemons.start(sim.url, ledger=ledger)
    driver.use(meter)
    seen = await driver.many(5, "ro")
    answered(seen)
    await daemons.rows_with(s.tag for s in seen)
    assert await meter.stop() == 0
    assert not (disk / "ledger.db-wal").exists() and not (disk / "ledger.db-shm").exists()
    remount_read_only(disk)

    capsys.readouterr()
    code = main(["report", "--by", "app", "--format", "json", "--ledger", str(ledger)])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), err
    body = json.loads(out)
    assert body["total"]["calls"] == 5
    assert sorted(row["app"] for row in body["rows"]) == sorted(s.tag for s in seen)


async def test_rows_only_in_the_wal_of_a_read_only_ledger_are_named_in_one_warning(
    tmp_path: Path, tmpfs: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A ledger copied with its -wal but without its -shm (or a daemon that never closed it),
    on a read-only mount: it opens immutable, shows the checkpointed rows, and one warning
    line on stderr says the WAL's rows are not shown."""
    source = tmp_path / "live.db"
    db = open_database(source)
    migrate(db)
    with db.conn:
        insert_calls(db, [make_record(id="c1", started_at=time.time() - 60, app="checkpointed")])
    db.execute("pragma wal_checkpoint(truncate)")
    db.execute("pragma wal_autocheckpoint = 0")
    with db.conn:
        insert_calls(db, [make_record(id="c2", started_at=time.time() - 30, app="in-the-wal")])
    disk = tmpfs("16m")
    shutil.copy(source, disk / "ledger.db")  # nothing writes meanwhile: a consistent pair
    shutil.copy(source.with_name("live.db-wal"), disk / "ledger.db-wal")
    wal_size = (disk / "ledger.db-wal").stat().st_size
    db.close()
    remount_read_only(disk)

    capsys.readouterr()
    argv = ["report", "--by", "app", "--format", "json", "--ledger", str(disk / "ledger.db")]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert [row["app"] for row in json.loads(out)["rows"]] == ["checkpointed"]
    assert err == (
        f"xai-meter report: warning: {disk / 'ledger.db'} is read-only here and its write-ahead "
        f"log (ledger.db-wal, {wal_size:,} bytes) holds calls not yet copied into it, which "
        "this does not show: stop the daemon that wrote it cleanly (it checkpoints at exit), "
        "or copy both files somewhere writable and read that copy.\n"
    )
