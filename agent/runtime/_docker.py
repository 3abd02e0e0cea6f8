"""``DockerRuntime``: engine containers on the local Docker engine, through the Docker SDK.

Guarantees:

* Every blocking Docker call runs in a worker thread (``agent.runtime._client``); the
  event loop never blocks on the engine.
* Docker's errors are translated where they enter our code: an unreachable engine becomes
  ``RuntimeUnavailable``, anything the engine refuses becomes ``ContainerError``.
* ``deploy`` and ``stop`` never raise for a failed operation: they report ``error`` with a
  message (exit code and last log lines when the engine exited). A failed ``deploy``
  leaves no container behind (``agent.runtime._deploys``).
* ``info`` never raises; it says why the engine is unavailable.
* Everything is keyed by instance id: the instance's container is found by its
  labels (``agent.runtime._containers.find``), never by its name.
* ``probe`` reads the container's state and, when it runs, asks its health
  endpoint once (the backend's path, on the port of its ``lmstack.host_port``
  label); no container is ``Probe(state="")``.
* ``stop`` with a cluster id refuses a container labelled with another cluster
  (reported as ``error``, left running); stopping and removing a container holds its
  name's lock, so a deploy of that name creates only once the name is free.
* ``follow_logs`` reads Docker's log stream through the shared thread bridge
  (``agent.runtime._bridge``): bounded read-ahead, and leaving the iterator closes the
  stream's socket and ends the reader thread.

The session must not run ``deploy`` and ``stop`` of one instance concurrently (it cancels
the instance's supervisor before stopping); different instances may run in parallel.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import docker.errors
from docker.models.containers import Container

from agent.backends import get_backend
from agent.runtime._bridge import iterate_in_thread
from agent.runtime._client import EngineClient
from agent.runtime._containers import (
    container_state,
    find,
    foreign,
    instance_of,
    managed,
    restarts_of,
    started_at,
    tail,
)
from agent.runtime._containers import remove as remove_container
from agent.runtime._deploys import Deployer
from agent.runtime._errors import translated
from agent.runtime._health import health_url, healthy, http_session
from agent.runtime._names import NameLocks
from agent.types import (
    ERROR,
    LABEL_BACKEND,
    LABEL_DEPLOYMENT_ID,
    LABEL_HOST_PORT,
    STOPPED,
    STOPPING,
    ContainerState,
    DeploySpec,
    Probe,
    Reporter,
    RuntimeInfo,
    StatusUpdate,
)
from shared.errors import ConfigError, ContainerError, LMStackError
from shared.status import DeploymentStatus

log = logging.getLogger("lmstack.agent.runtime")

# Log chunks read ahead of a slow follower before the reader thread waits.
FOLLOW_QUEUE = 64


class DockerRuntime:
    """The real ``Runtime`` (see ``agent.types``)."""

    def __init__(
        self,
        *,
        docker_host: str = "",
        hf_cache_dir: Path,
        ready_timeout: float,
        hf_token: str | None,
        simulate_gpus: bool = False,
        health_host: str = "127.0.0.1",
        bind_address: str = "0.0.0.0",
        stop_timeout: int = 30,
        docker_timeout: int = 120,
    ) -> None:
        self._client = EngineClient(docker_host, docker_timeout)
        self._stop_timeout = stop_timeout
        self._health_host = health_host
        self._names = NameLocks()
        self._deployer = Deployer(
            self._client,
            hf_cache_dir=hf_cache_dir,
            ready_timeout=ready_timeout,
            hf_token=hf_token,
            simulate_gpus=simulate_gpus,
            health_host=health_host,
            # Engines are reached by the gateway on the advertise address: publish on
            # all interfaces unless told otherwise.
            bind_address=bind_address,
            names=self._names,
        )

    async def close(self) -> None:
        await self._client.close()

    # -- queries -----------------------------------------------------------------------

    async def info(self) -> RuntimeInfo:
        def version() -> str:
            return str(self._client.sdk().version().get("Version", ""))

        try:
            return RuntimeInfo(available=True, version=await self._client.call(version))
        except Exception as exc:
            # info() is how callers learn the engine is down: it reports, never raises.
            log.warning("Docker engine unavailable: %s", exc)
            return RuntimeInfo(available=False, error=str(exc))

    async def list_containers(self) -> list[ContainerState]:
        def listing() -> list[ContainerState]:
            return [container_state(c) for c in managed(self._client)]

        return await self._client.call(listing)

    async def logs(self, instance_id: str, lines: int) -> str:
        """Raises ``ContainerError`` when the instance has no container here."""
        container = await self._container(instance_id)
        return await self._client.call(tail, container, lines if lines > 0 else None)

    async def follow_logs(self, instance_id: str, tail: int) -> AsyncIterator[str]:
        """Docker's ``logs(follow=True)``, read through the thread bridge. Closing the
        generator shuts the log stream's socket, which ends the reader thread."""
        container = await self._container(instance_id)
        stream: Iterable[bytes] = await self._client.call(
            container.logs, stdout=True, stderr=True, stream=True, follow=True, tail=tail
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        chunks = iterate_in_thread(lambda: stream, buffer=FOLLOW_QUEUE, close=_closer(stream))
        with translated():
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    if text := decoder.decode(chunk):
                        yield text

    async def probe(self, instance_id: str) -> Probe:
        container = await self._client.call(find, self._client, instance_id)
        if container is None:
            return Probe(state="")
        state = container.attrs.get("State", {})
        probe = Probe(
            state=str(state.get("Status", container.status)),
            container_id=str(container.id),
            exit_code=int(state.get("ExitCode", 0)),
            oom=bool(state.get("OOMKilled")),
        )
        if probe.state != "running":
            return probe
        url = _health_url_of(container, self._health_host)
        if url is None:
            return probe
        async with http_session() as http:
            return dataclasses.replace(probe, healthy=await healthy(http, url))

    async def _container(self, instance_id: str) -> Container:
        container = await self._client.call(find, self._client, instance_id)
        if container is None:
            raise ContainerError(f"no container for instance {instance_id}")
        return container

    # -- commands ----------------------------------------------------------------------

    async def deploy(self, spec: DeploySpec, report: Reporter) -> None:
        await self._deployer.deploy(spec, report)

    async def stop(
        self, instance_id: str, remove: bool, report: Reporter, cluster_id: str = ""
    ) -> None:
        try:
            container = await self._client.call(find, self._client, instance_id)
            if container is None:
                await report(StatusUpdate(instance_id, STOPPED, "no container"))
                return
            update = _reporting(container)
            container_id = str(container.id)
            other = foreign(container, cluster_id)
            if other is not None:
                log.warning(
                    "refusing to stop %s (%.12s): it belongs to cluster %s, not %s",
                    container.name, container_id, other, cluster_id,
                )  # fmt: skip
                await report(
                    update(
                        ERROR,
                        f"refused: container {container.name} belongs to LMStack cluster "
                        f"{other}, not to this controller's cluster {cluster_id}; left running",
                    )
                )
                return
            await report(update(STOPPING))
            # Under the name's lock: a deploy of the same name waits until it is free.
            exit_code = await self._names.run(
                str(container.name),
                lambda: self._client.call(self._stop_container, container, remove),
            )
        except LMStackError as exc:
            log.warning("stopping instance %s failed: %s", instance_id, exc)
            await report(StatusUpdate(instance_id, ERROR, f"stopping failed: {exc}"))
            return
        log.info("instance %s stopped (container %.12s)", instance_id, container_id)
        await report(update(STOPPED, "removed" if remove else "", exit_code=exit_code))

    def _stop_container(self, container: Container, remove: bool) -> int | None:
        """Stop, optionally remove; the exit code, ``None`` when already gone."""
        try:
            container.stop(timeout=self._stop_timeout)
            container.reload()
            exit_code = int(container.attrs.get("State", {}).get("ExitCode", 0))
        except docker.errors.NotFound:
            return None
        if remove:
            remove_container(container)
        return exit_code


def _reporting(container: Container) -> Callable[..., StatusUpdate]:
    """Reports about ``container``: its instance, deployment, port and restarts."""
    labels = container.labels

    def update(status: DeploymentStatus, message: str = "", **fields: Any) -> StatusUpdate:
        return StatusUpdate(
            instance_of(container),
            status,
            message,
            container_id=str(container.id),
            port=_port(container),
            deployment_id=str(labels.get(LABEL_DEPLOYMENT_ID, "")),
            restarts=restarts_of(container),
            started_at=started_at(container),
            **fields,
        )

    return update


def _port(container: Container) -> int:
    try:
        return int(container.labels.get(LABEL_HOST_PORT, "0"))
    except ValueError:
        return 0


def _health_url_of(container: Container, host: str) -> str | None:
    """Its backend's health endpoint on its host port; ``None`` when unknown."""
    try:
        backend = get_backend(str(container.labels.get(LABEL_BACKEND, "")))
    except ConfigError:
        return None
    port = _port(container)
    return health_url(host, port, backend.health_path) if port else None


def _closer(stream: object) -> Callable[[], None] | None:
    close = getattr(stream, "close", None)
    return close if callable(close) else None
