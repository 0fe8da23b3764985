"""The journal-backed ledger: replay after a death, a writer that never dies, bounded memory,
values out of range, and a ledger file deleted under the daemon (issue 12)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_none

from daemon.config import ConfigError
from daemon.ledger import Ledger, open_database
from daemon.ledger.journal import START_DELAY, Journal, default_path, lines_of, read_segments
from daemon.ledger.store import all_calls
from daemon.record import CallRecord, Usage
from daemon.testing import make_record


def rows_of(path: Path) -> list[dict[str, Any]]:
    db = open_database(path, readonly=True)
    try:
        return all_calls(db)
    finally:
        db.close()


def call(i: int, **fields: Any) -> CallRecord:
    base: dict[str, Any] = {
        "id": f"c{i:04d}",
        "started_at": 1000.0 + i,
        "usage": Usage(input_tokens=i, output_tokens=1),
        "model": "grok-4",
        "fingerprint": "fp_1",
    }
    return make_record(**{**base, **fields})


def segments(ledger_path: Path) -> list[Path]:
    return sorted(Path(default_path(str(ledger_path))).glob("*.jsonl"))


def die(journal: Journal) -> None:
    """What SIGKILL leaves: the bytes handed to the kernel, nothing closed or trimmed."""
    journal.flush()
    os.close(journal._fd)
    journal._fd = -1


async def test_a_clean_run_leaves_no_journal_and_every_row(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = Ledger(path, batch_size=2)
    await ledger.open()
    ledger.start()
    for i in range(5):
        record = call(i)
        ledger.begin(record)
        ledger.submit(record)
    await ledger.close()
    assert [r["id"] for r in rows_of(path)] == [f"c{i:04d}" for i in range(5)]
    assert segments(path) == []


async def test_after_a_death_the_next_start_writes_ends_and_crash_rows_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.db"
    first = Ledger(path)
    await first.open()
    # Three calls sent; two ended (one of them also committed); one never ended.
    sent = [call(i, app=f"tag-{i}", requested_model="grok-4", stream=True) for i in range(3)]
    for record in sent:
        first.begin(record)
    first.journal.flush()
    await first.run_in_writer(lambda: first._insert([(first.journal.seq, [sent[0].as_tuple()])]))
    first.journal.end([sent[0].id, sent[1].id], (lines_of([sent[0].as_tuple()])))
    first.journal.end([], (lines_of([sent[1].as_tuple()])))
    die(first.journal)
    await first.run_in_writer(first.db().close)

    second = Ledger(path)
    await second.open()
    second.start()
    await second.close()
    rows = {r["id"]: r for r in rows_of(path)}
    assert sorted(rows) == ["c0000", "c0001", "c0002"]
    assert rows["c0001"]["metered"] == 1 and rows["c0001"]["input_tokens"] == 1
    crash = rows["c0002"]
    assert (crash["error"], crash["metered"], crash["unmetered_reason"]) == ("crash", 0, "crash")
    assert (crash["app"], crash["requested_model"], crash["stream"]) == ("tag-2", "grok-4", 1)
    assert crash["input_tokens"] is None and crash["cost_ticks"] is None
    assert segments(path) == []
    db = open_database(path, readonly=True)
    # the row committed before the death was not counted twice
    assert db.execute("select calls from fingerprints").fetchall() == [(2,)]
    db.close()


class Failures:
    """Counts the ledger's failed write attempts; `reach(n)` awaits the n-th."""

    def __init__(self) -> None:
        self.count = 0
        self._hit = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self._hit.set()

    async def reach(self, n: int) -> None:
        async with asyncio.timeout(5):
            while self.count < n:
                self._hit.clear()
                await self._hit.wait()


