"""``DockerRuntime``: engine containers on the local Docker engine, through the Docker SDK.

Guarantees:

* Every blocking Docker call runs in a worker thread (``asyncio.to_thread``); the event
  loop never blocks on the engine.
* Docker's errors are translated where they enter our code: an unreachable engine becomes
  ``RuntimeUnavailable``, anything the engine refuses becomes ``ContainerError``.
* ``deploy`` and ``stop`` never raise for a failed operation: they report ``error`` with a
  message (exit code and last log lines when the engine exited). A failed ``deploy``
  leaves no container behind. Cancelling ``deploy`` (agent shutdown, or a ``Stop`` that
  supersedes it) leaves the container to whoever cancels it: containers outlive the agent.
* ``info`` never raises; it says why the engine is unavailable.
* Restarts belong to the agent and controller: containers get restart policy ``no``.

The session must not run ``deploy`` and ``stop`` of one deployment concurrently (it cancels
an in-flight deploy before stopping); different deployments may run in parallel.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import aiohttp
import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import DeviceRequest
from docker.utils import parse_repository_tag

from agent.backends.container import ContainerPlan, plan_container
from agent.types import (
    DOWNLOADING,
    ERROR,
    LABEL_DEPLOYMENT_ID,
    LABEL_HOST_PORT,
    LABEL_MANAGED,
    LABEL_SPEC_HASH,
    PENDING,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    ContainerState,
    DeploySpec,
    Reporter,
    RuntimeInfo,
    StatusUpdate,
)
from shared.errors import ContainerError, LMStackError, RuntimeUnavailable

log = logging.getLogger("lmstack.agent.runtime")

P = ParamSpec("P")
T = TypeVar("T")

HEALTH_POLL_INTERVAL = 0.5
HEALTH_REQUEST_TIMEOUT = 2.0
LOG_TAIL_LINES = 20
PROGRESS_REPORT_INTERVAL = 1.0
# Log chunks read ahead of a slow follower before the reader thread waits.
FOLLOW_QUEUE = 64
# Docker's zero time, what StartedAt says for a container that never started.
_ZERO_TIME = "0001-01-01T00:00:00Z"


class _DeployFailed(Exception):
    """Internal: a deploy step failed; the message is what the controller sees."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def _translate(exc: Exception) -> LMStackError | None:
    """Our error for a Docker/transport error; ``None`` when ``exc`` is not one."""
    if isinstance(exc, LMStackError):
        return exc
    if isinstance(exc, requests.exceptions.ConnectionError):
        return RuntimeUnavailable(f"Docker engine not reachable: {exc}")
    if isinstance(exc, requests.exceptions.Timeout):
        return ContainerError(f"Docker engine did not answer in time: {exc}")
    if isinstance(exc, docker.errors.APIError):
        return ContainerError(_explain(exc))
    if isinstance(exc, docker.errors.DockerException):
        return ContainerError(str(exc))
    return None


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@dataclass
class PullProgress:
    """Aggregates Docker's per-layer pull events into one line."""

    image: str
    # layer id -> (bytes downloaded, layer size); size 0 while unknown.
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)

    def update(self, event: dict[str, Any]) -> None:
        layer = event.get("id")
        status = str(event.get("status", ""))
        if not layer or status.startswith(("Pulling from", "Digest", "Status")):
            return
        current, total = self.layers.get(layer, (0, 0))
        detail = event.get("progressDetail") or {}
        if status == "Downloading" and detail.get("total"):
            current, total = int(detail.get("current", 0)), int(detail["total"])
        elif status in ("Download complete", "Verifying Checksum", "Extracting"):
            current = total
        elif status in ("Pull complete", "Already exists"):
            current = total
            self.done.add(layer)
        self.layers[layer] = (current, total)

    def message(self) -> str:
        total = sum(size for _, size in self.layers.values())
        current = sum(got for got, _ in self.layers.values())
        counts = f"{len(self.done)}/{len(self.layers)} layers"
        if not total:
            return f"pulling image {self.image} ({counts})"
        pct = 100 * current // total
        return (
            f"pulling image {self.image}: {pct}% "
            f"({_human_bytes(current)} of {_human_bytes(total)}, {counts})"
        )


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
        self._docker_host = docker_host
        self._hf_cache_dir = hf_cache_dir
        self._ready_timeout = ready_timeout
        self._hf_token = hf_token
        self._simulate_gpus = simulate_gpus
        self._health_host = health_host
        # Engines are reached by the gateway on the advertise address: publish on all
        # interfaces unless told otherwise.
        self._bind_address = bind_address
        self._stop_timeout = stop_timeout
        self._docker_timeout = docker_timeout
        self._client: docker.DockerClient | None = None
        # The client is created lazily by whichever worker thread needs it first.
        self._client_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------

    def _docker(self) -> docker.DockerClient:
        """The client, connected on first use. Runs in a worker thread."""
        with self._client_lock:
            if self._client is None:
                try:
                    if self._docker_host:
                        self._client = docker.DockerClient(
                            base_url=self._docker_host, version="auto", timeout=self._docker_timeout
                        )
                    else:
                        self._client = docker.from_env(version="auto", timeout=self._docker_timeout)
                except docker.errors.DockerException as exc:
                    where = self._docker_host or "the default endpoint"
                    raise RuntimeUnavailable(
                        f"Docker engine not reachable at {where}: {exc}"
                    ) from exc
            return self._client

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking Docker call in a thread, translating its errors."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except _DeployFailed:
            raise
        except Exception as exc:
            ours = _translate(exc)
            if ours is None or ours is exc:
                raise
            raise ours from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    # -- queries -----------------------------------------------------------------------

    async def info(self) -> RuntimeInfo:
        def version() -> str:
            return str(self._docker().version().get("Version", ""))

        try:
            return RuntimeInfo(available=True, version=await self._run(version))
        except Exception as exc:
            # info() is how callers learn the engine is down: it reports, never raises.
            log.warning("Docker engine unavailable: %s", exc)
            return RuntimeInfo(available=False, error=str(exc))

    async def list_containers(self) -> list[ContainerState]:
        def listing() -> list[ContainerState]:
            found = self._docker().containers.list(
                all=True, filters={"label": f"{LABEL_MANAGED}=true"}, ignore_removed=True
            )
            return [_container_state(c) for c in found]

        return await self._run(listing)

    async def logs(self, deployment_id: str, lines: int) -> str:
        """Raises ``ContainerError`` when the deployment has no container here."""
        container = await self._run(self._find, deployment_id)
        if container is None:
            raise ContainerError(f"no container for deployment {deployment_id}")
        return await self._run(_tail, container, lines if lines > 0 else None)

    async def follow_logs(self, deployment_id: str, tail: int) -> AsyncIterator[str]:
        """Docker's ``logs(follow=True)`` read in a worker thread, handed to the loop
        through a bounded queue (the thread waits when the consumer is slow). Closing
        the generator shuts the log stream's socket, which ends the thread."""
        container = await self._run(self._find, deployment_id)
        if container is None:
            raise ContainerError(f"no container for deployment {deployment_id}")
        stream = await self._run(
            container.logs, stdout=True, stderr=True, stream=True, follow=True, tail=tail
        )
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | Exception | None] = asyncio.Queue(maxsize=FOLLOW_QUEUE)
        stop = threading.Event()

        def put(item: bytes | Exception | None) -> None:
            if stop.is_set():
                return
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(item), loop).result()
            except (RuntimeError, concurrent.futures.CancelledError):
                stop.set()  # the loop or the consumer is gone

        def reader() -> None:
            try:
                for chunk in stream:
                    if stop.is_set():
                        return
                    put(chunk)
            except Exception as exc:
                put(exc)
            finally:
                put(None)

        thread = asyncio.ensure_future(asyncio.to_thread(reader))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while (item := await chunks.get()) is not None:
                if isinstance(item, Exception):
                    raise _translate(item) or item
                text = decoder.decode(item)
                if text:
                    yield text
        finally:
            stop.set()
            # Unblock a thread waiting on the queue or on the socket.
            while not chunks.empty():
                chunks.get_nowait()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(stream.close)
            await asyncio.wait({thread}, timeout=5)

    def _find(self, deployment_id: str) -> Container | None:
        found = self._docker().containers.list(
            all=True,
            filters={"label": f"{LABEL_DEPLOYMENT_ID}={deployment_id}"},
            ignore_removed=True,
        )
        managed = [c for c in found if c.labels.get(LABEL_MANAGED) == "true"]
        return managed[0] if managed else None

    # -- deploy ------------------------------------------------------------------------

    async def deploy(self, spec: DeploySpec, report: Reporter) -> None:
        try:
            await self._deploy(spec, report)
        except _DeployFailed as exc:
            log.warning("deployment %s (%s) failed: %s", spec.name, spec.deployment_id, exc)
            await report(
                StatusUpdate(
                    spec.deployment_id,
                    ERROR,
                    exc.message,
                    port=spec.host_port,
                    exit_code=exc.exit_code,
                )
            )
        except LMStackError as exc:
            log.warning("deployment %s (%s) failed: %s", spec.name, spec.deployment_id, exc)
            await report(StatusUpdate(spec.deployment_id, ERROR, str(exc), port=spec.host_port))

    async def _deploy(self, spec: DeploySpec, report: Reporter) -> None:
        plan = plan_container(
            spec,
            hf_cache_dir=self._hf_cache_dir,
            hf_token=self._hf_token,
            simulate_gpus=self._simulate_gpus,
        )
        timeout = float(spec.config.get("startup_timeout") or self._ready_timeout)
        url = f"http://{self._health_host}:{plan.host_port}{plan.health_path}"
        await report(StatusUpdate(spec.deployment_id, PENDING, port=spec.host_port))

        existing = await self._run(self._find, spec.deployment_id)
        adopted = (
            existing is not None
            and existing.status == "running"
            and existing.labels.get(LABEL_SPEC_HASH) == plan.labels[LABEL_SPEC_HASH]
        )
        http_timeout = aiohttp.ClientTimeout(total=HEALTH_REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=http_timeout) as http:
            if existing is not None and adopted:
                container_id = str(existing.id)
                log.info("deployment %s: container %.12s runs this spec", spec.name, container_id)
                if not await _healthy(http, url):
                    await report(self._update(spec, STARTING, container_id, "engine starting"))
            else:
                if existing is not None:
                    # Another spec, or not running: replace it (restart policy is ours).
                    log.info(
                        "deployment %s: replacing container %.12s (%s)",
                        spec.name,
                        existing.id,
                        existing.status,
                    )
                    await self._run(_remove, existing)
                await self._run(self._clear_name, plan)
                await self._ensure_image(spec, plan.image, report)
                container_id = await self._run(self._create_and_start, plan)
                await report(self._update(spec, STARTING, container_id, "engine starting"))
            try:
                await self._wait_ready(http, container_id, url, timeout)
                if plan.model_pull is not None:
                    await report(
                        self._update(spec, STARTING, container_id, f"pulling model {spec.model}")
                    )
                    await _pull_model(http, plan, self._health_host, timeout)
            except Exception:
                # A failed start leaves nothing behind; the report carries the reason.
                await self._remove_quietly(container_id)
                raise
        log.info(
            "deployment %s running in %.12s on port %d", spec.name, container_id, plan.host_port
        )
        await report(self._update(spec, RUNNING, container_id, ""))

    @staticmethod
    def _update(spec: DeploySpec, status: str, container_id: str, message: str) -> StatusUpdate:
        return StatusUpdate(
            spec.deployment_id, status, message, container_id=container_id, port=spec.host_port
        )

    def _clear_name(self, plan: ContainerPlan) -> None:
        """Free the container name, or fail if someone else's container holds it."""
        try:
            holder = self._docker().containers.get(plan.name)
        except docker.errors.NotFound:
            return
        if holder.labels.get(LABEL_MANAGED) != "true":
            raise _DeployFailed(
                f"a container named {plan.name} exists and is not managed by LMStack; "
                "rename or remove it"
            )
        # Ours, of a deployment that no longer exists under this name (names are unique
        # per controller): an orphan the controller would remove anyway.
        log.warning("removing orphaned LMStack container %s (%.12s)", plan.name, holder.id)
        _remove(holder)

    async def _ensure_image(self, spec: DeploySpec, image: str, report: Reporter) -> None:
        def present() -> bool:
            try:
                self._docker().images.get(image)
            except docker.errors.ImageNotFound:
                return False
            return True

        if await self._run(present):
            return
        progress = PullProgress(image)
        await report(StatusUpdate(spec.deployment_id, DOWNLOADING, progress.message()))
        await self._pull(spec, image, progress, report)

    async def _pull(
        self, spec: DeploySpec, image: str, progress: PullProgress, report: Reporter
    ) -> None:
        """Pull in a thread; its events come back through a queue and are reported here."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[dict[str, Any] | Exception | None] = asyncio.Queue()
        stop = threading.Event()
        repository, tag = parse_repository_tag(image)

        def put(item: dict[str, Any] | Exception | None) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:
                stop.set()  # the loop is gone: nobody listens any more

        def worker() -> None:
            try:
                stream = self._docker().api.pull(
                    repository, tag=tag or "latest", stream=True, decode=True
                )
                for event in stream:
                    put(event)
                    if stop.is_set():
                        return
            except Exception as exc:
                put(exc)
            finally:
                put(None)

        thread = asyncio.ensure_future(asyncio.to_thread(worker))
        last_report = 0.0
        try:
            while (item := await events.get()) is not None:
                if isinstance(item, Exception):
                    if isinstance(item, docker.errors.APIError):
                        raise _DeployFailed(f"pulling image {image} failed: {_explain(item)}")
                    raise _translate(item) or item
                if "error" in item:
                    raise _DeployFailed(f"pulling image {image} failed: {item['error']}")
                progress.update(item)
                now = loop.time()
                if now - last_report >= PROGRESS_REPORT_INTERVAL:
                    last_report = now
                    await report(StatusUpdate(spec.deployment_id, DOWNLOADING, progress.message()))
        finally:
            # The thread stops at its next event; wait a little so it does not linger.
            stop.set()
            await asyncio.wait({thread}, timeout=5)
        log.info("pulled image %s", image)

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
        container = self._docker().containers.create(
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
            # controller's decision, made with the error report in hand.
        )
        try:
            container.start()
        except docker.errors.APIError as exc:
            _remove(container)
            raise _DeployFailed(_start_failure(plan, _explain(exc))) from exc
        log.info("started container %s (%.12s) from %s", plan.name, container.id, plan.image)
        return str(container.id)

    async def _wait_ready(
        self, http: aiohttp.ClientSession, container_id: str, url: str, ready_within: float
    ) -> None:
        """Poll ``url`` until it answers 200, the container exits, or ``ready_within`` s pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_within
        while True:
            state = await self._run(self._state, container_id)
            if state is None:
                raise _DeployFailed("the engine container disappeared while starting")
            status, exit_code, oom = state
            if status in ("exited", "dead"):
                tail = await self._run(self._tail_by_id, container_id)
                why = " (killed: out of memory)" if oom else ""
                raise _DeployFailed(
                    f"engine exited with code {exit_code}{why} before it was ready; "
                    f"last log lines:\n{tail}",
                    exit_code=exit_code,
                )
            if await _healthy(http, url):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                tail = await self._run(self._tail_by_id, container_id)
                raise _DeployFailed(
                    f"engine did not answer {url} within {ready_within:g}s; last log lines:\n{tail}"
                )
            await asyncio.sleep(min(HEALTH_POLL_INTERVAL, remaining))

    def _state(self, container_id: str) -> tuple[str, int, bool] | None:
        try:
            container = self._docker().containers.get(container_id)
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
            container = self._docker().containers.get(container_id)
        except docker.errors.NotFound:
            return "(no logs: the container is gone)"
        return _tail(container, LOG_TAIL_LINES).rstrip("\n")

    async def _remove_quietly(self, container_id: str) -> None:
        def remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                _remove(self._docker().containers.get(container_id))

        try:
            await self._run(remove)
        except LMStackError as exc:
            # Already failing; the reported error matters more than the cleanup's.
            log.error("could not remove container %.12s: %s", container_id, exc)

    # -- stop --------------------------------------------------------------------------

    async def stop(self, deployment_id: str, remove: bool, report: Reporter) -> None:
        try:
            container = await self._run(self._find, deployment_id)
            if container is None:
                await report(StatusUpdate(deployment_id, STOPPED, "no container"))
                return
            container_id = str(container.id)
            await report(StatusUpdate(deployment_id, STOPPING, container_id=container_id))
            exit_code = await self._run(self._stop_container, container, remove)
        except LMStackError as exc:
            log.warning("stopping deployment %s failed: %s", deployment_id, exc)
            await report(StatusUpdate(deployment_id, ERROR, f"stopping failed: {exc}"))
            return
        log.info("deployment %s stopped (container %.12s)", deployment_id, container_id)
        await report(
            StatusUpdate(
                deployment_id,
                STOPPED,
                "removed" if remove else "",
                container_id=container_id,
                exit_code=exit_code,
            )
        )

    def _stop_container(self, container: Container, remove: bool) -> int | None:
        """Stop, optionally remove; the exit code, ``None`` when already gone."""
        try:
            container.stop(timeout=self._stop_timeout)
            container.reload()
            exit_code = int(container.attrs.get("State", {}).get("ExitCode", 0))
        except docker.errors.NotFound:
            return None
        if remove:
            _remove(container)
        return exit_code


