"""The agent's side of the controller stream (DESIGN.md section 3).

``AgentSession.run()`` keeps one ``AgentService.Connect`` stream open to the
controller for as long as the agent lives.

Guarantees:

* **Hello first.** Every connection starts with a Hello that lists the GPUs,
  the host, the persisted worker id and every container the runtime manages,
  so the controller can diff desired against actual state after any restart.
* **Identity survives restarts.** The worker id from Welcome is written to
  ``<state_dir>/worker_id`` atomically (temp file + rename) and sent in the
  next Hello.
* **Per-deployment order.** Deploy and Stop commands for one deployment run
  one after another, in arrival order, on that deployment's lane; different
  deployments run concurrently. FetchLogs and ListContainers never wait
  behind a lane.
* **The controller sets the pace.** Heartbeats follow Welcome's interval
  (``heartbeat_interval_ms``, else ``heartbeat_interval_seconds``); only when
  both are 0 does the agent's own ``heartbeat_interval`` apply.
* **Every runtime status is reported** as a DeploymentStatus, and a container
  that exits on its own (seen on a heartbeat) is reported as ``error`` with its
  exit code and last log lines.
* **Reconnect forever**, with exponential backoff and full jitter capped at
  ``reconnect_max_seconds``, reset by every Welcome. Only a refusal ends the
  session: ``AuthenticationFailed`` (``UNAUTHENTICATED``) or
  ``ProtocolVersionRejected`` (``FAILED_PRECONDITION``) is raised from
  ``run()`` after one attempt, never retried hot.
* **Shutdown leaves engines alone.** Cancelling ``run()`` closes the channel
  and nothing else: engine containers keep serving while the agent is away.

Concurrency model: one asyncio loop. Per connection, an ``_Outbox`` queue is
the only thing that feeds the gRPC request iterator, so messages are never
interleaved mid-write; every producer (heartbeat loop, lanes, request
handlers, runtime reporters) just enqueues. All background work of a
connection (heartbeat loop, lanes, request handlers, exit reports) lives in
one ``asyncio.TaskGroup``: when the stream breaks, the command reader raises,
the group cancels everything (including in-flight deploys: the controller
re-sends them after the next Hello, commands being level-triggered) and
awaits it before the next attempt. Blocking calls (NVML, ``/proc``, DNS) go
through ``asyncio.to_thread``. The sleep used between attempts and the random
source of the jitter are injected so tests are deterministic.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from agent.gpu import GpuDevice, GpuReader, GpuStats
from agent.sysinfo import host_info, primary_ip
from agent.types import (
    ERROR,
    RUNNING,
    ContainerState,
    DeploySpec,
    Runtime,
    RuntimeInfo,
    StatusUpdate,
)
from shared import PROTOCOL_VERSION, __version__
from shared.errors import AgentError, ConfigError, LMStackError, ProtocolError
from shared.proto.lmstack.v1 import agent_pb2, agent_pb2_grpc
from shared.settings import AgentSettings

logger = logging.getLogger("lmstack.agent.session")

WORKER_ID_FILE = "worker_id"
# Lines of an exited container's log quoted in its ``error`` report.
EXIT_LOG_LINES = 20
# FetchLogs with ``lines == 0`` means "a sensible amount".
DEFAULT_LOG_LINES = 100
_EXITED_STATES = frozenset({"exited", "dead"})

Sleep = Callable[[float], Awaitable[None]]
_Command = agent_pb2.Deploy | agent_pb2.Stop
_Call = grpc.aio.StreamStreamCall[agent_pb2.AgentMessage, agent_pb2.ControllerMessage]


# HTTP/2 pings notice a controller that vanished without closing the
# connection (host down, NAT state dropped) within about 30 s. The controller
# permits pings this often (see controller.fleet.server).
KEEPALIVE_OPTIONS = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


class SessionRejected(AgentError):
    """The controller refused this agent; retrying would not help."""


class AuthenticationFailed(SessionRejected):
    """The controller rejected the join token (``UNAUTHENTICATED``)."""


class ProtocolVersionRejected(SessionRejected):
    """The controller does not speak our protocol version (``FAILED_PRECONDITION``)."""


class _ConnectionLost(Exception):
    """This connection ended; the session reconnects."""


class Backoff:
    """Exponential backoff with full jitter.

    Attempt ``n`` (from 0) waits ``uniform(0, min(cap, base * 2**n))``: the full
    jitter spreads a fleet of agents that lost the controller at the same moment.
    """

    def __init__(self, cap: float, *, base: float = 0.5, rng: random.Random) -> None:
        self._cap = cap
        self._base = base
        self._rng = rng
        self._attempt = 0

    def next_delay(self) -> float:
        # The exponent is bounded so a week-long outage cannot overflow the float.
        ceiling = min(self._cap, self._base * 2 ** min(self._attempt, 32))
        self._attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self._attempt = 0


class AgentSession:
    """Connects to the controller and serves its commands until cancelled."""

    def __init__(
        self,
        settings: AgentSettings,
        runtime: Runtime,
        gpus: GpuReader,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        welcome_timeout: float = 30.0,
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._gpus = gpus
        self._sleep = sleep
        # Jitter needs no cryptographic quality; S311 does not apply.
        self._backoff = Backoff(settings.reconnect_max_seconds, rng=rng or random.Random())  # noqa: S311
        self._welcome_timeout = welcome_timeout
        self._credentials = _channel_credentials(settings)
        self._metadata = (("authorization", f"Bearer {settings.token.get_secret_value()}"),)
        self._watcher = _ExitWatcher()
        self._worker_id = _read_worker_id(settings.state_dir / WORKER_ID_FILE)

    @property
    def worker_id(self) -> str:
        """The id the controller knows us by; empty before the first Welcome."""
        return self._worker_id

    async def run(self) -> None:
        """Stay connected until cancelled. Raises ``SessionRejected`` on refusal."""
        while True:
            try:
                await self._connect_once()
            except SessionRejected as exc:
                logger.error("controller %s refused this agent: %s", self._settings.controller, exc)
                raise
            except _ConnectionLost as exc:
                logger.warning("connection to controller %s: %s", self._settings.controller, exc)
            except Exception:
                # A bug in one connection must not end a daemon that can reconnect.
                logger.exception("connection to controller %s failed", self._settings.controller)
            delay = self._backoff.next_delay()
            logger.info("reconnecting to %s in %.2fs", self._settings.controller, delay)
            await self._sleep(delay)

    async def _connect_once(self) -> None:
        hello = await self._hello()
        outbox = _Outbox()
        outbox.send(agent_pb2.AgentMessage(hello=hello))
        channel = self._open_channel()
        call: _Call | None = None
        try:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            call = stub.Connect(outbox.messages(), metadata=self._metadata)
            welcome = await self._await_welcome(call)
            self._accept(welcome)
            interval = _heartbeat_interval(welcome, self._settings.heartbeat_interval)
            await self._serve(call, outbox, interval)
        finally:
            outbox.close()
            if call is not None:
                call.cancel()
            await channel.close()

    async def _serve(self, call: _Call, outbox: _Outbox, interval: float) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                connection = _Connection(tasks, outbox, self._runtime, self._gpus, self._watcher)
                tasks.create_task(connection.heartbeats(interval), name="lmstack-heartbeat")
                await connection.read_commands(call, self._settings.controller)
        except BaseExceptionGroup as group:
            raise _reason(group) from None

    async def _await_welcome(self, call: _Call) -> agent_pb2.Welcome:
        try:
            async with asyncio.timeout(self._welcome_timeout):
                message = await call.read()
        except TimeoutError:
            raise _ConnectionLost(f"no Welcome within {self._welcome_timeout:g}s") from None
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self._settings.controller) from exc
        if not isinstance(message, agent_pb2.ControllerMessage):  # grpc.aio.EOF
            raise _ConnectionLost("controller closed the stream before Welcome")
        if message.WhichOneof("payload") != "welcome":
            raise _ConnectionLost(f"expected Welcome, got {message.WhichOneof('payload')}")
        return message.welcome

    def _accept(self, welcome: agent_pb2.Welcome) -> None:
        self._backoff.reset()
        if welcome.protocol_version and welcome.protocol_version != PROTOCOL_VERSION:
            logger.warning(
                "controller speaks protocol %d, this agent %d",
                welcome.protocol_version,
                PROTOCOL_VERSION,
            )
        if welcome.worker_id and welcome.worker_id != self._worker_id:
            self._worker_id = welcome.worker_id
            self._persist_worker_id()
        logger.info("joined controller %s as worker %s", self._settings.controller, self._worker_id)

    def _persist_worker_id(self) -> None:
        path = self._settings.state_dir / WORKER_ID_FILE
        try:
            _write_atomically(path, self._worker_id + "\n")
        except OSError as exc:
            logger.error(
                "cannot persist worker id in %s (%s): a restart will join as a new worker",
                path,
                exc,
            )

    def _open_channel(self) -> grpc.aio.Channel:
        target = self._settings.controller
        if self._credentials is None:
            return grpc.aio.insecure_channel(target, options=KEEPALIVE_OPTIONS)
        return grpc.aio.secure_channel(target, self._credentials, options=KEEPALIVE_OPTIONS)

    async def _hello(self) -> agent_pb2.Hello:
        info = await _runtime_info(self._runtime)
        containers = await _list_containers(self._runtime) if info.available else []
        devices = await asyncio.to_thread(self._gpus.devices)
        host = await asyncio.to_thread(host_info)
        address = self._settings.advertise_address or await asyncio.to_thread(
            primary_ip, self._settings.controller.rpartition(":")[0]
        )
        return agent_pb2.Hello(
            name=self._settings.name,
            agent_version=__version__,
            protocol_version=PROTOCOL_VERSION,
            advertise_address=address,
            worker_id=self._worker_id,
            gpus=[_gpu_device(device) for device in devices],
            system_info=agent_pb2.SystemInfo(
                hostname=host.hostname,
                cpu_count=host.cpu_count,
                memory_total_bytes=host.memory_total_bytes,
                os=host.os,
                docker_version=info.version,
            ),
            containers=[_container_info(container) for container in containers],
            runtime_error="" if info.available else info.error or "container runtime unavailable",
            gpus_simulated=self._gpus.simulated,
        )


class _Outbox:
    """The connection's single writer: a queue drained by the request iterator.

    Unbounded on purpose: producers are few and small (a heartbeat per interval,
    a handful of statuses per command), and a bounded queue would let a stalled
    stream block the runtime's reporters.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()

    def send(self, message: agent_pb2.AgentMessage) -> None:
        self._queue.put_nowait(message)

    def close(self) -> None:
        # Ends the iterator, so gRPC's consumer task finishes instead of
        # waiting forever on a connection that is gone.
        self._queue.put_nowait(None)

    async def messages(self) -> AsyncIterator[agent_pb2.AgentMessage]:
        while (message := await self._queue.get()) is not None:
            yield message


