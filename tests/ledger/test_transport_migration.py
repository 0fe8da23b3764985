"""m011: every call gets a ``transport``; rows written before it came over HTTP and say so."""

from __future__ import annotations

import time
from pathlib import Path

from daemon.ledger import CALL_COLUMNS, MIGRATIONS, migrate, open_database
from daemon.ledger.schema import m011_transport
from daemon.ledger.store import insert_calls, record_from_row
from daemon.record import Transport
from daemon.testing import make_record


def test_old_rows_are_http_and_new_rows_keep_their_transport(tmp_path: Path) -> None:
    db = open_database(tmp_path / "old.db")
    db.execute("create table _migrations (name text primary key, applied_at real)")
    for migration in MIGRATIONS[: MIGRATIONS.index(m011_transport)]:
        migration(db)
        db.execute("insert into _migrations values (?, ?)", [migration.__name__, time.time()])
    with db.conn:
        db.execute(
            "insert into calls (id, started_at, provider, endpoint, method, path, metered) "
            "values ('old', 0, 'xai', 'chat.completions', 'POST', '/v1/chat/completions', 1)"
        )
    assert migrate(db) == ["m011_transport"]
    assert list(db["calls"].columns_dict) == list(CALL_COLUMNS)  # type: ignore[union-attr]
    with db.conn:
        # one narrow insert (every rare column empty, transport http) and one full insert
        insert_calls(
            db,
            [
                make_record(id="rest"),
                make_record(
                    id="grpc", path="/xai_api.Chat/GetCompletion", transport=Transport.GRPC
                ),
            ],
        )
    rows = {row["id"]: row for row in db.query("select * from calls")}
    assert {i: r["transport"] for i, r in rows.items()} == {
        "old": "http",
        "rest": "http",
        "grpc": "grpc",
    }
    assert record_from_row(rows["grpc"]).transport is Transport.GRPC
