"""The rules every dialect shares (daemon/dialects/base.py)."""

from __future__ import annotations

from daemon.dialects.base import note_model_and_id
from daemon.testing import make_record


def test_note_model_and_id_first_non_empty_value_wins() -> None:
    record = make_record()
    note_model_and_id(record, "", None)  # nothing yet
    note_model_and_id(record, 12, ["id"])  # not strings: no value
    assert (record.model, record.response_id) == (None, None)
    note_model_and_id(record, "grok-4", "id-1")
    note_model_and_id(record, "grok-other", "id-2")
    note_model_and_id(record, None, "")
    assert (record.model, record.response_id) == ("grok-4", "id-1")
    other = make_record()
    note_model_and_id(other, None, "id-only")
    note_model_and_id(other, "m" * 300)
    assert (other.model, other.response_id) == ("m" * 200, "id-only")
