"""What one reconciliation pass does to one deployment: pure, tested directly.

Input: the desired replica count (0 while stopped), the deployment's
``spec_version``, whether a rolling update has halted, and a view of each
instance (is it draining, on a lost worker, of which spec, in which status).
Output (``Plan``): which instances to drain (then stop and remove), how many
new ones to place, and, for a rolling update, whether the new one is a surge
(when it cannot be placed, one old instance is replaced instead: ``replace``).

Rules (DESIGN.md section 7):
* Scaling: fewer live instances than desired → place the difference; more →
  drain the surplus, in this order: not running first, then of an older spec,
  then the oldest (so after a lost worker returns, its instances, older than
  their replacements, are the ones stopped).
* Lost workers (offline longer than ``reschedule_after``): their instances do
  not count; replacements are placed, and a lost instance is drained (its row
  removed; the container goes as an orphan when the worker returns) once the
  live ones cover the desired count.
* Rolling update (some live instance of an older spec): while a new-spec
  instance is not yet running, wait; when one fails (``error``), halt: it is
  drained, the old ones keep serving and ``halt`` says why. When all new ones
  run: with more live than desired, drain one old instance; else place one new
  (a surge; ``replace`` names the old one to drain instead when the surge does
  not fit).
* A halted rollout is not resumed until the next change; the deployment is
  kept at its count with instances of the old spec (``template_old``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from shared.status import DeploymentStatus


@dataclass(frozen=True)
class InstanceView:
    id: str
    spec_version: int
    status: str
    created_at: datetime
    draining: bool = False
    lost: bool = False
    status_message: str = ""


@dataclass
class Plan:
    drain: list[str] = field(default_factory=list)
    place: int = 0
    # A rolling update's new instance beyond the desired count.
    surge: bool = False
    # When the surge cannot be placed: drain this old instance instead.
    replace: str | None = None
    # A rolling update halted now, and why.
    halt: str | None = None
    # New instances get the spec of the newest old instance (a halted rollout).
    template_old: bool = False

    @property
    def idle(self) -> bool:
        return not self.drain and not self.place and self.halt is None


def _surplus_order(instance: InstanceView, spec_version: int) -> tuple[bool, bool, datetime, str]:
    return (
        instance.status == DeploymentStatus.RUNNING,
        instance.spec_version == spec_version,
        instance.created_at,
        instance.id,
    )


def plan(
    desired: int,
    spec_version: int,
    instances: Sequence[InstanceView],
    *,
    rollout_halted: bool = False,
) -> Plan:
    active = [i for i in instances if not i.draining]
    if desired <= 0:
        return Plan(drain=[i.id for i in active])
    live = [i for i in active if not i.lost]
    lost = [i for i in active if i.lost]
    result = Plan()
    if len(live) >= desired:
        result.drain.extend(i.id for i in lost)
    current = [i for i in live if i.spec_version == spec_version]
    old = [i for i in live if i.spec_version != spec_version]
    if old and not rollout_halted:
        failed = [i for i in current if i.status == DeploymentStatus.ERROR]
        if failed:
            first = failed[0]
            result.halt = (
                f"new instance {first.id[:8]} failed: {first.status_message or 'error'}; "
                f"{len(old)} instance(s) of the previous spec keep serving"
            )
            result.drain.extend(i.id for i in failed)
            return result
        if any(i.status != DeploymentStatus.RUNNING for i in current):
            return result  # the new one is on its way: wait for it
        if len(live) > desired:
            victim = min(old, key=lambda i: _surplus_order(i, spec_version))
            result.drain.append(victim.id)
        elif len(live) == desired:
            result.place = 1
            result.surge = True
            result.replace = min(old, key=lambda i: _surplus_order(i, spec_version)).id
        else:
            result.place = desired - len(live)
        return result
    result.template_old = bool(old) and rollout_halted
    if len(live) < desired:
        result.place = desired - len(live)
    elif len(live) > desired:
        ordered = sorted(live, key=lambda i: _surplus_order(i, spec_version))
        result.drain.extend(i.id for i in ordered[: len(live) - desired])
    return result
