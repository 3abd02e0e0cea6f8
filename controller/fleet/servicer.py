"""``AgentService.Connect``: the controller's end of each agent's stream.

Per call: check the join token (``UNAUTHENTICATED``), read Hello (anything else
first is ``INVALID_ARGUMENT``), check the protocol version
(``FAILED_PRECONDITION``, naming both versions), register or re-identify the
worker, answer Welcome, reconcile desired against reported containers, then
read the agent's messages while writing its commands until either side ends.

Reconciliation is level-triggered: every instance assigned to the worker is
sent as Deploy with the spec it runs (the agent leaves a running container with
the same spec alone, so running ones are adopted without a restart, missing ones
are started), and every reported container of this controller's cluster whose
instance is not assigned to the worker (an orphan: deleted, scaled away, or
rescheduled while the worker was lost) is stopped and removed. A container made
before instances is the instance of its deployment's id (migration 0005). Containers of
another cluster are left running (``controller.fleet.ownership`` says which are
ours), and the Welcome carries the cluster id the agent labels containers with.

A status report is stored on its instance, with the restarts, last exit code and
start time the agent reports, and the deployment's aggregate is refreshed in the
same transaction. A report for an instance this controller does not have
(removed while it was starting, or meanwhile) is answered with a Stop, unless
it says the container is gone or failing already (``stopping``, ``stopped``,
``error``): an error report leaves no running container behind (a failed deploy
removes its own; an exited engine is an orphan the next Hello removes), and
answering it could start a loop with an agent that refuses to stop another cluster's container.

The declared engine port range of a Hello is checked (``1 <= min <= max <=
65535``, or both 0 for none; else ``INVALID_ARGUMENT``) and stored on the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio
from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from controller.auth import digests_equal
from controller.fleet.hub import Fleet
from controller.fleet.messages import deploy_message, stop_message
from controller.fleet.ownership import ours, unlabelled_ids
from controller.fleet.session import AgentSession
from controller.metrics import CommandTimer
from controller.store import Database, Deployment, Instance, Worker, aggregate, uncancelled
from controller.store.timeutil import parse_iso, utcnow
from shared import PROTOCOL_VERSION, __version__
from shared.proto.lmstack.v1 import agent_pb2, agent_pb2_grpc
from shared.status import DeploymentStatus, WorkerStatus

log = logging.getLogger("lmstack.fleet")

Context = grpc.aio.ServicerContext[agent_pb2.AgentMessage, agent_pb2.ControllerMessage]
MIB = 1024 * 1024
# How long a refused agent's first message is waited for before the refusal.
REFUSAL_READ_SECONDS = 5.0


# Reports that need no Stop for a deployment we do not have (see the docstring).
_GONE = frozenset({DeploymentStatus.STOPPING, DeploymentStatus.STOPPED, DeploymentStatus.ERROR})


def engine_ports(hello: agent_pb2.Hello) -> tuple[int, int] | None:
    """The Hello's declared engine port range; ``None`` when it declares none."""
    low, high = hello.engine_port_min, hello.engine_port_max
    if low == 0 and high == 0:
        return None
    if not 1 <= low <= high <= 65535:
        raise _Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"engine port range {low}-{high} is invalid: need 1 <= min <= max <= 65535",
        )
    return low, high


def _valid_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def gpu_devices(hello: agent_pb2.Hello) -> list[dict[str, Any]]:
    return [
        {
            "index": gpu.index,
            "uuid": gpu.uuid,
            "name": gpu.name,
            "memory": gpu.memory_total_bytes // MIB,
            "driver_version": gpu.driver_version,
            "cuda_version": gpu.cuda_version,
        }
        for gpu in hello.gpus
    ]


def system_info(hello: agent_pb2.Hello) -> dict[str, Any]:
    info = hello.system_info
    return {
        "hostname": info.hostname,
        "cpu_count": info.cpu_count,
        "memory_total": info.memory_total_bytes,
        "os": info.os,
        "docker_version": info.docker_version,
    }


