"""m009: ``cache_write_tokens`` becomes ``cache_creation_input_tokens`` in place, with its counts;
the new ``cache_creation_1h_input_tokens`` is empty on old rows (their writes count as 5-minute
writes); ``cached_input_tokens`` stays the cache-read count every report reads."""

from __future__ import annotations

import time
from pathlib import Path

from daemon.ledger import CALL_COLUMNS, MIGRATIONS, migrate, open_database
from daemon.ledger.schema import m010_anthropic_cache_creation
from daemon.ledger.store import record_from_row
from daemon.record import Usage


def test_m009_renames_cache_writes_and_keeps_old_rows(tmp_path: Path) -> None:
    db = open_database(tmp_path / "old.db")
    db.execute("create table _migrations (name text primary key, applied_at real)")
    for migration in MIGRATIONS[: MIGRATIONS.index(m010_anthropic_cache_creation)]:
        migration(db)
        db.execute("insert into _migrations values (?, ?)", [migration.__name__, time.time()])
    with db.conn:
        db.execute(
            "insert into calls (id, started_at, provider, endpoint, method, path, model, "
            "input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, metered) "
            "values ('a', 0, 'anthropic', 'messages', 'POST', '/v1/messages', 'claude-x', "
            "900, 100, 250, 8, 1)"
        )
    assert migrate(db)[0] == "m010_anthropic_cache_creation"
    assert list(db["calls"].columns_dict) == list(CALL_COLUMNS)  # type: ignore[union-attr]
    [row] = db.query("select * from calls")
    assert (
        row["cached_input_tokens"],
        row["cache_creation_input_tokens"],
        row["cache_creation_1h_input_tokens"],
    ) == (100, 250, None)
    usage = record_from_row(row).usage
    assert usage == Usage(
        input_tokens=900, cached_input_tokens=100, cache_creation_input_tokens=250, output_tokens=8
    )
