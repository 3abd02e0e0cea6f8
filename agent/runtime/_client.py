"""The Docker SDK client: connected lazily, called from the loop through worker threads.

Guarantees: every blocking Docker call made through ``EngineClient.call`` runs in a
worker thread (``asyncio.to_thread``), so the event loop never blocks on the engine,
and its Docker errors come back translated (``RuntimeUnavailable`` for an engine that
cannot be reached, ``ContainerError`` for anything it refuses). The SDK client is made
once, by whichever worker thread needs it first, under a lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import docker
import docker.errors

from agent.runtime._errors import translated
from shared.errors import RuntimeUnavailable

P = ParamSpec("P")
T = TypeVar("T")


class EngineClient:
    """One Docker engine, by ``docker_host`` (empty: the environment's default)."""

    def __init__(self, docker_host: str = "", timeout: int = 120) -> None:
        self._docker_host = docker_host
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    def sdk(self) -> docker.DockerClient:
        """The client, connected on first use. Runs in a worker thread."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> docker.DockerClient:
        try:
            if self._docker_host:
                return docker.DockerClient(
                    base_url=self._docker_host, version="auto", timeout=self._timeout
                )
            return docker.from_env(version="auto", timeout=self._timeout)
        except docker.errors.DockerException as exc:
            where = self._docker_host or "the default endpoint"
            raise RuntimeUnavailable(f"Docker engine not reachable at {where}: {exc}") from exc

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking Docker call in a thread, translating its errors."""
        with translated():
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)
