"""m012: a call priced by the catalog keeps its rate and quantities; every other row leaves
those columns empty, and a repricing reads them back."""

from __future__ import annotations

import time
from pathlib import Path

from daemon.ledger import CALL_COLUMNS, MIGRATIONS, migrate, open_database
from daemon.ledger.schema import m012_catalog_units
from daemon.ledger.store import insert_calls, record_from_row
from daemon.record import Usage
from daemon.testing import make_record


def test_catalog_rows_keep_their_rate_and_quantities(tmp_path: Path) -> None:
    db = open_database(tmp_path / "old.db")
    db.execute("create table _migrations (name text primary key, applied_at real)")
    for migration in MIGRATIONS[: MIGRATIONS.index(m012_catalog_units)]:
        migration(db)
        db.execute("insert into _migrations values (?, ?)", [migration.__name__, time.time()])
    assert migrate(db)[0] == "m012_catalog_units"
    assert set(db["calls"].columns_dict) == set(CALL_COLUMNS)  # type: ignore[union-attr]
    video = Usage(
        catalog_rate="video:720p",
        video_seconds=8.5,
        video_image_inputs=2,
        video_input_seconds=3.25,
        reported_cost_ticks=6_000_000_000,
    )
    with db.conn:
        insert_calls(
            db,
            [
                make_record(id="chat", usage=Usage(input_tokens=5, output_tokens=2)),
                make_record(
                    id="tts", endpoint="tts", usage=Usage(catalog_rate="tts", characters=16)
                ),
                make_record(
                    id="stt",
                    endpoint="stt",
                    usage=Usage(catalog_rate="stt:rest", audio_seconds=3.52),
                ),
                make_record(id="video", endpoint="videos.deferred", usage=video),
            ],
        )
    rows = {row["id"]: row for row in db.query("select * from calls")}
    units = ("catalog_rate", "characters", "audio_seconds", "video_seconds", "video_image_inputs")
    assert [rows["chat"][c] for c in units] == [None] * 5
    assert [rows["tts"][c] for c in units] == ["tts", 16, None, None, None]
    assert [rows["stt"][c] for c in units] == ["stt:rest", None, 3.52, None, None]
    assert rows["video"]["video_input_seconds"] == 3.25
    assert record_from_row(rows["tts"]).usage == Usage(catalog_rate="tts", characters=16)
    assert record_from_row(rows["stt"]).usage == Usage(catalog_rate="stt:rest", audio_seconds=3.52)
    assert record_from_row(rows["video"]).usage == video
