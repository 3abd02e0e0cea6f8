"""Instance rows for gateway tests, written straight to the store.

The gateway routes to the ``instances`` of a deployment. The deployment
service writes them; these helpers add what a test needs beyond that (a
second instance on another stand-in engine, an instance marked draining) and
keep the deployment's ``replicas`` equal to its serving instances, so the
service's reconciliation sees nothing to scale.
"""

from __future__ import annotations

from sqlalchemy import select, update

from controller.store import Database, Deployment, Instance
from shared.status import DeploymentStatus


async def instance_ids(db: Database, deployment_id: str) -> list[str]:
    """The deployment's instances, oldest first."""
    async with db.session() as session:
        rows = await session.scalars(
            select(Instance.id)
            .where(Instance.deployment_id == deployment_id)
            .order_by(Instance.created_at, Instance.id)
        )
        return list(rows)


async def add_instance(db: Database, deployment_id: str, worker_id: str, port: int) -> str:
    """One more running instance of the deployment, on ``worker_id`` at ``port``."""
    async with db.session() as session:
        row = await session.get(Deployment, deployment_id)
        assert row is not None
        instance = Instance(
            deployment_id=row.id, worker_id=worker_id, port=port, status=DeploymentStatus.RUNNING,
            spec_version=row.spec_version, model=row.model, config=dict(row.config),
        )  # fmt: skip
        session.add(instance)
        row.replicas += 1
        await session.commit()
        return instance.id


async def set_draining(db: Database, instance_id: str) -> None:
    """Mark the instance draining, as the deployment service does before it
    stops one (one replica fewer serves)."""
    async with db.session() as session:
        instance = await session.get(Instance, instance_id)
        assert instance is not None
        instance.draining = True
        await session.execute(
            update(Deployment)
            .where(Deployment.id == instance.deployment_id, Deployment.replicas > 1)
            .values(replicas=Deployment.replicas - 1)
        )
        await session.commit()
