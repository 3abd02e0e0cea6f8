"""Where the supervisors' reports go: the attached reporter, or nowhere.

``Outlet.send`` remembers every report as the instance's last (a Deploy of a
final error is answered with it again), then hands it to the reporter attached
now, the live connection. While none is attached the report is dropped: the
next Hello lists the containers with their restarts, and the Deploys that
follow it are answered with the current state. Event loop only; ``attach`` and
``detach`` take effect for the next ``send``.
"""

from __future__ import annotations

import logging

from agent.supervisor._instance import Instance
from agent.types import Reporter, StatusUpdate

logger = logging.getLogger("lmstack.agent.supervisor")


class Outlet:
    """The reporter the supervisors' reports go to, if any."""

    def __init__(self) -> None:
        self._report: Reporter | None = None

    def attach(self, report: Reporter) -> None:
        self._report = report

    def detach(self, report: Reporter) -> None:
        if self._report == report:
            self._report = None

    async def send(self, instance: Instance, update: StatusUpdate) -> None:
        instance.last = update
        if self._report is not None:
            await self._report(update)
        else:
            logger.debug("instance %s: %s, not sent", update.instance_id, update.status)
