"""One supervised instance's bookkeeping: its phase, events and what it last said.

An ``Instance`` is plain state, read and written on the event loop only, by the
registry (``_supervisors``) and by the instance's one current supervisor task
(``_supervise``). Its methods do no I/O: ``stamp`` folds a runtime report into
the instance's memory, ``error_report`` builds the ``error`` report of a failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum

from agent.restarts import Failure, RestartBackoff, with_note
from agent.types import ERROR, DeploySpec, StatusUpdate


class Phase(StrEnum):
    DEPLOYING = "deploying"
    RUNNING = "running"
    BACKING_OFF = "backing-off"
    FINAL = "final"


@dataclass(eq=False)
class Instance:
    spec: DeploySpec
    backoff: RestartBackoff
    restarts: int = 0
    phase: Phase = Phase.DEPLOYING
    task: asyncio.Task[None] | None = None
    # Set once the current attempt has an outcome (running, or an error report).
    outcome: asyncio.Event = field(default_factory=asyncio.Event)
    # Set by a newer Deploy of the same spec while a restart is pending.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when a heartbeat's listing saw the running engine's container stopped.
    poke: asyncio.Event = field(default_factory=asyncio.Event)
    # The failure the pending restart or the final error answers.
    failure: Failure | None = None
    last: StatusUpdate | None = None
    container_id: str = ""
    started_at: str = ""
    # The container seen running, and since when (the supervisors' clock).
    running_container: str = ""
    running_since: float = 0.0

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    def stamp(self, update: StatusUpdate) -> StatusUpdate:
        """``update`` with the instance's ids and restart count; remembers what it says."""
        self.restarts = max(self.restarts, update.restarts)
        if update.container_id:
            self.container_id = update.container_id
        if update.started_at:
            self.started_at = update.started_at
        return dataclasses.replace(
            update,
            deployment_id=update.deployment_id or self.spec.deployment_id,
            restarts=self.restarts,
        )

    def error_report(self, failure: Failure, note: str, *, final: bool) -> StatusUpdate:
        """The ``error`` report of ``failure``, ``note`` saying what happens next."""
        return self.spec.status_update(
            ERROR,
            with_note(failure.message, note),
            container_id=self.container_id,
            exit_code=failure.exit_code,
            restarts=self.restarts,
            started_at=self.started_at,
            final=final,
        )
