"""A deployment's documented columns, derived from its instances.

The REST API (``../shared/spec/rest-api.md``) documents one ``status``,
``status_message``, ``worker_id``, ``container_id``, ``port`` and
``gpu_indices`` per deployment. With replicas they are an aggregate, stored on
the deployment row so lists filter and page without reading instances, and
recomputed (``refresh``) in the same transaction as every change of an
instance or of the deployment's desired state.

Rules (DESIGN.md section 7):
* ``status`` is ``running`` while at least one instance that is not draining
  runs. Otherwise the most advanced step any such instance is at (``starting``,
  ``downloading``, ``pending``), else ``error`` when they all failed. A
  deployment that is stopped (``POST .../stop``) or scaled to 0 is
  ``stopping`` while instances remain and ``stopped`` after.
* ``worker_id``, ``container_id``, ``port`` and ``gpu_indices`` are those of
  the first running instance (by creation), else of the first instance, else
  empty.
* ``status_message`` says what a client should know: the first failing
  instance's message when none runs, how many replicas are ready when fewer
  than desired run, and why a rolling update halted.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.store.models import Deployment, Instance
from shared.status import DeploymentStatus

# Most advanced first: the step shown when no instance runs.
_PROGRESS = (
    DeploymentStatus.STARTING,
    DeploymentStatus.DOWNLOADING,
    DeploymentStatus.PENDING,
    DeploymentStatus.ERROR,
    DeploymentStatus.STOPPING,
    DeploymentStatus.STOPPED,
)


def desired_replicas(row: Deployment) -> int:
    """How many instances should run: 0 while stopped."""
    return 0 if row.stopped else row.replicas


def ready(instances: Sequence[Instance]) -> int:
    """Instances that serve: running and not draining."""
    return sum(1 for i in instances if i.status == DeploymentStatus.RUNNING and not i.draining)


def apply(row: Deployment, instances: Sequence[Instance], note: str = "") -> bool:
    """Set ``row``'s aggregate columns from ``instances``; whether anything
    changed. ``note`` (why some replicas could not be placed) joins the message."""
    ordered = sorted(instances, key=lambda i: (i.created_at, i.id))
    serving = [i for i in ordered if not i.draining]
    running = [i for i in serving if i.status == DeploymentStatus.RUNNING]
    desired = desired_replicas(row)
    messages: list[str] = []
    if desired == 0:
        status = DeploymentStatus.STOPPING if ordered else DeploymentStatus.STOPPED
        messages.append("stopped" if row.stopped else "scaled to 0 replicas")
    elif running:
        status = DeploymentStatus.RUNNING
        if len(running) < desired:
            messages.append(f"{len(running)} of {desired} replicas ready")
    elif not serving:
        status = DeploymentStatus.STOPPING if ordered else DeploymentStatus.PENDING
        messages.append(f"0 of {desired} replicas placed")
    else:
        status = min(
            (DeploymentStatus(i.status) for i in serving),
            key=lambda s: _PROGRESS.index(s) if s in _PROGRESS else len(_PROGRESS),
        )
        failing = next((i for i in serving if i.status == DeploymentStatus.ERROR), None)
        if failing is not None and failing.status_message:
            messages.append(failing.status_message)
        elif serving[0].status_message:
            messages.append(serving[0].status_message)
    if note:
        messages.append(note)
    if row.rollout_error:
        messages.append(f"rolling update halted: {row.rollout_error}")
    first = running[0] if running else (ordered[0] if ordered else None)
    values = {
        "status": str(status),
        "status_message": "; ".join(messages),
        "worker_id": first.worker_id if first else None,
        "container_id": first.container_id if first else None,
        "port": first.port if first else None,
        "gpu_indices": list(first.gpu_indices or []) if first else [],
    }
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


async def refresh(session: AsyncSession, row: Deployment) -> bool:
    """Recompute ``row``'s aggregate from its stored instances (flushed first)."""
    await session.flush()
    instances = list(
        await session.scalars(select(Instance).where(Instance.deployment_id == row.id))
    )
    return apply(row, instances)
