"""Counters and histograms for the per-request paths, exported when scraped.

``prometheus_client``'s metric objects are thread-safe: every update takes a
lock, and a histogram walks its buckets in Python. The gateway makes six
updates per request (HTTP and gateway counters and histograms, tokens), which
cost 15-25 µs of its ~350 µs per request on the 2-core bench machine. These
are updated on the event loop only, so plain numbers in dicts are enough: an
update is a dict lookup, a ``bisect`` and an addition. ``HotCollector`` turns
them into metric families at scrape time (also on the loop), under the same
names, labels and buckets as ``prometheus_client`` would give them.

Concurrency: event loop only (updates and ``collect``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import cast

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Key = tuple[Hashable, ...]  # label values, stringified when scraped
# How prometheus_client writes a bucket's "le" (untyped there).
_le = cast(Callable[[float], str], floatToGoString)


class HotCounter:
    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self._documentation = documentation
        self._labels = list(labels)
        self.values: dict[Key, float] = {}

    def inc(self, key: Key, amount: float = 1) -> None:
        self.values[key] = self.values.get(key, 0) + amount

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self._documentation, labels=self._labels)
        for key, value in self.values.items():
            family.add_metric([str(v) for v in key], value)
        return family


class _Series:
    __slots__ = ("counts", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)  # the last one is +Inf
        self.sum = 0.0


class HotHistogram:
    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self._documentation = documentation
        self._labels = list(labels)
        self._bounds = tuple(float(b) for b in buckets)
        self._series: dict[Key, _Series] = {}

    def observe(self, key: Key, value: float) -> None:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(len(self._bounds))
        # The first bucket whose bound is >= value: Prometheus' "le".
        series.counts[bisect_left(self._bounds, value)] += 1
        series.sum += value

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self._documentation, labels=self._labels)
        bounds = [*(_le(b) for b in self._bounds), "+Inf"]
        for key, series in self._series.items():
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, series.counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([str(v) for v in key], buckets, series.sum)
        return family


class HotCollector(Collector):
    def __init__(self, metrics: Sequence[HotCounter | HotHistogram]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            yield metric.family()