class _Connection:
    """One live stream after Welcome: command dispatch, lanes and heartbeats."""

    def __init__(
        self,
        tasks: asyncio.TaskGroup,
        outbox: _Outbox,
        runtime: Runtime,
        gpus: GpuReader,
        watcher: _ExitWatcher,
    ) -> None:
        self._tasks = tasks
        self._outbox = outbox
        self._runtime = runtime
        self._gpus = gpus
        self._watcher = watcher
        self._lanes: dict[str, deque[_Command]] = {}
        # Deploys in progress, so a Stop can cut short one that waits on a slow
        # (or never) healthy engine instead of queueing behind it.
        self._deploying: dict[str, asyncio.Task[None]] = {}
        self._last_containers: list[ContainerState] = []
        self._listing_failed = False
        # Log follows in progress, by the request id of their FollowLogs.
        self._follows: dict[str, asyncio.Task[None]] = {}
        # Follows cancelled by a StopFollow (as opposed to the connection ending).
        self._stopped_follows: set[str] = set()

    # -- commands --------------------------------------------------------------------

    async def read_commands(self, call: _Call, controller: str) -> None:
        """Dispatch commands until the stream ends; always raises."""
        while True:
            try:
                message = await call.read()
            except grpc.aio.AioRpcError as exc:
                raise _translate(exc, controller) from exc
            if not isinstance(message, agent_pb2.ControllerMessage):  # grpc.aio.EOF
                raise _ConnectionLost("controller closed the stream")
            self._dispatch(message)

    def _dispatch(self, message: agent_pb2.ControllerMessage) -> None:
        kind = message.WhichOneof("payload")
        if kind == "deploy":
            self._enqueue(message.deploy)
        elif kind == "stop":
            self._enqueue(message.stop)
        elif kind == "fetch_logs":
            self._spawn(self._answer_logs(message.fetch_logs), "fetch-logs")
        elif kind == "list_containers":
            self._spawn(self._answer_containers(message.list_containers), "list-containers")
        elif kind == "follow_logs":
            self._follow(message.follow_logs)
        elif kind == "stop_follow":
            follow = self._follows.get(message.stop_follow.request_id)
            if follow is not None:
                self._stopped_follows.add(message.stop_follow.request_id)
                follow.cancel()
        else:
            logger.warning("ignoring unexpected controller message %r", kind)

    def _enqueue(self, command: _Command) -> None:
        if isinstance(command, agent_pb2.Stop):
            self._supersede(command.deployment_id)
        lane = self._lanes.get(command.deployment_id)
        if lane is None:
            lane = self._lanes[command.deployment_id] = deque()
            self._spawn(self._drain(command.deployment_id, lane), f"lane-{command.deployment_id}")
        lane.append(command)

    def _supersede(self, deployment_id: str) -> None:
        """A Stop makes queued and running Deploys of that deployment moot."""
        lane = self._lanes.get(deployment_id)
        if lane is not None:
            kept = [c for c in lane if not isinstance(c, agent_pb2.Deploy)]
            lane.clear()
            lane.extend(kept)
        deploying = self._deploying.get(deployment_id)
        if deploying is not None:
            logger.info("deployment %s: stop requested, cancelling its deploy", deployment_id)
            deploying.cancel()

    async def _deploy(self, command: agent_pb2.Deploy) -> None:
        deploying = asyncio.ensure_future(self._runtime.deploy(_deploy_spec(command), self._report))
        self._deploying[command.deployment_id] = deploying
        try:
            await deploying
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the connection is going away, not just this deploy
        finally:
            self._deploying.pop(command.deployment_id, None)

    async def _drain(self, deployment_id: str, lane: deque[_Command]) -> None:
        try:
            while lane:
                await self._execute(lane.popleft())
        finally:
            # No await between the empty check and this: ``_enqueue`` either
            # appended in time or will start a new lane.
            del self._lanes[deployment_id]

    async def _execute(self, command: _Command) -> None:
        deployment_id = command.deployment_id
        self._watcher.begin(deployment_id)
        try:
            if isinstance(command, agent_pb2.Deploy):
                await self._deploy(command)
            else:
                await self._runtime.stop(deployment_id, command.remove, self._report)
        except LMStackError as exc:
            logger.warning("deployment %s: %s", deployment_id, exc)
            await self._report(StatusUpdate(deployment_id, ERROR, str(exc)))
        except Exception as exc:
            logger.exception("deployment %s: runtime failed", deployment_id)
            await self._report(StatusUpdate(deployment_id, ERROR, f"agent error: {exc!r}"))
        finally:
            self._watcher.end(deployment_id)

    async def _report(self, update: StatusUpdate) -> None:
        self._watcher.reported(update)
        self._outbox.send(agent_pb2.AgentMessage(deployment_status=_deployment_status(update)))

    async def _answer_logs(self, request: agent_pb2.FetchLogs) -> None:
        result = agent_pb2.LogsResult(request_id=request.request_id)
        try:
            result.logs = await self._runtime.logs(
                request.deployment_id, request.lines or DEFAULT_LOG_LINES
            )
        except Exception as exc:
            result.error = str(exc) or type(exc).__name__
        self._outbox.send(agent_pb2.AgentMessage(logs_result=result))

    def _follow(self, request: agent_pb2.FollowLogs) -> None:
        if request.request_id in self._follows:
            return  # a repeated FollowLogs: the follow runs already
        task = self._tasks.create_task(
            self._stream_logs(request), name=f"lmstack-follow-{request.request_id}"
        )
        self._follows[request.request_id] = task
        task.add_done_callback(lambda _: self._forget_follow(request.request_id))

    def _forget_follow(self, request_id: str) -> None:
        self._follows.pop(request_id, None)
        self._stopped_follows.discard(request_id)

    async def _stream_logs(self, request: agent_pb2.FollowLogs) -> None:
        def chunk(**fields: Any) -> None:
            message = agent_pb2.LogChunk(request_id=request.request_id, **fields)
            self._outbox.send(agent_pb2.AgentMessage(log_chunk=message))

        error = ""
        try:
            async for data in self._runtime.follow_logs(request.deployment_id, request.tail):
                chunk(data=data)
        except asyncio.CancelledError:
            if request.request_id not in self._stopped_follows:
                raise  # the connection is going away, not just this follow
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except Exception as exc:
            error = str(exc) or type(exc).__name__
        chunk(eof=True, error=error)

    async def _answer_containers(self, request: agent_pb2.ListContainers) -> None:
        reply = agent_pb2.Containers(request_id=request.request_id)
        try:
            reply.containers.extend(
                _container_info(c) for c in await self._runtime.list_containers()
            )
        except Exception as exc:
            reply.error = str(exc) or type(exc).__name__
        self._outbox.send(agent_pb2.AgentMessage(containers=reply))

    # -- heartbeats ------------------------------------------------------------------

    async def heartbeats(self, interval: float) -> None:
        while True:
            await self._heartbeat()
            await asyncio.sleep(interval)

    async def _heartbeat(self) -> None:
        token = self._watcher.token()
        stats = await self._gpu_stats()
        containers = await self._containers()
        for container in self._watcher.observe(containers, token):
            self._spawn(self._report_exit(container), f"exit-{container.deployment_id}")
        heartbeat = agent_pb2.Heartbeat(
            gpus=[_gpu_stats(gpu) for gpu in stats],
            containers=[_container_info(c) for c in containers],
        )
        self._outbox.send(agent_pb2.AgentMessage(heartbeat=heartbeat))

    async def _gpu_stats(self) -> list[GpuStats]:
        if self._gpus.simulated:
            # No C call behind it; a thread hop per heartbeat would only cost
            # the 1,000-agent fleet benchmark.
            return self._gpus.stats()
        return await asyncio.to_thread(self._gpus.stats)

    async def _containers(self) -> list[ContainerState]:
        try:
            self._last_containers = await self._runtime.list_containers()
        except Exception as exc:
            # A runtime hiccup must not make containers vanish from the
            # controller's view: repeat what we last knew. Warn once per
            # outage, not once per heartbeat.
            level = logging.DEBUG if self._listing_failed else logging.WARNING
            logger.log(level, "listing containers failed: %s", exc)
            self._listing_failed = True
        else:
            if self._listing_failed:
                logger.info("listing containers works again")
            self._listing_failed = False
        return self._last_containers

    async def _report_exit(self, container: ContainerState) -> None:
        message = f"container exited with code {container.exit_code}"
        tail = await self._log_tail(container.deployment_id)
        if tail:
            message += f"; last log lines:\n{tail}"
        logger.warning("deployment %s: %s", container.deployment_id, message)
        update = StatusUpdate(
            deployment_id=container.deployment_id,
            status=ERROR,
            message=message,
            container_id=container.container_id,
            port=container.host_port,
            exit_code=container.exit_code,
        )
        await self._report(update)

    async def _log_tail(self, deployment_id: str) -> str:
        try:
            return await self._runtime.logs(deployment_id, EXIT_LOG_LINES)
        except Exception as exc:
            logger.debug("no logs for exited deployment %s: %s", deployment_id, exc)
            return ""

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.create_task(work, name=f"lmstack-{name}")


