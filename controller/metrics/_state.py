"""Gauges computed when scraped: counts from the store, live state from the
fleet and the gateway.

The store's counts are read by ``refresh`` (the ``/metrics`` handler awaits it
before rendering), because Prometheus collectors are synchronous; the fleet's
sessions and the gateway's requests in flight are read in ``collect`` itself
(in memory, on the event loop). Known statuses are always reported, as zero
when empty, so series do not vanish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from controller.store import Deployment, Worker
from shared.engines import BACKEND_NAMES
from shared.status import DeploymentStatus, WorkerStatus

if TYPE_CHECKING:
    from controller.store import Database

MIB = 1024 * 1024


class LiveSession(Protocol):
    """What the GPU gauges read of a connected agent (``controller.fleet.AgentSession``)."""

    @property
    def name(self) -> str: ...

    @property
    def gpu_devices(self) -> list[dict[str, Any]]: ...

    @property
    def gpu_stats(self) -> dict[int, dict[str, Any]]: ...


class LiveFleet(Protocol):
    """What the gauges read of the fleet (``controller.fleet.Fleet``): metrics
    depends on no other subsystem, they report to it."""

    @property
    def connected(self) -> int: ...

    def live_sessions(self) -> Iterable[LiveSession]: ...


class StateCollector(Collector):
    def __init__(self) -> None:
        self.fleet: LiveFleet | None = None
        self.in_flight: Callable[[], Mapping[str, int]] | None = None
        self._workers: dict[str, int] = {}
        self._deployments: dict[tuple[str, str], int] = {}

    async def refresh(self, db: Database) -> None:
        async with db.session() as session:
            workers = await session.execute(
                select(Worker.status, func.count()).group_by(Worker.status)
            )
            deployments = await session.execute(
                select(Deployment.status, Deployment.backend, func.count()).group_by(
                    Deployment.status, Deployment.backend
                )
            )
            self._workers = {status: count for status, count in workers}
            self._deployments = {(status, backend): count for status, backend, count in deployments}

    def collect(self) -> Iterator[Metric]:
        yield self._worker_gauge()
        yield self._deployment_gauge()
        if self.fleet is not None:
            yield GaugeMetricFamily(
                "lmstack_agent_streams_connected",
                "Agents with a live stream to this controller",
                value=self.fleet.connected,
            )
            yield from _gpu_gauges(self.fleet)
        if self.in_flight is not None:
            gauge = GaugeMetricFamily(
                "lmstack_gateway_requests_in_flight",
                "Gateway requests being forwarded to an engine, by deployment",
                labels=["deployment"],
            )
            for name, count in sorted(self.in_flight().items()):
                gauge.add_metric([name], count)
            yield gauge

    def _worker_gauge(self) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily("lmstack_workers", "Workers by status", labels=["status"])
        counts = dict.fromkeys(map(str, WorkerStatus), 0) | self._workers
        for status, count in sorted(counts.items()):
            gauge.add_metric([status], count)
        return gauge

    def _deployment_gauge(self) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily(
            "lmstack_deployments", "Deployments by status and backend", labels=["status", "backend"]
        )
        known = {(str(s), b): 0 for s in DeploymentStatus for b in BACKEND_NAMES}
        for (status, backend), count in sorted((known | self._deployments).items()):
            gauge.add_metric([status, backend], count)
        return gauge


def _gpu_gauges(fleet: LiveFleet) -> Iterator[GaugeMetricFamily]:
    labels = ["worker", "gpu"]
    used = GaugeMetricFamily(
        "lmstack_gpu_memory_used_bytes", "GPU memory in use (last heartbeat)", labels=labels
    )
    total = GaugeMetricFamily("lmstack_gpu_memory_total_bytes", "GPU memory", labels=labels)
    utilization = GaugeMetricFamily(
        "lmstack_gpu_utilization_percent", "GPU utilization, 0-100 (last heartbeat)", labels=labels
    )
    temperature = GaugeMetricFamily(
        "lmstack_gpu_temperature_celsius", "GPU temperature (last heartbeat)", labels=labels
    )
    for session in fleet.live_sessions():
        for device in session.gpu_devices:
            index = device["index"]
            key = [session.name, str(index)]
            total.add_metric(key, device["memory"] * MIB)
            stats = session.gpu_stats.get(index)
            if stats is None:
                continue  # no heartbeat yet
            used.add_metric(key, stats["memory_used"] * MIB)
            utilization.add_metric(key, stats["utilization"])
            temperature.add_metric(key, stats["temperature"])
    yield from (used, total, utilization, temperature)
