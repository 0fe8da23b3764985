"""The batch results gate (daemon/meter/batches.py) and the meter's derived records."""

from __future__ import annotations

from daemon.meter import Meter, Sink
from daemon.meter.batches import BatchResults
from daemon.record import CallRecord
from daemon.testing import make_record


def result(batch_id: str, request_id: str) -> CallRecord:
    return make_record(
        id=f"{batch_id}:{request_id}", endpoint="batches.result", linked_id=batch_id,
        response_id=request_id,
    )  # fmt: skip


def test_each_result_is_admitted_once_and_what_was_loaded_never() -> None:
    gate = BatchResults()
    gate.load([("b1", "a"), ("b1", "b"), ("b2", "a")])
    assert gate.count() == 3
    first = gate.admit([result("b1", "a"), result("b1", "c"), result("b2", "b"),
                        result("b1", "c")])  # fmt: skip
    assert [r.id for r in first] == ["b1:c", "b2:b"]  # a page may repeat one, too
    assert gate.admit([result("b1", "c"), result("b3", "a")])[0].id == "b3:a"
    assert gate.count() == 6


def test_derived_records_follow_their_call_through_the_sinks_once() -> None:
    seen: list[str] = []
    errors: list[str] = []
    gate = BatchResults()
    meter = Meter([Sink("seen", lambda r: seen.append(r.id))], errors.append, gate.admit)
    page = make_record(id="page", endpoint="batches", billable=False)
    page.derived = [result("b1", "a"), result("b1", "b")]
    meter.finish(page)
    again = make_record(id="again", endpoint="batches", billable=False)
    again.derived = [result("b1", "b"), result("b1", "c")]
    meter.finish(again)
    assert seen == ["page", "b1:a", "b1:b", "again", "b1:c"]

    def broken(derived: list[CallRecord]) -> list[CallRecord]:
        raise RuntimeError("gate")

    seen.clear()
    failing = Meter([Sink("seen", lambda r: seen.append(r.id))], errors.append, broken)
    page.derived = [result("b9", "z")]
    failing.finish(page)
    assert (seen, errors) == (["page"], ["admit"])  # left out: billed on a later fetch