class _ExitWatcher:
    """Spots engine containers that stopped running without being told to.

    A container known to run (seen ``running`` on a heartbeat, or reported
    ``running`` by the runtime) that a later heartbeat shows ``exited`` with the
    same container id crashed, unless a Deploy or Stop for its deployment ran
    in between. The generation counter makes that precise: a heartbeat takes a
    token before listing containers, and any deployment whose command began or
    ended after the token is skipped for that round (the listing may predate
    the command). Learning from the runtime's own ``running`` report closes the
    gap of an engine that dies right after a deploy, before any heartbeat saw
    it run. Lives on the session, not the connection, so an engine that died
    while the controller was away is still reported after the reconnect.
    """

    def __init__(self) -> None:
        self._running: dict[str, str] = {}  # deployment id -> container id seen running
        self._busy: Counter[str] = Counter()
        self._generation = 0
        self._changed_at: dict[str, int] = {}

    def token(self) -> int:
        return self._generation

    def begin(self, deployment_id: str) -> None:
        self._busy[deployment_id] += 1
        self._touch(deployment_id)
        # Whatever runs now is being replaced or stopped on purpose.
        self._running.pop(deployment_id, None)

    def end(self, deployment_id: str) -> None:
        self._busy[deployment_id] -= 1
        if self._busy[deployment_id] <= 0:
            del self._busy[deployment_id]
        self._touch(deployment_id)

    def reported(self, update: StatusUpdate) -> None:
        """Learn from a status sent to the controller."""
        if update.status == RUNNING and update.container_id:
            self._running[update.deployment_id] = update.container_id
        else:
            self._running.pop(update.deployment_id, None)

    def observe(self, containers: list[ContainerState], token: int) -> list[ContainerState]:
        """Record ``containers`` (listed after ``token``); return those that crashed."""
        crashed: list[ContainerState] = []
        seen: set[str] = set()
        for container in containers:
            deployment_id = container.deployment_id
            seen.add(deployment_id)
            if not self._settled(deployment_id, token):
                continue
            if container.state == RUNNING:
                self._running[deployment_id] = container.container_id
            elif (
                container.state in _EXITED_STATES
                and self._running.pop(deployment_id, None) == container.container_id
            ):
                crashed.append(container)
        # Containers removed behind our back are forgotten, not reported: the
        # controller sees them missing from the heartbeat.
        for deployment_id in self._running.keys() - seen:
            if self._settled(deployment_id, token):
                del self._running[deployment_id]
        return crashed

    def _settled(self, deployment_id: str, token: int) -> bool:
        """No command ran for the deployment since the listing began."""
        return deployment_id not in self._busy and self._changed_at.get(deployment_id, 0) <= token

    def _touch(self, deployment_id: str) -> None:
        self._generation += 1
        self._changed_at[deployment_id] = self._generation