class _Refused(Exception):
    """Ends a call with this status. Raised before the stream is established."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _peer_host(peer: str) -> str:
    """``ipv4:10.0.0.5:41234`` → ``10.0.0.5``; ``ipv6:[::1]:5`` → ``::1``."""
    _, _, address = peer.partition(":")
    host = address.rpartition(":")[0]
    return host.strip("[]")


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, fleet: Fleet, db: Database, join_token: str) -> None:
        self._fleet = fleet
        self._db = db
        self._token = join_token

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: Context
    ) -> AsyncIterator[agent_pb2.ControllerMessage]:
        if not self._authorized(context):
            # The agent's Hello is read (and dropped) before the refusal: ending
            # the call while that write is in flight makes grpc.aio fail the
            # write and replace our status with INTERNAL ("Internal error from
            # Core") in a few calls per thousand, which the agent rightly takes
            # for a lost connection and retries once.
            log.warning("agent from %s refused: invalid join token", context.peer())
            with contextlib.suppress(TimeoutError, grpc.aio.AioRpcError, StopAsyncIteration):
                await asyncio.wait_for(anext(aiter(request_iterator)), REFUSAL_READ_SECONDS)
            context.set_code(grpc.StatusCode.UNAUTHENTICATED)
            context.set_details("invalid join token")
            return
        try:
            hello = await self._hello(request_iterator)
            session = await uncancelled(self._register(hello, context.peer()))
        except _Refused as refused:
            log.warning("agent from %s refused: %s", context.peer(), refused.details)
            context.set_code(refused.code)
            context.set_details(refused.details)
            return
        reader: asyncio.Task[None] | None = None
        commands = self._fleet.metrics.command_timer()
        try:
            await self._fleet.attach(session)
            log.info(
                "worker %s (%s) connected: agent %s, %d GPUs, %d containers",
                session.name, session.worker_id, hello.agent_version, len(hello.gpus),
                len(hello.containers),
            )  # fmt: skip
            interval = self._fleet.heartbeat_interval
            yield agent_pb2.ControllerMessage(
                welcome=agent_pb2.Welcome(
                    worker_id=session.worker_id,
                    heartbeat_interval_seconds=max(1, round(interval)),
                    heartbeat_interval_ms=max(1, round(interval * 1000)),
                    protocol_version=PROTOCOL_VERSION,
                    cluster_id=self._fleet.cluster_id,
                )
            )
            await self._reconcile(session, hello.containers)
            reader = asyncio.create_task(self._read(request_iterator, session, commands))
            while (command := await session.outbound.get()) is not None:
                commands.sent(command)
                yield command
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            await self._fleet.detach(session)

    def _authorized(self, context: Context) -> bool:
        metadata = dict(context.invocation_metadata() or ())
        header = str(metadata.get("authorization", ""))
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and digests_equal(token.strip(), self._token)

    async def _hello(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage]
    ) -> agent_pb2.Hello:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("payload") != "hello":
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Hello")
        hello = first.hello
        if hello.protocol_version != PROTOCOL_VERSION:
            raise _Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"controller {__version__} speaks agent protocol {PROTOCOL_VERSION}; "
                f"agent {hello.agent_version or '?'} speaks {hello.protocol_version}",
            )
        if not hello.name:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "Hello.name is empty")
        engine_ports(hello)  # refused here, before anything is stored
        return hello

    async def _register(self, hello: agent_pb2.Hello, peer: str) -> AgentSession:
        """The worker row for this agent: by its persisted id, else by name, else new."""
        async with self._db.session() as db:
            row = None
            if hello.worker_id and _valid_uuid(hello.worker_id):
                row = await db.get(Worker, hello.worker_id)
            by_name = await db.scalar(select(Worker).where(Worker.name == hello.name))
            if row is None and by_name is not None:
                if self._fleet.is_connected(by_name.id):
                    raise _Refused(
                        grpc.StatusCode.ALREADY_EXISTS,
                        f"a worker named '{hello.name}' is connected already",
                    )
                row = by_name
            if row is None:
                known_id = hello.worker_id if _valid_uuid(hello.worker_id) else None
                row = Worker(id=known_id or str(uuid.uuid4()), name=hello.name)
                db.add(row)
            elif row.name != hello.name:
                if by_name is not None and by_name.id != row.id:
                    raise _Refused(
                        grpc.StatusCode.ALREADY_EXISTS,
                        f"another worker is named '{hello.name}'",
                    )
                row.name = hello.name
            ports = engine_ports(hello)
            session = AgentSession(
                worker_id=row.id,
                name=hello.name,
                gpu_devices=gpu_devices(hello),
                gpus_simulated=hello.gpus_simulated,
                engine_ports=ports,
                labels=dict(hello.labels),
                last_heartbeat=utcnow(),
            )
            row.engine_port_min, row.engine_port_max = ports or (None, None)
            row.labels = dict(hello.labels)
            row.status = WorkerStatus.ONLINE
            row.offline_since = None
            row.advertise_address = hello.advertise_address or _peer_host(peer)
            row.agent_version = hello.agent_version
            row.gpu_info = session.gpu_info()
            row.system_info = system_info(hello)
            row.runtime_error = hello.runtime_error
            row.last_heartbeat = session.last_heartbeat
            await db.commit()
        return session

    async def _reconcile(
        self, session: AgentSession, containers: Sequence[agent_pb2.ContainerInfo]
    ) -> None:
        async with self._db.session() as db:
            desired = list(
                await db.execute(
                    select(Instance, Deployment.name, Deployment.backend)
                    .join(Deployment, Deployment.id == Instance.deployment_id)
                    .where(Instance.worker_id == session.worker_id)
                )
            )
        wanted = {instance.id for instance, _, _ in desired}
        for instance, name, backend in desired:
            session.send(deploy_message(instance, name, backend))
        strays = [c for c in containers if _instance_id(c) not in wanted]
        known = await self._fleet.known_deployments(unlabelled_ids(strays))
        orphans: dict[str, str] = {}
        for container in strays:
            if ours(self._fleet.cluster_id, container, known):
                orphans[_instance_id(container)] = container.deployment_id
            else:
                log.info(
                    "worker %s: leaving container %s running: it belongs to %s",
                    session.name, container.name or container.container_id,
                    f"cluster {container.cluster_id}" if container.cluster_id
                    else "no deployment of this cluster (unlabelled)",
                )  # fmt: skip
        for instance_id, deployment_id in sorted(orphans.items()):
            log.info(
                "worker %s: removing orphan container of %s (instance %s)",
                session.name, deployment_id, instance_id,
            )  # fmt: skip
            session.send(stop_message(instance_id, deployment_id))

    async def _read(
        self,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        session: AgentSession,
        commands: CommandTimer,
    ) -> None:
        try:
            async for message in request_iterator:
                commands.received(message)
                await self._dispatch(session, message)
        except grpc.aio.AioRpcError as exc:
            log.info("worker %s stream broke: %s", session.name, exc.code())
        except Exception:
            log.exception("worker %s: error handling a message", session.name)
        finally:
            session.close("stream ended")

    async def _dispatch(self, session: AgentSession, message: agent_pb2.AgentMessage) -> None:
        kind = message.WhichOneof("payload")
        if kind == "heartbeat":
            self._fleet.record_heartbeat(session, message.heartbeat)
        elif kind == "deployment_status":
            await self._on_status(session, message.deployment_status)
        elif kind == "logs_result":
            session.resolve(message.logs_result.request_id, message)
        elif kind == "containers":
            session.resolve(message.containers.request_id, message)
        elif kind == "log_chunk":
            session.deliver_chunk(message.log_chunk)
        else:
            log.warning("worker %s sent an unexpected %s; ignored", session.name, kind)

    async def _on_status(self, session: AgentSession, status: agent_pb2.DeploymentStatus) -> None:
        try:
            await uncancelled(self._record_status(session, status))
        finally:
            # After the commit: the gateway's routes reload the new status.
            self._fleet.changed()

    async def _record_status(
        self, session: AgentSession, status: agent_pb2.DeploymentStatus
    ) -> None:
        instance_id = status.instance_id or status.deployment_id
        async with self._db.session() as db:
            row = await db.get(Instance, instance_id)
            if row is None or row.worker_id != session.worker_id:
                if status.status not in _GONE:
                    # Removed while it was starting: make sure it goes away.
                    session.send(stop_message(instance_id, status.deployment_id))
                return
            row.status = status.status
            row.status_message = status.message
            row.final = status.final
            row.restarts = max(row.restarts, status.restarts)
            if status.has_exit_code:
                row.last_exit_code = status.exit_code
            if status.container_id:
                row.container_id = status.container_id
            if status.port:
                row.port = status.port
            if status.started_at:
                row.started_at = parse_iso(status.started_at) or row.started_at
            try:
                deployment = await db.get(Deployment, row.deployment_id)
                if deployment is not None:
                    await aggregate.refresh(db, deployment)
                await db.commit()
            except StaleDataError:
                # Removed (drained) meanwhile: the report is about nothing now.
                log.debug("instance %s was removed before its report was stored", instance_id)
                return
            if deployment is not None:
                self._fleet.publish_deployment(deployment)
        self._fleet.instance_changed(row.deployment_id)
        log.info(
            "instance %s of %s on %s: %s %s",
            instance_id, deployment.name if deployment else row.deployment_id, session.name,
            status.status, status.message,
        )  # fmt: skip


def _instance_id(container: agent_pb2.ContainerInfo) -> str:
    """The instance a reported container is; one made before instances is the
    instance of its deployment's id (migration 0005)."""
    return container.instance_id or container.deployment_id
