"""Where each model name is served: the gateway's routing table.

Guarantees:
* A lookup on the hot path touches no database while its entry is fresh;
  entries live ``ttl`` seconds and the whole table is dropped whenever the
  fleet reports a change (connect, disconnect, status report, deploy, stop),
  so a status change is seen by the next request.
* Whether the worker is online is asked of the fleet live, per request.
* Concurrent misses for one name share one query (``SingleFlight``), so an
  entry expiring under load costs one query, not one per request in flight.
* A load that started before an invalidation is not cached: it may have read
  the state the invalidation announced as changed.
* Each route carries its deployment's admission limits (``admission``), so a
  changed config reaches the gate when the entry reloads.

Concurrency: event loop only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from controller.gateway.admission import AdmissionLimits
from controller.singleflight import SingleFlight
from controller.store import Database, Deployment, Worker
from shared.engines import EngineConfig, served_model_name
from shared.status import DeploymentStatus


@dataclass(frozen=True)
class Route:
    deployment_id: str
    name: str
    served_model: str
    status: str
    worker_id: str | None
    host: str  # empty while the worker has no address
    port: int  # 0 while the deployment has no port
    created: int
    # The deployment's gate (``admission.Admission``); None: no max_parallel.
    admission: AdmissionLimits | None = None

    @property
    def reachable(self) -> bool:
        return bool(self.host and self.port)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return f"http://{host}:{self.port}"


class RouteTable:
    def __init__(
        self, db: Database, *, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = db
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[Route | None, float]] = {}
        self._loads: SingleFlight[str, Route | None] = SingleFlight()
        self._generation = 0

    def invalidate(self) -> None:
        self._entries.clear()
        self._generation += 1

    async def lookup(self, name: str) -> Route | None:
        entry = self._entries.get(name)
        if entry is not None and entry[1] > self._clock():
            return entry[0]
        return await self._loads.run(name, lambda: self._load_and_cache(name))

    async def _load_and_cache(self, name: str) -> Route | None:
        generation = self._generation
        route = await self._load(name)
        if generation == self._generation:
            self._entries[name] = (route, self._clock() + self._ttl)
        return route

    async def _load(self, name: str) -> Route | None:
        async with self._db.session() as session:
            found = (
                await session.execute(
                    select(Deployment, Worker.advertise_address)
                    .outerjoin(Worker, Worker.id == Deployment.worker_id)
                    .where(Deployment.name == name)
                )
            ).first()
        if found is None:
            return None
        return _route(found[0], found[1])

    async def running(self) -> list[Route]:
        async with self._db.session() as session:
            rows = await session.execute(
                select(Deployment, Worker.advertise_address)
                .join(Worker, Worker.id == Deployment.worker_id)
                .where(Deployment.status == DeploymentStatus.RUNNING)
                .order_by(Deployment.name)
            )
            return [_route(row[0], row[1]) for row in rows]


def _route(row: Deployment, address: str | None) -> Route:
    config = EngineConfig.from_mapping(row.config)
    return Route(
        deployment_id=row.id,
        name=row.name,
        served_model=served_model_name(row.backend, row.name, row.model, config),
        status=row.status,
        worker_id=row.worker_id,
        host=(address or "").strip("[]"),
        port=row.port or 0,
        created=int(row.created_at.timestamp()),
        admission=AdmissionLimits.of(config),
    )
