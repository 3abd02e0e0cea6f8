"""The ledger rebuilt from the store after a restart (``Scheduler.load``).

Guarantees:
* Every instance assigned to a worker, whatever its status, is booked under
  its id with its stored ``gpu_indices`` at the fraction
  ``shared.engines.reservation`` gives for its deployment's backend and its own
  config, and with its stored port, until it is released.
* An instance of an engine no longer known holds whole GPUs (fraction 1.0).
* An instance whose stored port clashes with one booked already keeps its
  GPUs and is booked without the port (logged); nothing stored is dropped. The
  port is not checked against its worker's range (an agent may have changed
  its range since; the instance keeps its port until it is replaced).

The only part of the scheduler that reads the store; it runs before the API
serves, so nothing decides meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from controller.scheduler.ledger import Allocation, Ledger, LedgerConflict
from controller.store import Database, Deployment, Instance
from shared.engines import EngineConfig, reservation
from shared.errors import ConfigError

log = logging.getLogger("lmstack.scheduler")


async def restore_ledger(ledger: Ledger, db: Database) -> None:
    """Book every instance assigned to a worker in ``ledger``."""
    async with db.session() as session:
        rows = await session.execute(
            select(
                Instance.id,
                Instance.worker_id,
                Instance.config,
                Instance.gpu_indices,
                Instance.port,
                Deployment.backend,
            )
            .join(Deployment, Deployment.id == Instance.deployment_id)
            .where(Instance.worker_id.is_not(None))
        )
        for row in rows:
            restore(
                ledger,
                row.id,
                row.worker_id,
                backend=row.backend,
                config=row.config,
                gpu_indices=row.gpu_indices,
                port=row.port,
            )
    log.info("placement ledger rebuilt: %d instances", len(ledger))


def restore(
    ledger: Ledger,
    instance_id: str,
    worker_id: str,
    *,
    backend: str,
    config: Mapping[str, Any] | None,
    gpu_indices: Sequence[int] | None,
    port: int | None,
) -> None:
    """Book one stored instance."""
    try:
        fraction = reservation(backend, EngineConfig.from_mapping(config)).fraction
    except ConfigError:
        fraction = 1.0  # an engine we no longer know: assume it holds whole GPUs
    indices = tuple(int(i) for i in gpu_indices or ())
    allocation = Allocation(instance_id, worker_id, indices, fraction, port)
    try:
        ledger.add(allocation)
    except LedgerConflict as exc:
        log.warning("stored instance %s: %s; its port is not booked", instance_id, exc)
        ledger.add(Allocation(instance_id, worker_id, indices, fraction, None))
