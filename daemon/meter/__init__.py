"""The meter: hands each finished record to its sinks, in order, each one guarded.

Sinks are small subscribers (mitmproxy's addons), of two kinds, and the order is fixed:
1. enrichers, which may write the record: `deferred` (links a result to its request, and
   empties the usage of a result seen twice, so it is never billed twice), then `pricing`
   (fills the cost fields);
2. read-only subscribers, which only read it: fingerprints (and their webhook), metrics, the
   call log line, key names, and the ledger queue.
The daemon's list is `daemon.app.default_sinks`. A sink that raises is logged and skipped; the
relay never notices, and the call still reaches the sinks after it.

Derived records (`CallRecord.derived`: the batch results a results page holds, which are rows of
their own but not relayed calls) follow their call through the same sinks, once the meter's
``admit`` gate (`daemon.meter.batches.BatchResults.admit`) has let through the ones never seen
before: a result fetched again reaches no sink at all.

A call's start reaches the meter too (`Meter.begin`, when it is sent): the ledger journals it,
so a call the daemon dies in still gets a row (``crash``) on the next start.

Also here: the meter's own sinks (`deferred`, `fingerprints`), the batch results gate
(`batches`) and the fingerprint-change webhook (`webhook`), which the fingerprints sink's
changes trigger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from daemon.record import CallRecord

log = structlog.get_logger("xai_meter.meter")


@dataclass(frozen=True, slots=True)
class Sink:
    """One subscriber: `handle` takes a finished record; `enriches` says it may write to it."""

    name: str
    handle: Callable[[CallRecord], None]
    # optional: takes a whole batch at once (the ledger queues it as one item)
    handle_batch: Callable[[list[CallRecord]], None] | None = None
    enriches: bool = False


class Meter:
    """Runs the sinks over finished calls, enrichers first.

    Raises `ValueError` at construction when an enricher comes after a read-only subscriber
    (that subscriber would see the record before it is complete). ``admit`` picks which of a
    call's derived records to meter (None: all of them); if it raises, none are (counted as an
    error of sink ``admit``): a result left out is billed when fetched again, never twice.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        on_sink_error: Callable[[str], None] | None = None,
        admit: Callable[[list[CallRecord]], list[CallRecord]] | None = None,
        on_begin: Callable[[CallRecord], None] | None = None,
        on_void: Callable[[CallRecord], None] | None = None,
        unstarted: Callable[[CallRecord], bool] | None = None,
    ) -> None:
        readers = [s.name for s in sinks if not s.enriches]
        for i, sink in enumerate(sinks):
            if sink.enriches and any(not s.enriches for s in sinks[:i]):
                raise ValueError(
                    f"sink {sink.name!r} writes the record but runs after read-only "
                    f"subscribers ({', '.join(readers)}): put enrichers first"
                )
        self.sinks = tuple(sinks)
        self._on_sink_error = on_sink_error or (lambda name: None)
        self._admit = admit
        self._on_begin = on_begin
        self._on_void = on_void
        self._unstarted = unstarted
        self._batch: list[CallRecord] = []
        self._scheduled = False

    def begin(self, record: CallRecord) -> None:
        """The call is being sent to its upstream (``record.sent``): from here on it has a row
        whatever happens, the daemon's death included (the ledger journals its start)."""
        record.sent = True
        if self._on_begin is not None:
            self._hook("begin", self._on_begin, record)

    def void(self, record: CallRecord) -> None:
        """A call begun (`begin`) will have no row of its own after all: a WebSocket's upgrade
        record, once the session's turns are its rows. Its start is void: never a crash row."""
        if self._on_void is not None:
            self._hook("void", self._on_void, record)

    def _hook(self, name: str, hook: Callable[[CallRecord], None], record: CallRecord) -> None:
        """Run a journal hook; a failure is counted and logged as sink `name`'s, never raised
        (metering never breaks the relay)."""
        try:
            hook(record)
        except Exception:
            self._on_sink_error(name)
            log.exception("sink_failed", sink=name, call_id=record.id)

    def unstarted(self, record: CallRecord) -> bool:
        """Whether nothing of this call is on disk yet (it began moments ago, its start not
        journaled): then its end must be flushed before its client can see the end (the relay
        yields once), or a SIGKILL in between would leave no row at all."""
        return self._unstarted is not None and self._unstarted(record)

    def finish(self, record: CallRecord) -> None:
        """Take a finished call (and its admitted derived records); the sinks see them at the
        end of this loop iteration."""
        self._batch.append(record)
        if record.derived is not None:
            self._batch.extend(self._admitted(record.derived))
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (tools, tests of a sink): hand it over now
                self.flush()

    def _admitted(self, derived: list[CallRecord]) -> list[CallRecord]:
        if self._admit is None:
            return derived
        try:
            return self._admit(derived)
        except Exception:
            self._on_sink_error("admit")
            log.exception("sink_failed", sink="admit", calls=len(derived))
            return []

    def flush(self) -> None:
        """Run every sink over the calls finished so far, sink by sink (it keeps each sink's
        code and data hot across a batch; under load several calls end per loop iteration)."""
        self._scheduled = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        for sink in self.sinks:
            if sink.handle_batch is not None:
                try:
                    sink.handle_batch(batch)
                    continue
                except Exception:
                    self._on_sink_error(sink.name)
                    log.exception("sink_failed", sink=sink.name, calls=len(batch))
                    continue
            handle = sink.handle
            for record in batch:
                try:
                    handle(record)
                except Exception:
                    self._on_sink_error(sink.name)
                    log.exception("sink_failed", sink=sink.name, call_id=record.id)
