"""Live agent sessions (placeholder until the gRPC fleet lands).

Every call that needs an agent answers ``ServiceUnavailable`` when the worker
has no live stream.
"""

from __future__ import annotations

from controller.store import Deployment
from shared.errors import ServiceUnavailable


class Fleet:
    def __init__(self) -> None:
        self._connected: set[str] = set()

    def is_connected(self, worker_id: str) -> bool:
        return worker_id in self._connected

    async def fetch_logs(self, worker_id: str, deployment_id: str, lines: int) -> str:
        raise ServiceUnavailable(f"Worker {worker_id} has no connected agent")

    async def list_containers(self, worker_id: str) -> list[dict[str, object]]:
        raise ServiceUnavailable(f"Worker {worker_id} has no connected agent")

    async def deploy(self, deployment: Deployment) -> None:
        """Push a Deploy to the deployment's worker if its agent is connected."""

    async def stop(self, worker_id: str, deployment_id: str) -> None:
        """Push a Stop (remove) to the worker if its agent is connected."""
