"""m013: a video POST's request is a column, and a batch result is unique by its two ids."""

from __future__ import annotations

from pathlib import Path

from daemon.ledger import CALL_COLUMNS, migrate, open_database
from daemon.ledger.store import insert_calls, load_batch_results, load_deferred
from daemon.record import DeferredState
from daemon.testing import make_record


def test_batch_results_are_unique_and_video_requests_come_back(tmp_path: Path) -> None:
    db = open_database(tmp_path / "ledger.db")
    assert "m013_video_batches" in migrate(db)
    assert list(db["calls"].columns_dict) == list(CALL_COLUMNS)  # type: ignore[union-attr]
    rows = [
        make_record(id="r1", endpoint="batches.result", linked_id="b1", response_id="a"),
        make_record(id="r2", endpoint="batches.result", linked_id="b1", response_id="b"),
        make_record(id="other", endpoint="chat.deferred", linked_id="b1", response_id="a"),
        make_record(
            id="post", endpoint="videos.edits", deferred=True, response_id="rid",
            deferred_state=DeferredState.PENDING, video_request="edits/720p/1",
        ),
    ]  # fmt: skip
    with db.conn:
        insert_calls(db, rows)
        # the last guard: the same result again replaces its row, never adds one
        insert_calls(
            db, [make_record(id="r3", endpoint="batches.result", linked_id="b1", response_id="a")]
        )
    assert sorted(load_batch_results(db)) == [("b1", "a"), ("b1", "b")]
    ids = [r[0] for r in db.execute("select id from calls order by id")]
    assert ids == ["other", "post", "r2", "r3"]
    [pending], _ = load_deferred(db, 0.0)
    assert (pending.id, pending.response_id, pending.video_request) == (
        "post", "rid", "edits/720p/1",
    )  # fmt: skip
