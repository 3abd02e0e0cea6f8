"""Where each model name is served: the gateway's routing table.

A ``Route`` is one deployment (its name, served model, status and admission
limits, from the deployment row) and the instances that may take requests
(``Upstream``): those ``running``, not ``draining``, with a port, on a worker
with an address. Whether an instance's worker is online is not part of the
route: it is asked of the fleet live, per request (``usable``).

Guarantees:
* A lookup on the hot path touches no database while its entry is fresh;
  entries live ``ttl`` seconds and the whole table is dropped whenever the
  fleet reports a change (connect, disconnect, status report, deploy, stop, an
  instance marked draining), so a change is seen by the next request.
* Concurrent misses for one name share one query (``SingleFlight``), so an
  entry expiring under load costs one query, not one per request in flight;
  but a lookup made after an invalidation never shares a load that started
  before it (loads are shared per generation of the table).
* A load that started before an invalidation is not cached: it may have read
  the state the invalidation announced as changed.
* ``current(route)`` is the route itself while no invalidation came since its
  load (no await, no query), else the table's answer now. The proxy picks an
  instance from ``current`` with nothing awaited in between, so after
  ``Fleet.changed()`` returns no request is newly sent to an instance the
  change made unusable (what draining relies on, ``inflight``).
* Each route carries its deployment's admission limits (``admission``), so a
  changed config reaches the gate when the entry reloads.

Concurrency: event loop only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, and_, select

from controller.gateway.admission import AdmissionLimits
from controller.gateway.errors import GatewayError
from controller.singleflight import SingleFlight
from controller.store import Database, Deployment, Instance, Worker
from shared.engines import EngineConfig, served_model_name
from shared.status import DeploymentStatus


@dataclass(frozen=True)
class Upstream:
    """One instance's engine, as the gateway reaches it."""

    instance_id: str
    worker_id: str
    host: str
    port: int

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class Route:
    deployment_id: str
    name: str
    served_model: str
    status: str
    created: int
    # Instances that may take requests, oldest first (their workers' liveness aside).
    instances: tuple[Upstream, ...] = ()
    # The deployment's gate (``admission.Admission``); None: no max_parallel.
    admission: AdmissionLimits | None = None
    # The table's generation when this route was read (``RouteTable.current``).
    generation: int = dataclasses.field(default=0, compare=False)

    def usable(self, online: Callable[[str], bool]) -> list[Upstream]:
        """The instances whose worker is ``online`` now."""
        return [u for u in self.instances if online(u.worker_id)]


def usable(route: Route, online: Callable[[str], bool]) -> list[Upstream]:
    """The instances that may take a request of ``route`` now (never empty):
    ``GatewayError`` 503 when the deployment is not running or none is."""
    if route.status != DeploymentStatus.RUNNING:
        raise GatewayError(
            503, "model_not_ready", f"Deployment '{route.name}' is {route.status}, not running"
        )
    found = route.usable(online)
    if found:
        return found
    if not route.instances:
        raise GatewayError(
            503, "model_not_ready", f"Deployment '{route.name}' has no running instance"
        )
    many = len({u.worker_id for u in route.instances}) > 1
    where = "Every worker" if many else "The worker"
    raise GatewayError(503, "worker_offline", f"{where} serving '{route.name}' is offline")


class RouteTable:
    def __init__(
        self, db: Database, *, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = db
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[Route | None, float]] = {}
        self._loads: SingleFlight[tuple[str, int], Route | None] = SingleFlight()
        self._generation = 0

    def invalidate(self) -> None:
        self._entries.clear()
        self._generation += 1

    async def lookup(self, name: str) -> Route | None:
        entry = self._entries.get(name)
        if entry is not None and entry[1] > self._clock():
            return entry[0]
        generation = self._generation
        return await self._loads.run(
            (name, generation), lambda: self._load_and_cache(name, generation)
        )

    async def current(self, route: Route) -> Route | None:
        """``route`` while the table has not been invalidated since it was
        read, else the route of its name now (None: no longer there)."""
        if route.generation == self._generation:
            return route
        return await self.lookup(route.name)

    async def _load_and_cache(self, name: str, generation: int) -> Route | None:
        async with self._db.session() as session:
            query = _serving().where(Deployment.name == name)
            rows = (await session.execute(query.order_by(*_OLDEST_FIRST))).all()
        route = _route(rows[0][0], _upstreams(rows), generation) if rows else None
        if generation == self._generation:
            self._entries[name] = (route, self._clock() + self._ttl)
        return route

    async def running(self) -> list[Route]:
        """Running deployments with at least one instance that may take
        requests, by name (their workers' liveness aside)."""
        query = (
            _serving(inner=True)
            .where(Deployment.status == DeploymentStatus.RUNNING)
            .order_by(Deployment.name, *_OLDEST_FIRST)
        )
        async with self._db.session() as session:
            rows = (await session.execute(query)).all()
        by_deployment: dict[str, list[Row[Deployment, str, str | None, int | None, str]]] = {}
        for row in rows:
            by_deployment.setdefault(row[0].id, []).append(row)
        routes = (
            _route(found[0][0], _upstreams(found), self._generation)
            for found in by_deployment.values()
        )
        return [route for route in routes if route.instances]


_OLDEST_FIRST = (Instance.created_at, Instance.id)


def _serving(*, inner: bool = False) -> Select[Deployment, str, str | None, int | None, str]:
    """Deployments with their serving instances (one row per instance; with a
    left join, one row with NULLs for a deployment that has none)."""
    serving = and_(
        Instance.deployment_id == Deployment.id,
        Instance.status == DeploymentStatus.RUNNING,
        Instance.draining.is_(False),
        Instance.port.is_not(None),
    )
    query = select(
        Deployment, Instance.id, Instance.worker_id, Instance.port, Worker.advertise_address
    )
    query = query.join(Instance, serving, isouter=not inner)
    return query.join(Worker, Worker.id == Instance.worker_id, isouter=not inner)


def _upstreams(rows: Iterable[Sequence[Any]]) -> tuple[Upstream, ...]:
    return tuple(
        Upstream(instance_id, worker_id, address.strip("[]"), port)
        for _, instance_id, worker_id, port, address in rows
        if instance_id is not None and worker_id is not None and address and port
    )


def _route(row: Deployment, instances: tuple[Upstream, ...], generation: int) -> Route:
    config = EngineConfig.from_mapping(row.config)
    return Route(
        deployment_id=row.id,
        name=row.name,
        served_model=served_model_name(row.backend, row.name, row.model, config),
        status=row.status,
        created=int(row.created_at.timestamp()),
        instances=instances,
        admission=AdmissionLimits.of(config),
        generation=generation,
    )
