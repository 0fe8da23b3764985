"""The Meter (daemon/meter/): enrichers run before read-only subscribers, each one guarded."""

from __future__ import annotations

import pytest

from daemon.meter import Meter, Sink
from daemon.record import CallRecord
from daemon.testing import make_record


def test_an_enricher_after_a_reader_is_refused() -> None:
    with pytest.raises(ValueError, match="'pricing' writes the record but runs after read-only"):
        Meter([Sink("metrics", lambda r: None), Sink("pricing", lambda r: None, enriches=True)])


def test_sinks_run_in_order_and_a_failing_one_is_skipped() -> None:
    seen: list[tuple[str, str | None]] = []
    failed: list[str] = []

    def enrich(record: CallRecord) -> None:
        record.model = "grok-4.3"

    def broken(record: CallRecord) -> None:
        raise RuntimeError("boom")

    meter = Meter(
        [
            Sink("enrich", enrich, enriches=True),
            Sink("broken", broken),
            Sink("reader", lambda r: seen.append((r.id, r.model))),
        ],
        on_sink_error=failed.append,
    )
    meter.finish(make_record(id="a"))  # no running loop: handed over at once
    meter.finish(make_record(id="b"))
    assert seen == [("a", "grok-4.3"), ("b", "grok-4.3")]
    assert failed == ["broken", "broken"]
