"""m015 (the ``instance`` column) and m016 (``fingerprint_current``) on a SQLite ledger made
before them, and the instance a SQLite daemon writes into its rows and its journal."""

from __future__ import annotations

from pathlib import Path

from daemon.ledger import MIGRATIONS, Ledger, migrate, open_database
from daemon.ledger.journal import read_segments
from daemon.ledger.schema import m015_instance
from daemon.ledger.store import all_calls, fingerprint_history, save_fingerprint_change
from daemon.record import ROW_COLUMNS
from daemon.testing import make_record


def test_the_migrations_run_on_a_ledger_of_m014(tmp_path: Path) -> None:
    db = open_database(tmp_path / "ledger.db")
    db.execute("create table _migrations (name text primary key, applied_at real)")
    for migration in MIGRATIONS[: MIGRATIONS.index(m015_instance)]:
        migration(db)
        db.execute("insert into _migrations (name, applied_at) values (?, 0)", [migration.__name__])
    db.conn.executemany(
        "insert into fingerprints values (?, ?, ?, ?, ?, ?)",
        [
            ("xai", "grok-4", "fp_old", 1.0, 5.0, 3),
            ("xai", "grok-4", "fp_now", 6.0, 9.0, 2),
            ("xai", "grok-3", "fp_3", 1.0, 2.0, 1),
        ],
    )
    db.execute(
        "insert into calls (id, started_at, provider, endpoint, method, path) "
        "values ('old', 0, 'xai', 'e', 'POST', '/v1/x')"
    )
    db.conn.commit()
    assert migrate(db) == ["m015_instance", "m016_fingerprint_current"]
    assert [r["instance"] for r in all_calls(db)] == [None]
    current = db.execute(
        "select provider, model, fingerprint, previous, changed_at from fingerprint_current "
        "order by model"
    ).fetchall()
    assert current == [("xai", "grok-3", "fp_3", None, 2.0), ("xai", "grok-4", "fp_now", None, 9.0)]
    # The daemon knew fp_old (it missed fp_now): the ledger's previous value is recorded.
    with db.conn:
        assert save_fingerprint_change(db, (10.0, "xai", "grok-4", "fp_old", "fp_new", "new"))
        assert not save_fingerprint_change(db, (11.0, "xai", "grok-4", "fp_now", "fp_new", "new"))
    _, changes = fingerprint_history(db, "grok-4")
    assert [(c["old"], c["new"]) for c in changes] == [("fp_now", "fp_new")]


async def test_rows_and_journal_lines_name_the_instance(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db", instance="edge-7", fsync_interval=0)
    await ledger.open()
    ledger.start()
    ledger.submit_batch([make_record(id="a1"), make_record(id="a2")])
    await ledger.drained()
    found = read_segments(sorted(ledger.journal.directory.iterdir()), crash_before=0)
    assert {row[ROW_COLUMNS.index("instance")] for row in found.ends.values()} == {"edge-7"}
    await ledger.close()
    db = open_database(tmp_path / "ledger.db", readonly=True)
    assert [(r["id"], r["instance"]) for r in all_calls(db)] == [("a1", "edge-7"), ("a2", "edge-7")]
    db.close()
