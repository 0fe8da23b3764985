"""`xai-meter backup`: a consistent copy of a ledger another connection is writing to."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.ledger import migrate, open_database
from daemon.ledger.backup import BackupError, backup_ledger
from daemon.ledger.store import all_calls, insert_calls
from daemon.testing import make_record

BATCH = 50  # rows per write transaction of the writer below


class Writer(threading.Thread):
    """A second connection, as the daemon's writer: batches of rows, one transaction each,
    ids in order (``c000000``, ``c000001``, ...), until `stop` is set. `committed` counts the
    rows of every transaction that has returned; `progress` is set after each."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.committed = 0
        self.progress = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        db = open_database(self.path)
        try:
            while not self.stop.is_set():
                first = self.committed
                records = [
                    make_record(id=f"c{n:06d}", started_at=float(n), cost_ticks=n)
                    for n in range(first, first + BATCH)
                ]
                with db.conn:
                    insert_calls(db, records)
                self.committed += BATCH
                self.progress.set()
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            db.close()

    def wait_for(self, rows: int) -> None:
        for _ in range(10_000):  # bounded: each wait returns after one commit
            if self.committed >= rows or self.error:
                return
            self.progress.wait(5)
            self.progress.clear()
        raise AssertionError(f"the writer committed {self.committed} rows, not {rows}")


def new_ledger(path: Path) -> None:
    db = open_database(path)
    migrate(db)
    db.close()


def test_a_backup_while_another_connection_writes_holds_every_row_committed_before(
    tmp_path: Path,
) -> None:
    ledger, copy = tmp_path / "ledger.db", tmp_path / "copy.db"
    new_ledger(ledger)
    writer = Writer(ledger)
    writer.start()
    try:
        writer.wait_for(20 * BATCH)
        before = writer.committed  # committed before the backup began
        done = backup_ledger(ledger, copy)
        after = writer.committed
        writer.wait_for(after + BATCH)  # the writer was never stopped by the backup
    finally:
        writer.stop.set()
        writer.join(10)
    assert writer.error is None
    assert before <= done.calls <= after + BATCH
    assert done.dest == copy and done.size == copy.stat().st_size
    # one consistent snapshot: whole transactions only, oldest first, none missing
    assert done.calls % BATCH == 0
    db = open_database(copy, readonly=True)
    try:
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert db.execute("pragma journal_mode").fetchone()[0] == "delete"  # one file
        rows = all_calls(db)
        assert [r["id"] for r in rows] == [f"c{n:06d}" for n in range(done.calls)]
        assert [r["cost_ticks"] for r in rows[:3]] == [0, 1, 2]
    finally:
        db.close()
    assert not (tmp_path / "copy.db-wal").exists()
    # a valid ledger: every migration already applied, so migrating it does nothing
    db = open_database(copy)
    try:
        assert migrate(db) == []
    finally:
        db.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "backup-tmp" in p.name) == []


def test_backup_refuses_an_existing_dest_unless_forced(tmp_path: Path) -> None:
    ledger, copy = tmp_path / "ledger.db", tmp_path / "copy.db"
    new_ledger(ledger)
    copy.write_text("keep me")
    with pytest.raises(BackupError, match=r"copy.db exists\. Fix: .* --force"):
        backup_ledger(ledger, copy)
    assert copy.read_text() == "keep me"
    assert backup_ledger(ledger, copy, force=True).calls == 0
    with pytest.raises(BackupError, match="is the ledger itself"):
        backup_ledger(ledger, ledger, force=True)
    with pytest.raises(BackupError, match="is a directory"):
        backup_ledger(ledger, tmp_path)
    with pytest.raises(BackupError, match="no ledger at"):
        backup_ledger(tmp_path / "none.db", tmp_path / "x.db")
    with pytest.raises(BackupError, match="cannot write"):
        backup_ledger(ledger, tmp_path / "no" / "such" / "dir.db")


def test_backup_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger, copy = tmp_path / "ledger.db", tmp_path / "copy.db"
    new_ledger(ledger)
    db = open_database(ledger)
    with db.conn:
        insert_calls(db, [make_record(id="a", cost_ticks=7), make_record(id="b", cost_ticks=8)])
    db.close()
    assert main(["backup", str(copy), "--ledger", str(ledger)]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"{ledger} -> {copy}: 2 calls, {copy.stat().st_size:,} bytes (every row committed "
        f"when the copy began; back up the salt file, {tmp_path / 'xai-meter.salt'}, apart)\n"
    )
    assert main(["backup", str(copy), "--ledger", str(ledger)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"xai-meter backup: {copy} exists. Fix: name another file, or pass --force to replace it.\n"
    )
    assert main(["backup", str(copy), "--ledger", str(ledger), "--force"]) == 0
    capsys.readouterr()
    # not a ledger: SQLite, but no calls table; not SQLite at all
    other = tmp_path / "other.db"
    open_database(other).close()
    assert main(["backup", str(tmp_path / "o.db"), "--ledger", str(other)]) == 2
    assert "is not an xai-meter ledger (no calls table)" in capsys.readouterr().err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, not at all" * 100)
    assert main(["backup", str(tmp_path / "j.db"), "--ledger", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xai-meter backup: the ledger cannot be read (") and err.count("\n") == 1
