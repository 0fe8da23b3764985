"""Counters, gauges and histograms for the per-call metrics, updated without locks.

prometheus_client's metrics take a lock and a child lookup per update: with some twenty updates
per call that cost as much as the rest of the meter. These are only ever updated on the event
loop's thread, so a dict of label tuples and plain floats will do; a scrape (in another thread)
reads a snapshot taken in one C-level copy, which the GIL keeps consistent. They are registered
in the injected registry like any collector, so names, types and labels look the same.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]


class LoopCounter(Collector):
    """A counter per label tuple, lock-free: `inc` only on the event loop's thread. It registers
    itself as a collector; a scrape exports a snapshot as a counter (``_total`` added)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name  # without "_total"; the exposition adds it
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.values: dict[Labels, float] = {}
        registry.register(self)

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            family.add_metric(labels, value)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


class LoopGauge(Collector):
    """A gauge set per label tuple (the last value wins)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.values: dict[Labels, float] = {}
        registry.register(self)

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            family.add_metric(labels, value)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)


class LoopHistogram(Collector):
    """A histogram per label tuple, lock-free: `observe` only on the event loop's thread. It
    registers itself as a collector; a scrape exports cumulative buckets, ``+Inf`` and the sum."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        # per label tuple: [count in each bucket (not cumulative) ..., +Inf count, sum]
        self.values: dict[Labels, list[float]] = {}
        registry.register(self)

    def observe(self, labels: Labels, value: float) -> None:
        row = self.values.get(labels)
        if row is None:
            row = self.values[labels] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [*map(floatToGoString, self.bounds), "+Inf"]
        for labels, row in list(self.values.items()):
            row = list(row)
            cumulative, buckets = 0.0, []
            for edge, count in zip(edges, row[:-1], strict=True):
                cumulative += count
                buckets.append((edge, cumulative))
            family.add_metric(labels, buckets, row[-1])
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