# -- translation between the wire and agent.types ----------------------------------------


def _translate(error: grpc.aio.AioRpcError, controller: str) -> Exception:
    """Map a gRPC status to a refusal (final) or a lost connection (retried)."""
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthenticationFailed(
            f"controller {controller} rejected the join token ({details}); "
            "check --token / LMSTACK_TOKEN"
        )
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return ProtocolVersionRejected(
            f"controller {controller} refused protocol version {PROTOCOL_VERSION}: {details}"
        )
    return _ConnectionLost(f"{code.name}: {details}")


def _reason(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that ended a connection's task group."""
    leaves = list(_leaves(group))
    for exc in leaves:
        if isinstance(exc, SessionRejected):
            return exc
    if all(isinstance(exc, _ConnectionLost) for exc in leaves):
        return leaves[0]
    return group  # a bug: keep every exception for the log


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _deploy_spec(command: agent_pb2.Deploy) -> DeploySpec:
    try:
        config = json.loads(command.config_json or "{}")
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"Deploy.config_json is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ProtocolError("Deploy.config_json must be a JSON object")
    return DeploySpec(
        deployment_id=command.deployment_id,
        name=command.name,
        backend=command.backend,
        image=command.image,
        model=command.model,
        config=config,
        host_port=command.host_port,
        gpu_indices=tuple(command.gpu_indices),
        env=dict(command.env),
    )


def _deployment_status(update: StatusUpdate) -> agent_pb2.DeploymentStatus:
    return agent_pb2.DeploymentStatus(
        deployment_id=update.deployment_id,
        status=update.status,
        message=update.message,
        container_id=update.container_id,
        port=update.port,
        has_exit_code=update.exit_code is not None,
        exit_code=update.exit_code or 0,
    )


# The dataclasses mirror their messages field for field.
def _container_info(container: ContainerState) -> agent_pb2.ContainerInfo:
    return agent_pb2.ContainerInfo(**dataclasses.asdict(container))


def _gpu_device(device: GpuDevice) -> agent_pb2.GpuDevice:
    return agent_pb2.GpuDevice(**dataclasses.asdict(device))


def _gpu_stats(stats: GpuStats) -> agent_pb2.GpuStats:
    return agent_pb2.GpuStats(**dataclasses.asdict(stats))


# -- runtime and disk helpers ---------------------------------------------------------------


async def _runtime_info(runtime: Runtime) -> RuntimeInfo:
    try:
        return await runtime.info()
    except Exception as exc:
        # An agent without a container engine still joins and says why.
        return RuntimeInfo(available=False, error=str(exc) or type(exc).__name__)


async def _list_containers(runtime: Runtime) -> list[ContainerState]:
    try:
        return await runtime.list_containers()
    except Exception as exc:
        logger.warning("listing containers for Hello failed: %s", exc)
        return []


def _channel_credentials(settings: AgentSettings) -> grpc.ChannelCredentials | None:
    if not settings.tls:
        return None
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("tls_cert and tls_key must be given together")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(settings.tls_ca),
        private_key=_read_pem(settings.tls_key),
        certificate_chain=_read_pem(settings.tls_cert),
    )


def _read_pem(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read TLS file {path}: {exc}") from exc


def _read_worker_id(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        logger.warning("cannot read worker id from %s: %s; joining as a new worker", path, exc)
        return ""


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` so readers see the old content or the new, never a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def _heartbeat_interval(welcome: agent_pb2.Welcome, fallback: float) -> float:
    """The controller's interval (milliseconds preferred), else our own setting."""
    if welcome.heartbeat_interval_ms:
        return welcome.heartbeat_interval_ms / 1000
    return float(welcome.heartbeat_interval_seconds or fallback)