async def test_a_failing_database_is_retried_until_it_recovers(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    clock = [0.0]
    failures = Failures()
    ledger = Ledger(path, retry_wait=wait_none(), clock=lambda: clock[0], on_error=failures)
    await ledger.open()
    ledger.start()
    # With its table gone the ledger cannot write; the writer must survive and lose nothing.
    await ledger.run_in_writer(lambda: ledger.db().execute("alter table calls rename to x"))
    ledger.submit(call(1))
    await failures.reach(3)
    assert not ledger.healthy
    clock[0] = 7.5
    assert ledger.unhealthy_for() == 7.5
    await ledger.run_in_writer(lambda: ledger.db().execute("alter table x rename to calls"))
    async with asyncio.timeout(5):
        await ledger.wait_written(1)
    assert ledger.healthy and ledger.unhealthy_for() == 0.0
    ledger.submit(call(2))
    await ledger.close()
    assert [r["id"] for r in rows_of(path)] == ["c0001", "c0002"]


async def test_memory_is_bounded_while_the_database_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    failures = Failures()
    ledger = Ledger(
        path, max_queue_rows=10, batch_size=4, retry_wait=wait_none(), on_error=failures
    )
    await ledger.open()
    ledger.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("begin exclusive")
    for i in range(50):
        ledger.submit(call(i))
        assert ledger.depth() <= 10
    await failures.reach(1)
    assert not ledger.healthy
    blocker.execute("rollback")
    blocker.close()
    async with asyncio.timeout(10):
        await ledger.wait_written(50)
        await ledger.drained()
    await ledger.close()
    ids = [r["id"] for r in rows_of(path)]
    assert ids == [f"c{i:04d}" for i in range(50)]  # every row, exactly once
    assert segments(path) == []


async def test_a_row_out_of_range_never_takes_its_batch_down(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = Ledger(path, flush_interval=0.01)
    await ledger.open()
    ledger.start()
    ledger.submit(call(1))
    ledger.submit(call(2, cost_ticks=2**63))  # past SQLite's INTEGER: it refuses the row
    ledger.submit(call(3, computed_cost_ticks=2**64 + 5))  # past orjson's too
    ledger.submit(call(4))
    await ledger.close()
    rows = {r["id"]: r for r in rows_of(path)}
    assert sorted(rows) == ["c0001", "c0002", "c0003", "c0004"]
    assert rows["c0001"]["metered"] == 1 and rows["c0004"]["metered"] == 1
    for bad, column in (("c0002", "cost_ticks"), ("c0003", "computed_cost_ticks")):
        row = rows[bad]
        assert (row["metered"], row["unmetered_reason"]) == (0, "out_of_range")
        assert row[column] == 2**63 - 1
        assert row["error_detail"] == f"out of range, clamped: {column}"


async def test_a_deleted_ledger_file_gets_a_new_one_with_every_later_row(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = Ledger(path)
    await ledger.open()
    ledger.start()
    ledger.submit(call(1))
    await ledger.wait_written(1)
    os.unlink(path)  # as `rm` does: the open connection keeps writing to the deleted inode
    ledger.submit(call(2))
    ledger.submit(call(3))
    await ledger.close()
    assert [r["id"] for r in rows_of(path)] == ["c0002", "c0003"]
    assert ledger.reopened == 1


async def test_a_close_that_cannot_write_leaves_the_rows_to_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = Ledger(path, retry_wait=wait_none())
    await ledger.open()
    ledger.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("begin exclusive")
    record = call(1)
    ledger.begin(record)
    ledger.submit(record)
    await ledger.close(timeout=0.3)
    assert len(segments(path)) == 1
    blocker.execute("rollback")
    blocker.close()
    again = Ledger(path)
    await again.open()
    again.start()
    await again.close()
    assert [(r["id"], r["error"]) for r in rows_of(path)] == [("c0001", None)]


@pytest.mark.parametrize("where", ["a directory", "under a file"])
async def test_a_ledger_that_cannot_be_opened_is_a_start_up_error(
    tmp_path: Path, where: str
) -> None:
    if where == "a directory":
        path = tmp_path / "l.db"
        path.mkdir()
    else:
        (tmp_path / "file").write_text("")
        path = tmp_path / "file" / "l.db"
    with pytest.raises(
        ConfigError, match=r"^ledger\.path = .*Fix: set ledger\.path \(--ledger FILE\)"
    ):
        await Ledger(path).open()


def test_a_torn_last_line_is_counted_not_fatal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.open()
    record = call(1)
    journal.begin(record)
    journal.end([record.id], (lines_of([record.as_tuple()])))
    die(journal)
    seg = sorted((tmp_path / "j").glob("*.jsonl"))
    with seg[0].open("ab") as f:
        f.write(b'["E", "c9999", 12')  # the process died mid-write
    found = read_segments(seg, crash_before=journal.seq + 1)
    assert list(found.ends) == ["c0001"] and found.starts == {} and found.bad_lines == 1


def test_a_start_line_masks_the_calls_key_in_the_clients_text(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", keys_for=lambda key_id: ("abc123-secret",))
    journal.open()
    record = call(1, app="team abc123-secret", requested_model="abc123-secret", path="/v1/x")
    journal.begin(record)
    die(journal)
    (segment,) = sorted((tmp_path / "j").glob("*.jsonl"))
    assert b"abc123" not in segment.read_bytes()
    found = read_segments([segment], crash_before=journal.seq + 1)
    assert (found.starts["c0001"]["app"], found.starts["c0001"]["requested_model"]) == (
        "team [key]",
        "[key]",
    )


async def test_only_a_call_still_in_flight_when_the_timer_runs_gets_a_start_line(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j")
    journal.open()
    quick, slow = call(1), call(2)
    journal.begin(quick)
    journal.begin(slow)
    journal.end([quick.id], lines_of([quick.as_tuple()]))  # ended before the start timer ran
    loop = asyncio.get_running_loop()
    timer_ran = loop.create_future()
    loop.call_later(2 * START_DELAY, timer_ran.set_result, None)  # after the journal's timer
    await timer_ran
    die(journal)
    (segment,) = sorted((tmp_path / "j").glob("*.jsonl"))
    starts = [line for line in segment.read_bytes().splitlines() if line.startswith(b'["S"')]
    assert [line.split(b",")[1] for line in starts] == [b'"c0002"']
    found = read_segments([segment], crash_before=journal.seq + 1)
    assert list(found.ends) == ["c0001"] and list(found.starts) == ["c0002"]


def test_a_void_start_is_never_a_crash_row(tmp_path: Path) -> None:
    """A call begun that will have no row of its own (a WebSocket upgrade whose turns are the
    rows): written or not yet, its start leaves no ``crash`` row, and nothing else changes."""
    journal = Journal(tmp_path / "j")
    journal.open()
    written, unwritten, other = call(1), call(2), call(3)
    journal.begin(written)
    journal.begin(other)
    journal.flush()  # both starts are on disk
    journal.void(written.id)
    journal.begin(unwritten)
    journal.void(unwritten.id)  # before its start was written: nothing to write at all
    die(journal)
    (segment,) = sorted((tmp_path / "j").glob("*.jsonl"))
    lines = segment.read_bytes().splitlines()
    assert [line[:5] for line in lines[1:]] == [b'["S",', b'["S",', b'["V",']
    found = read_segments([segment], crash_before=journal.seq + 1)
    assert (list(found.starts), found.ends, found.bad_lines) == (["c0003"], {}, 0)
