"""Deploys: bring a ``DeploySpec`` to a running, healthy engine container.

Guarantees:

* ``Deployer.deploy`` never raises for a failed operation: it reports ``error`` with a
  message (exit code and last log lines when the engine exited). A failed deploy
  leaves no container behind.
* Keyed by instance: the instance's container is found by its labels
  (``agent.runtime._containers.find``), never by name, so a container made
  before instances (named ``lmstack-<name>``, no instance label) is the instance
  of its deployment's id, and is adopted with its name.
* Idempotent: a running container of the same instance and spec hash is adopted,
  not restarted (for a container made before instances, the hash that agent gave
  it counts too: ``legacy_spec_hash``); another spec, or a container that is not
  running, is replaced. Reports carry the instance and deployment ids, the
  restarts (the spec's, or an adopted container's label when higher) and, from
  ``starting`` on, the container's ``started_at``.
* Cancelling ``deploy`` (agent shutdown, or a ``Stop`` that supersedes it) leaves the
  container to whoever cancels it: containers outlive the agent.
* Restarts belong to the agent (``agent.supervisor``): containers get Docker's
  restart policy ``no``.
* Ownership: the container is labelled with the spec's cluster id. A container of
  another cluster is never removed to make room, whether it holds the deployment's
  instance or its name: the deploy fails saying whose it is. With a cluster id, an
  unlabelled container of another instance holding the name is refused too (it may
  be another cluster's, made before labels); a same-name container of our own
  cluster is an orphan and is removed.
* No name conflict: removing a same-name container and creating ours are sections
  under the name's lock (``agent.runtime._names``), which ``DockerRuntime.stop``
  takes too. So an orphan's removal and a new deployment of its name, on two lanes,
  run one after the other: the create never meets the name still held.

Concurrency model: each deploy is one coroutine on the loop; its blocking Docker calls
go through ``EngineClient.call``. The caller must not run ``deploy`` and ``stop`` of
one instance concurrently; different instances may deploy in parallel, and
``NameLocks`` orders what they do to one container name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path

import aiohttp
import docker.errors
from docker.models.containers import Container
from docker.types import DeviceRequest

from agent.backends.container import ContainerPlan, plan_container
from agent.runtime._client import EngineClient
from agent.runtime._containers import (
    find,
    foreign,
    instance_of,
    remove,
    restarts_of,
    started_at,
    tail,
)
from agent.runtime._errors import DeployFailed, explain
from agent.runtime._health import health_url, healthy, http_session
from agent.runtime._names import NameLocks
from agent.runtime._pulls import ensure_image
from agent.types import (
    ERROR,
    LABEL_CLUSTER_ID,
    LABEL_DEPLOYMENT_ID,
    LABEL_INSTANCE_ID,
    LABEL_MANAGED,
    LABEL_SPEC_HASH,
    PENDING,
    RUNNING,
    STARTING,
    DeploySpec,
    Reporter,
    StatusUpdate,
    legacy_spec_hash,
    spec_hash,
)
from shared.errors import LMStackError
from shared.status import DeploymentStatus

log = logging.getLogger("lmstack.agent.runtime")

HEALTH_POLL_INTERVAL = 0.5
LOG_TAIL_LINES = 20


class Deployer:
    """Deploys engine containers on one Docker engine."""

    def __init__(
        self,
        client: EngineClient,
        *,
        hf_cache_dir: Path,
        ready_timeout: float,
        hf_token: str | None,
        simulate_gpus: bool,
        health_host: str,
        bind_address: str,
        names: NameLocks,
    ) -> None:
        self._client = client
        self._names = names
        self._hf_cache_dir = hf_cache_dir
        self._ready_timeout = ready_timeout
        self._hf_token = hf_token
        self._simulate_gpus = simulate_gpus
        self._health_host = health_host
        self._bind_address = bind_address

    async def deploy(self, spec: DeploySpec, report: Reporter) -> None:
        try:
            await self._deploy(spec, report)
        except DeployFailed as exc:
            log.warning("instance %s of %s failed: %s", spec.instance, spec.name, exc)
            await report(spec.status_update(ERROR, exc.message, exit_code=exc.exit_code))
        except LMStackError as exc:
            log.warning("instance %s of %s failed: %s", spec.instance, spec.name, exc)
            await report(spec.status_update(ERROR, str(exc)))

    async def _deploy(self, spec: DeploySpec, report: Reporter) -> None:
        plan = plan_container(
            spec,
            hf_cache_dir=self._hf_cache_dir,
            hf_token=self._hf_token,
            simulate_gpus=self._simulate_gpus,
        )
        timeout = float(spec.config.startup_timeout or self._ready_timeout)
        url = health_url(self._health_host, plan.host_port, plan.health_path)
        await report(spec.status_update(PENDING))

        existing = await self._client.call(find, self._client, spec.instance)
        if existing is not None and (other := foreign(existing, spec.cluster_id)):
            raise DeployFailed(
                f"container {existing.name} ({existing.id:.12}) of this instance belongs to "
                f"LMStack cluster {other}, not to this controller's cluster {spec.cluster_id}; "
                "left running"
            )
        adopted = existing is not None and existing.status == "running" and _runs(existing, spec)
        async with http_session() as http:
            if existing is not None and adopted:
                container_id = str(existing.id)
                # The container counted restarts before this agent did (an agent restart).
                spec = dataclasses.replace(spec, restarts=max(spec.restarts, restarts_of(existing)))
                log.info("instance %s: %.12s runs this spec", spec.instance, container_id)
                if not await healthy(http, url):
                    starting = await self._update(spec, STARTING, container_id, "engine starting")
                    await report(starting)
            else:
                if existing is not None:
                    # Another spec, or not running: replace it (restart policy is ours).
                    log.info(
                        "instance %s: replacing container %.12s (%s)",
                        spec.instance,
                        existing.id,
                        existing.status,
                    )
                await self._names.run(plan.name, lambda: self._client.call(
                    self._clear, existing, plan, spec.cluster_id
                ))  # fmt: skip
                await ensure_image(self._client, spec, plan.image, report)
                # The name is cleared again in the same section as the create: whatever
                # took it during the pull is dealt with before the create, never during.
                container_id = await self._names.run(plan.name, lambda: self._client.call(
                    self._clear_and_create, plan, spec.cluster_id
                ))  # fmt: skip
                await report(await self._update(spec, STARTING, container_id, "engine starting"))
            try:
                await self._wait_ready(http, container_id, url, timeout)
                if plan.model_pull is not None:
                    pulling = f"pulling model {spec.model}"
                    await report(await self._update(spec, STARTING, container_id, pulling))
                    await _pull_model(http, plan, self._health_host, timeout)
            except Exception:
                # A failed start leaves nothing behind; the report carries the reason.
                await self._remove_quietly(container_id)
                raise
        log.info(
            "instance %s of %s running in %.12s on port %d",
            spec.instance, spec.name, container_id, plan.host_port,
        )  # fmt: skip
        await report(await self._update(spec, RUNNING, container_id, ""))

    async def _update(
        self, spec: DeploySpec, status: DeploymentStatus, container_id: str, message: str
    ) -> StatusUpdate:
        """A report of the container: its ``started_at`` read from the engine."""
        started = await self._client.call(self._started_at, container_id)
        return spec.status_update(status, message, container_id=container_id, started_at=started)

    def _started_at(self, container_id: str) -> str:
        try:
            return started_at(self._client.sdk().containers.get(container_id))
        except docker.errors.NotFound:
            return ""

    def _clear(self, existing: Container | None, plan: ContainerPlan, cluster_id: str) -> None:
        """Remove the deployment's old container and free its name. Runs in a
        thread, under the name's lock."""
        if existing is not None:
            remove(existing)
        self._clear_name(plan, cluster_id)

    def _clear_and_create(self, plan: ContainerPlan, cluster_id: str) -> str:
        """Free the name and create the container. Runs in a thread, under the
        name's lock."""
        self._clear_name(plan, cluster_id)
        return self._create_and_start(plan)

    def _clear_name(self, plan: ContainerPlan, cluster_id: str) -> None:
        """Free the container name, or fail if someone else's container holds it."""
        try:
            holder = self._client.sdk().containers.get(plan.name)
        except docker.errors.NotFound:
            return
        if holder.labels.get(LABEL_MANAGED) != "true":
            raise DeployFailed(
                f"a container named {plan.name} exists and is not managed by LMStack; "
                "rename or remove it"
            )
        if instance_of(holder) == plan.labels[LABEL_INSTANCE_ID]:
            remove(holder)  # this instance's own, found by name
            return
        label = holder.labels.get(LABEL_CLUSTER_ID, "")
        if cluster_id and label != cluster_id:
            whose = f"LMStack cluster {label}" if label else "an unlabelled LMStack deployment"
            raise DeployFailed(
                f"the container name {plan.name} is held by {holder.id:.12} of {whose} "
                f"(deployment {holder.labels.get(LABEL_DEPLOYMENT_ID, '?')}), not of this "
                "controller's cluster; it is left running: remove it or rename the deployment"
            )
        # Ours, of an instance that no longer exists under this name (names are unique
        # per instance of a controller): an orphan the controller would remove anyway.
        log.warning("removing orphaned LMStack container %s (%.12s)", plan.name, holder.id)
        remove(holder)

    def _create_and_start(self, plan: ContainerPlan) -> str:
        """Create and start the container; if start fails, remove it. Runs in a thread."""
        device_requests = None
        if plan.gpu_indices:
            device_requests = [
                DeviceRequest(
                    driver="nvidia",
                    device_ids=[str(i) for i in plan.gpu_indices],
                    capabilities=[["gpu"]],
                )
            ]
        container = self._client.sdk().containers.create(
            image=plan.image,
            command=plan.command,
            entrypoint=plan.entrypoint,
            name=plan.name,
            labels=plan.labels,
            environment=plan.env,
            ports={f"{plan.engine_port}/tcp": (self._bind_address, plan.host_port)},
            device_requests=device_requests,
            # Engines share tensors between worker processes through /dev/shm.
            ipc_mode="host",
            volumes={str(plan.hf_cache_dir): {"bind": plan.hf_cache_target, "mode": "rw"}},
            # No restart_policy: Docker's default "no" is wanted; restarts are the
            # agent's supervisor's, made under the instance's policy with back-off.
        )
        try:
            container.start()
        except docker.errors.APIError as exc:
            remove(container)
            raise DeployFailed(_start_failure(plan, explain(exc))) from exc
        log.info("started container %s (%.12s) from %s", plan.name, container.id, plan.image)
        return str(container.id)

    async def _wait_ready(
        self, http: aiohttp.ClientSession, container_id: str, url: str, ready_within: float
    ) -> None:
        """Poll ``url`` until it answers 200, the container exits, or ``ready_within`` s pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_within
        while True:
            state = await self._client.call(self._state, container_id)
            if state is None:
                raise DeployFailed("the engine container disappeared while starting")
            status, exit_code, oom = state
            if status in ("exited", "dead"):
                tail = await self._client.call(self._tail_by_id, container_id)
                why = " (killed: out of memory)" if oom else ""
                raise DeployFailed(
                    f"engine exited with code {exit_code}{why} before it was ready; "
                    f"last log lines:\n{tail}",
                    exit_code=exit_code,
                )
            if await healthy(http, url):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                tail = await self._client.call(self._tail_by_id, container_id)
                raise DeployFailed(
                    f"engine did not answer {url} within {ready_within:g}s; last log lines:\n{tail}"
                )
            await asyncio.sleep(min(HEALTH_POLL_INTERVAL, remaining))

    def _state(self, container_id: str) -> tuple[str, int, bool] | None:
        try:
            container = self._client.sdk().containers.get(container_id)
        except docker.errors.NotFound:
            return None
        state = container.attrs.get("State", {})
        return (
            str(state.get("Status", "")),
            int(state.get("ExitCode", 0)),
            bool(state.get("OOMKilled")),
        )

    def _tail_by_id(self, container_id: str) -> str:
        try:
            container = self._client.sdk().containers.get(container_id)
        except docker.errors.NotFound:
            return "(no logs: the container is gone)"
        return tail(container, LOG_TAIL_LINES).rstrip("\n")

    async def _remove_quietly(self, container_id: str) -> None:
        def drop() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                remove(self._client.sdk().containers.get(container_id))

        try:
            await self._client.call(drop)
        except LMStackError as exc:
            # Already failing; the reported error matters more than the cleanup's.
            log.error("could not remove container %.12s: %s", container_id, exc)


async def _pull_model(
    http: aiohttp.ClientSession, plan: ContainerPlan, host: str, within: float
) -> None:
    """The backend's model pull (Ollama: ``POST /api/pull``), given ``within`` seconds:
    downloads take long, so not the short health-check limit."""
    assert plan.model_pull is not None
    path, body = plan.model_pull
    url = f"http://{host}:{plan.host_port}{path}"
    try:
        async with http.post(
            url, json=body, timeout=aiohttp.ClientTimeout(total=within)
        ) as response:
            text = await response.text()
    except TimeoutError:
        raise DeployFailed(f"pulling the model did not finish within {within:g}s") from None
    except aiohttp.ClientError as exc:
        raise DeployFailed(f"pulling the model failed: {exc}") from exc
    if response.status != 200 or '"error"' in text:
        raise DeployFailed(f"pulling the model failed: HTTP {response.status}: {text[:500]}")


def _runs(container: Container, spec: DeploySpec) -> bool:
    """Whether ``container`` was made from ``spec`` (its spec hash label says so)."""
    label = container.labels.get(LABEL_SPEC_HASH)
    if label == spec_hash(spec):
        return True
    # Made before instances: that agent's hash covered the admission keys too.
    return LABEL_INSTANCE_ID not in container.labels and label == legacy_spec_hash(spec)


def _start_failure(plan: ContainerPlan, explanation: str) -> str:
    text = explanation.lower()
    if "address already in use" in text or "port is already allocated" in text:
        return f"host port {plan.host_port} cannot be bound: it is already in use ({explanation})"
    if plan.gpu_indices and ("device driver" in text or "nvidia" in text or "gpu" in text):
        gpus = ",".join(str(i) for i in plan.gpu_indices)
        return (
            f"cannot give GPUs {gpus} to the container: is the NVIDIA container runtime "
            f"installed? ({explanation})"
        )
    return f"starting the container failed: {explanation}"
