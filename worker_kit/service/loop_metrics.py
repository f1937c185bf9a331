"""Counters and histograms for the event loop's hot paths: no lock, no label check per update.

prometheus_client's own metrics validate labels and take a lock on every update, which cost
more than all the rest of a small request's bookkeeping (about a tenth of the service's CPU
per `/run`). These are updated by one thread, the event loop's, and rendered by the app's
registry at scrape time in the same exposition as prometheus_client's own (`_total`,
`_bucket`, `_count`, `_sum`, `_created`), so /metrics reads exactly as before.

`labels(...)` returns the child for a label set; hot paths keep the child and update it.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["LoopCounter", "LoopHistogram"]


class _CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _HistogramChild:
    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        #: Read by the hottest callers, which count an observation without this method's call.
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        # The first bound at or above `amount`: the bucket prometheus_client counts it in.
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class _Labelled(Collector):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}

    def describe(self) -> Iterator[Metric]:
        return self.collect()


class LoopCounter(_Labelled):
    """A labelled counter (exposed as `<name>_total`)."""

    def labels(self, *values: str) -> _CounterChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[tuple(map(str, values))] = _CounterChild()
        return child  # type: ignore[return-value]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._children.items():
            assert isinstance(child, _CounterChild)
            family.add_metric(list(values), child.value, created=child.created)
        yield family


class LoopHistogram(_Labelled):
    """A labelled histogram with fixed bucket bounds (+Inf added)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]

    def labels(self, *values: str) -> _HistogramChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[tuple(map(str, values))] = _HistogramChild(self.bounds)
        return child  # type: ignore[return-value]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._children.items():
            assert isinstance(child, _HistogramChild)
            cumulative, buckets = 0, []
            for le, count in zip(self._les, child.counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(list(values), buckets, child.sum)
            family.samples.append(
                Sample(self.name + "_created", dict(zip(self.labelnames, values, strict=True)), child.created)
            )
        yield family
