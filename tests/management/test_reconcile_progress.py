"""`xai-meter reconcile` shows its progress on a terminal, one line rewritten in place, and
nothing at all when stderr is not a terminal."""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import struct
import sys
import termios
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.ledger import migrate, open_database
from daemon.ledger.store import insert_calls
from daemon.management.report import build_report
from daemon.progress import ERASE, TerminalProgress
from daemon.simulator import Simulator
from daemon.testing import make_record, toml_text

ENV = "XAI_METER_TEST_MGMT_KEY"


def pty_pair(columns: int) -> tuple[int, int]:
    """A pseudo-terminal `columns` wide: (master fd, slave fd)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return master, slave


def read_all(fd: int) -> bytes:
    """Everything written to the pty, until every slave end is closed (Linux: EIO)."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_one_line_rewritten_on_a_terminal_cut_to_its_width() -> None:
    master, slave = pty_pair(columns=12)
    try:
        with open(slave, "w", closefd=True) as stream, TerminalProgress(stream) as progress:
            assert progress.enabled
            progress.show("day 1/2")
            progress.show("day 2/2 (2026-11-25)")  # wider than 12 columns: cut, never wrapped
        written = read_all(master)
    finally:
        os.close(master)
    assert written == f"{ERASE}day 1/2{ERASE}day 2/2 (2…{ERASE}".encode()


def test_nothing_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with TerminalProgress(stream) as progress:
        assert not progress.enabled
        progress.show("day 1/2")
    assert stream.getvalue() == ""
    forced = io.StringIO()
    with TerminalProgress(forced, enabled=True) as progress:  # no width known: never cut
        progress.show("x" * 300)
    assert forced.getvalue() == ERASE + "x" * 300 + ERASE


def _ledger(path: Path, now: datetime | None = None) -> None:
    db = open_database(path)
    migrate(db)
    now = now or datetime.now(UTC)
    yesterday = now.replace(hour=12, minute=0, second=0) - timedelta(days=1)
    with db.conn:
        insert_calls(db, [make_record(id="1", started_at=yesterday.timestamp(), cost_ticks=9)])
    db.close()


def _days(count: int, now: datetime | None = None) -> list[str]:
    today = (now or datetime.now(UTC)).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(count - 1, -1, -1)]


async def test_the_stages_of_a_fetched_reconciliation(sim: Simulator, tmp_path: Path) -> None:
    now = datetime(2026, 11, 29, 15, 30, tzinfo=UTC)  # one clock for the ledger and the report
    _ledger(tmp_path / "l.db", now)
    seen: list[str] = []
    days = _days(3, now)
    await build_report(
        tmp_path / "l.db",
        days=2,
        now=now.timestamp(),
        key=sim.state.management_key,
        key_env=ENV,
        base_url=sim.url,
        progress=seen.append,
    )
    assert seen == [
        f"reconcile: fetching xAI's bill, {days[0]} to {days[2]} (3 days), from {sim.url}…",
        f"reconcile: day 1/3 ({days[0]})…",
        f"reconcile: day 2/3 ({days[1]})…",
        f"reconcile: day 3/3 ({days[2]})…",
    ]


@pytest.mark.slow
async def test_the_command_on_a_terminal_and_off_one(sim: Simulator, tmp_path: Path) -> None:
    """The real command in a subprocess: stderr a pty (progress, then erased), then a pipe
    (nothing); stdout, the report, the same both times."""
    _ledger(tmp_path / "l.db")
    config = tmp_path / "c.toml"
    config.write_text(toml_text({"management": {"api_key_env": ENV, "base_url": sim.url}}))
    command = [sys.executable, "-m", "daemon", "reconcile", "-c", str(config)]
    command += ["--ledger", str(tmp_path / "l.db"), "--days", "2"]
    env = {**os.environ, ENV: sim.state.management_key}
    days = _days(3)

    master, slave = pty_pair(columns=200)
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=slave, env=env
        )
        os.close(slave)  # the child holds the only slave end: EOF when it exits
        reading = asyncio.create_task(asyncio.to_thread(read_all, master))
        tty_out, _ = await asyncio.wait_for(process.communicate(), 60)
        tty_err = await asyncio.wait_for(reading, 10)
    finally:
        os.close(master)
    assert process.returncode == 0

    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    pipe_out, pipe_err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    if _days(3) != days:  # pragma: no cover - the UTC day turned during the test
        pytest.skip("the UTC day changed mid-test")

    lines = [
        f"reconcile: fetching xAI's bill, {days[0]} to {days[2]} (3 days), from {sim.url}…",
        *(f"reconcile: day {n}/3 ({day})…" for n, day in enumerate(days, 1)),
    ]
    assert tty_err.decode() == "".join(ERASE + line for line in lines) + ERASE
    assert pipe_err == b""
    assert pipe_out == tty_out
    assert f"xAI's bill: fetched now from the Management API ({sim.url}).".encode() in pipe_out
