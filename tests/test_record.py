"""The record's typed states: their stored text is part of the ledger's format, so it is pinned."""

from __future__ import annotations

from daemon.record import CallError, CostSource, DeferredState, Unmetered
from daemon.testing import make_record


def test_stored_state_texts_are_fixed() -> None:
    assert [s.value for s in CostSource] == ["reported", "computed", "unpriced"]
    assert [s.value for s in DeferredState] == [
        "pending",
        "completed",
        "expired",
        "result",
        "duplicate",
    ]
    assert "incomplete" in {u.value for u in Unmetered}
    assert CallError.HTTP_ERROR.value == "http_error"


def test_a_record_row_stores_state_text() -> None:
    record = make_record(cost_source=CostSource.COMPUTED, deferred_state=DeferredState.PENDING)
    row = record.as_row()
    # Plain str, not the StrEnum: sqlite3 binds an exact str directly, a subclass only after a
    # failed adapter look-up that raises and formats two AttributeErrors.
    assert row["cost_source"] == "computed" and type(row["cost_source"]) is str
    assert row["deferred_state"] == "pending" and type(row["deferred_state"]) is str
