"""The meter: hands each finished record to its sinks, in order, each one guarded.

Sinks are small subscribers (mitmproxy's addons): pricing first (it fills cost fields the others
read), then metrics, the log line and the ledger queue. A sink that raises is logged and skipped;
the relay never notices, and the call is still counted by the sinks after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from daemon.record import CallRecord

log = structlog.get_logger("xai_meter.meter")


@dataclass(frozen=True, slots=True)
class Sink:
    name: str
    handle: Callable[[CallRecord], None]


class Meter:
    def __init__(self, sinks: Sequence[Sink],
                 on_sink_error: Callable[[str], None] | None = None) -> None:
        self.sinks = tuple(sinks)
        self._on_sink_error = on_sink_error or (lambda name: None)

    def finish(self, record: CallRecord) -> None:
        for sink in self.sinks:
            try:
                sink.handle(record)
            except Exception:
                self._on_sink_error(sink.name)
                log.exception("sink_failed", sink=sink.name, call_id=record.id)
