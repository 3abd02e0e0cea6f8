"""Spots engine containers that exited without being told to (DESIGN.md section 4).

The fallback for containers no supervisor watches (``agent.supervisor`` restarts
the ones this agent process deployed); keyed by instance id.

Concurrency model: used from the event loop only, never across an ``await`` of its
own, so its bookkeeping needs no lock. It lives on the session, not the
connection, so an engine that died while the controller was away is still
reported after the reconnect.
"""

from __future__ import annotations

from collections import Counter

from agent.types import RUNNING, ContainerState, StatusUpdate

_EXITED_STATES = frozenset({"exited", "dead"})


class ExitWatcher:
    """Spots engine containers that stopped running without being told to.

    A container known to run (seen ``running`` on a heartbeat, or reported
    ``running`` by the runtime) that a later heartbeat shows ``exited`` with the
    same container id crashed, unless a Deploy or Stop for its instance ran
    in between. The generation counter makes that precise: a heartbeat takes a
    token before listing containers, and any instance whose command began or
    ended after the token is skipped for that round (the listing may predate
    the command). Learning from the runtime's own ``running`` report closes the
    gap of an engine that dies right after a deploy, before any heartbeat saw
    it run. Lives on the session, not the connection, so an engine that died
    while the controller was away is still reported after the reconnect.
    """

    def __init__(self) -> None:
        self._running: dict[str, str] = {}  # instance id -> container id seen running
        self._busy: Counter[str] = Counter()
        self._generation = 0
        self._changed_at: dict[str, int] = {}

    def token(self) -> int:
        return self._generation

    def begin(self, instance_id: str) -> None:
        self._busy[instance_id] += 1
        self._touch(instance_id)
        # Whatever runs now is being replaced or stopped on purpose.
        self._running.pop(instance_id, None)

    def end(self, instance_id: str) -> None:
        self._busy[instance_id] -= 1
        if self._busy[instance_id] <= 0:
            del self._busy[instance_id]
        self._touch(instance_id)

    def reported(self, update: StatusUpdate) -> None:
        """Learn from a status sent to the controller."""
        if update.status == RUNNING and update.container_id:
            self._running[update.instance_id] = update.container_id
        else:
            self._running.pop(update.instance_id, None)

    def observe(self, containers: list[ContainerState], token: int) -> list[ContainerState]:
        """Record ``containers`` (listed after ``token``); return those that crashed."""
        crashed: list[ContainerState] = []
        seen: set[str] = set()
        for container in containers:
            instance_id = container.instance_id
            seen.add(instance_id)
            if not self._settled(instance_id, token):
                continue
            if container.state == RUNNING:
                self._running[instance_id] = container.container_id
            elif (
                container.state in _EXITED_STATES
                and self._running.pop(instance_id, None) == container.container_id
            ):
                crashed.append(container)
        # Containers removed behind our back are forgotten, not reported: the
        # controller sees them missing from the heartbeat.
        for instance_id in self._running.keys() - seen:
            if self._settled(instance_id, token):
                del self._running[instance_id]
        return crashed

    def _settled(self, instance_id: str, token: int) -> bool:
        """No command ran for the instance since the listing began."""
        return instance_id not in self._busy and self._changed_at.get(instance_id, 0) <= token

    def _touch(self, instance_id: str) -> None:
        self._generation += 1
        self._changed_at[instance_id] = self._generation
