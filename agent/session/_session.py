"""``AgentSession``: the agent's side of the controller stream (DESIGN.md section 3).

``AgentSession.run()`` keeps one ``AgentService.Connect`` stream open to the
controller for as long as the agent lives.

Guarantees:

* **Hello first.** Every connection starts with a Hello that lists the GPUs,
  the host, the persisted worker id, the declared engine port range, the
  worker's labels (``--label``) and every container the runtime manages for
  this worker (``of_worker``: labelled with its id, or unlabelled; with its
  cluster label, instance id and restarts), so the controller can diff
  desired against actual state after any restart.
* **Identity survives restarts.** The worker id from Welcome is persisted
  (``agent.session._identity``) and sent in the next Hello. The Welcome's
  cluster id is the cluster this connection's containers belong to.
* **The controller sets the pace.** Heartbeats follow Welcome's interval
  (``heartbeat_interval_ms``, else ``heartbeat_interval_seconds``); only when
  both are 0 does the agent's own ``heartbeat_interval`` apply.
* **Reconnect forever**, with exponential backoff and full jitter capped at
  ``reconnect_max_seconds``, reset by every Welcome. Only a refusal ends the
  session: ``AuthenticationFailed`` (``UNAUTHENTICATED``) or
  ``ProtocolVersionRejected`` (``FAILED_PRECONDITION``) is raised from
  ``run()`` after one attempt, never retried hot.
* **Restarts need no controller.** ``run()`` owns the ``Supervisors``
  (``agent.supervisor``) for as long as it runs, across connections: an engine
  that exits or fails its health checks is restarted under its restart policy
  while the controller is unreachable too. Reports made while no stream is up
  are dropped; the next Hello and the Deploys that follow it tell the
  controller where each instance stands.
* **Shutdown leaves engines alone.** Cancelling ``run()`` cancels the
  supervisors (a pending restart is not made), closes the channel and nothing
  else: engine containers keep serving while the agent is away.

Concurrency model: one asyncio loop, one connection at a time. Per connection,
an ``Outbox`` is the only writer of the request stream, and all background work
of the connection lives in one ``asyncio.TaskGroup`` that is awaited before the
next attempt (see ``agent.session._connection``); the supervisors are tasks of
the session's own ``Supervisors`` context, which ``run()`` leaves last. Blocking
calls (NVML, ``/proc``, DNS) go through ``asyncio.to_thread``. The sleep used
between attempts and the random source of the jitter are injected so tests are
deterministic.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio

from agent.gpu import GpuReader
from agent.restarts import RestartTimings
from agent.session._backoff import Backoff
from agent.session._channel import ChannelFactory
from agent.session._connection import Call, Connection
from agent.session._errors import ConnectionLost, SessionRejected, end_reason
from agent.session._exits import ExitWatcher
from agent.session._identity import WorkerIdFile
from agent.session._outbox import Outbox
from agent.session._wire import (
    connection_error,
    container_info,
    gpu_device,
    heartbeat_interval,
    of_worker,
)
from agent.supervisor import Supervisors
from agent.sysinfo import host_info, primary_ip
from agent.types import ContainerState, Runtime, RuntimeInfo
from shared import PROTOCOL_VERSION, __version__
from shared.proto.lmstack.v1 import agent_pb2, agent_pb2_grpc
from shared.settings import AgentSettings

logger = logging.getLogger("lmstack.agent.session")

Sleep = Callable[[float], Awaitable[None]]


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
        self._channels = ChannelFactory(settings)
        self._metadata = (("authorization", f"Bearer {settings.token.get_secret_value()}"),)
        self._watcher = ExitWatcher()
        self._identity = WorkerIdFile(settings.state_dir)
        self._worker_id = self._identity.read()
        self._timings = RestartTimings(
            backoff_initial=settings.restart_backoff_initial,
            backoff_max=settings.restart_backoff_max,
            reset_after=settings.restart_reset_after,
            health_check_interval=settings.health_check_interval,
        )

    @property
    def worker_id(self) -> str:
        """The id the controller knows us by; empty before the first Welcome."""
        return self._worker_id

    async def run(self) -> None:
        """Stay connected until cancelled. Raises ``SessionRejected`` on refusal."""
        async with Supervisors(self._runtime, self._timings) as supervisors:
            await self._reconnect_forever(supervisors)

    async def _reconnect_forever(self, supervisors: Supervisors) -> None:
        while True:
            try:
                await self._connect_once(supervisors)
            except SessionRejected as exc:
                logger.error("controller %s refused this agent: %s", self._settings.controller, exc)
                raise
            except ConnectionLost as exc:
                _unless_cancelled()
                logger.warning("connection to controller %s: %s", self._settings.controller, exc)
            except Exception:
                _unless_cancelled()
                # A bug in one connection must not end a daemon that can reconnect.
                logger.exception("connection to controller %s failed", self._settings.controller)
            delay = self._backoff.next_delay()
            logger.info("reconnecting to %s in %.2fs", self._settings.controller, delay)
            await self._sleep(delay)

    async def _connect_once(self, supervisors: Supervisors) -> None:
        hello = await self._hello(supervisors)
        outbox = Outbox()
        outbox.send(agent_pb2.AgentMessage(hello=hello))
        channel = self._channels.open()
        call: Call | None = None
        try:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            call = stub.Connect(outbox.messages(), metadata=self._metadata)
            welcome = await self._await_welcome(call)
            self._accept(welcome)
            interval = heartbeat_interval(welcome, self._settings.heartbeat_interval)
            await self._serve(call, outbox, interval, welcome.cluster_id, supervisors)
        finally:
            outbox.close()
            if call is not None:
                call.cancel()
            await channel.close()

    async def _serve(
        self,
        call: Call,
        outbox: Outbox,
        interval: float,
        cluster_id: str,
        supervisors: Supervisors,
    ) -> None:
        connection: Connection | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                connection = Connection(
                    tasks,
                    outbox,
                    self._runtime,
                    self._gpus,
                    self._watcher,
                    supervisors=supervisors,
                    cluster_id=cluster_id,
                    worker_id=self._worker_id,
                )
                supervisors.attach(connection.report)
                tasks.create_task(connection.heartbeats(interval), name="lmstack-heartbeat")
                await connection.read_commands(call, self._settings.controller)
        except BaseExceptionGroup as group:
            raise end_reason(group) from None
        finally:
            if connection is not None:
                supervisors.detach(connection.report)

    async def _await_welcome(self, call: Call) -> agent_pb2.Welcome:
        try:
            async with asyncio.timeout(self._welcome_timeout):
                message = await call.read()
        except TimeoutError:
            raise ConnectionLost(f"no Welcome within {self._welcome_timeout:g}s") from None
        except grpc.aio.AioRpcError as exc:
            raise connection_error(exc, self._settings.controller) from exc
        if not isinstance(message, agent_pb2.ControllerMessage):  # grpc.aio.EOF
            raise ConnectionLost("controller closed the stream before Welcome")
        if message.WhichOneof("payload") != "welcome":
            raise ConnectionLost(f"expected Welcome, got {message.WhichOneof('payload')}")
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
            self._identity.write(self._worker_id)
        logger.info("joined controller %s as worker %s", self._settings.controller, self._worker_id)

    async def _hello(self, supervisors: Supervisors) -> agent_pb2.Hello:
        info = await _runtime_info(self._runtime)
        containers = await _list_containers(self._runtime) if info.available else []
        containers = of_worker(containers, self._worker_id)
        containers = supervisors.overlay(containers)
        devices = await asyncio.to_thread(self._gpus.devices)
        host = await asyncio.to_thread(host_info)
        ports = self._settings.engine_ports()
        address = self._settings.advertise_address or await asyncio.to_thread(
            primary_ip, self._settings.controller.rpartition(":")[0]
        )
        return agent_pb2.Hello(
            name=self._settings.name,
            agent_version=__version__,
            protocol_version=PROTOCOL_VERSION,
            advertise_address=address,
            worker_id=self._worker_id,
            gpus=[gpu_device(device) for device in devices],
            system_info=agent_pb2.SystemInfo(
                hostname=host.hostname,
                cpu_count=host.cpu_count,
                memory_total_bytes=host.memory_total_bytes,
                os=host.os,
                docker_version=info.version,
            ),
            containers=[container_info(container) for container in containers],
            runtime_error="" if info.available else info.error or "container runtime unavailable",
            gpus_simulated=self._gpus.simulated,
            engine_port_min=ports[0] if ports else 0,
            engine_port_max=ports[1] if ports else 0,
            labels=self._settings.labels,
        )


def _unless_cancelled() -> None:
    """Raise ``CancelledError`` if this task is being cancelled: a cancel that
    lands while a connection ends can come out of its task group as the
    connection's own error, and must still stop the session, not reconnect."""
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise asyncio.CancelledError


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