# -- helpers -------------------------------------------------------------------------------


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
        raise _DeployFailed(f"pulling the model did not finish within {within:g}s") from None
    except aiohttp.ClientError as exc:
        raise _DeployFailed(f"pulling the model failed: {exc}") from exc
    if response.status != 200 or '"error"' in text:
        raise _DeployFailed(f"pulling the model failed: HTTP {response.status}: {text[:500]}")


async def _healthy(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        # Not listening yet, or the port proxy dropped the connection: not ready.
        return False


def _remove(container: Container) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        # Two removals racing: the other one wins, which is what we wanted.
        if "already in progress" not in _explain(exc):
            raise


def _tail(container: Container, lines: int | None) -> str:
    raw = container.logs(stdout=True, stderr=True, tail=lines if lines is not None else "all")
    return raw.decode("utf-8", errors="replace")


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


def _container_state(container: Container) -> ContainerState:
    attrs = container.attrs
    state = attrs.get("State", {})
    labels = container.labels
    try:
        host_port = int(labels.get(LABEL_HOST_PORT, "0"))
    except ValueError:
        host_port = 0
    started_at = str(state.get("StartedAt") or "")
    return ContainerState(
        deployment_id=labels.get(LABEL_DEPLOYMENT_ID, ""),
        container_id=str(container.id),
        name=str(container.name or ""),
        state=str(state.get("Status", container.status)),
        image=str(attrs.get("Config", {}).get("Image", "")),
        host_port=host_port,
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        exit_code=int(state.get("ExitCode", 0)),
        started_at="" if started_at == _ZERO_TIME else started_at,
    )
