"""The hot-path counters and histograms expose exactly what prometheus_client's
own ``Counter`` and ``Histogram`` would for the same updates."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from controller.metrics._hot import HotCollector, HotCounter, HotHistogram

BUCKETS = (0.005, 0.01, 0.1, 1, 2.5, 10, 600)
# On bounds, between them, below the first, above the last.
OBSERVED = [0.0, 0.005, 0.0051, 0.01, 0.05, 1, 1.0000001, 2.5, 9.99, 10, 599, 600, 601, 1e6]


def exposition(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if "_created" not in line)


def test_histogram_matches_prometheus_client() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("lat_seconds", "Latency", ["route"], buckets=BUCKETS, registry=theirs)
    hot = HotHistogram("lat_seconds", "Latency", ["route"], BUCKETS)
    ours.register(HotCollector([hot]))
    for i, value in enumerate(OBSERVED):
        route = "/a" if i % 3 else "/b"
        reference.labels(route).observe(value)
        hot.observe((route,), value)
    assert exposition(ours) == exposition(theirs)
    assert 'lat_seconds_bucket{le="+Inf",route="/a"}' in "\n".join(exposition(ours))


def test_counter_matches_prometheus_client() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Counter("reqs", "Requests", ["deployment", "status"], registry=theirs)
    hot = HotCounter("reqs", "Requests", ["deployment", "status"])
    ours.register(HotCollector([hot]))
    for deployment, status, amount in [("a", 200, 1), ("a", 200, 2.5), ("b", 502, 1)]:
        reference.labels(deployment, str(status)).inc(amount)
        hot.inc((deployment, status), amount)  # label values are stringified when scraped
    assert exposition(ours) == exposition(theirs)
    assert 'reqs_total{deployment="a",status="200"} 3.5' in exposition(ours)


def test_nothing_observed_exposes_no_series() -> None:
    registry = CollectorRegistry()
    registry.register(HotCollector([HotCounter("c", "C", ["x"]), HotHistogram("h", "H", [], (1,))]))
    assert not [line for line in exposition(registry) if not line.startswith("#")]
