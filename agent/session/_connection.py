"""One live stream after Welcome: command dispatch, per-instance lanes, heartbeats.

Guarantees:

* **Keyed by instance.** Every command is about one instance: its
  ``instance_id``, or, when that is empty (a controller of protocol 1), its
  ``deployment_id``. Every report carries both ids.
* **Per-instance order.** Deploy and Stop commands for one instance run one
  after another, in arrival order, on that instance's lane; different instances
  run concurrently. FetchLogs, ListContainers and FollowLogs never wait behind a
  lane.
* **Stops before Deploys.** A Deploy starts only once every Stop that arrived
  before it (of any instance) has finished: the controller may place a new
  instance on the port and GPUs another one just gave up, and its container must
  not race the removal of the one that held them.
* **Deploys are supervised.** A Deploy hands the spec to the session's
  ``Supervisors`` (``agent.supervisor``), which restart the engine under its
  restart policy; the lane waits only for the attempt's outcome (``running`` or
  ``error``), and the supervisor lives on when this connection ends. A heartbeat
  that lists a supervised engine's container stopped nudges its supervisor, so an
  exit is noticed within a heartbeat, not only at the next health check.
* **A Stop supersedes Deploys.** It drops the instance's queued Deploys and
  cancels its supervisor at once (a deploy in flight, a watch, or a pending
  restart), so it never waits on an engine that will not become healthy and no
  restart follows it.
* **Every runtime status is reported** as a DeploymentStatus. A container that
  exits on its own with no supervisor (one this agent process never deployed) is
  reported, once seen on a heartbeat, as a final ``error`` with its exit code and
  last log lines, unless it belongs to another cluster.
* **Heartbeats** list every managed container, with the restarts the
  supervisors counted where those exceed the container's label.
* **Ownership.** Every Deploy runs with the cluster id of the controller's
  Welcome (its container is labelled with it), and every Stop with it too, so
  the runtime refuses to stop another cluster's container. Every Deploy's
  container is labelled with the worker id too, and every listing (heartbeats,
  ListContainers) holds only this worker's containers, unlabelled older ones
  and other clusters' (``of_worker``): agents of one cluster sharing a host
  never report, nor have removed as orphans, each other's engines. Commands for one
  container *name* but different instances may run on two lanes at once; the
  runtime orders what they do to the name (``agent.runtime._names``).

Concurrency model: one asyncio loop. Every piece of background work of the
connection (the heartbeat loop, lanes, request handlers, log follows, exit
reports) is a task of the ``asyncio.TaskGroup`` the session hands in, so when the
stream breaks, ``read_commands`` raises, the group cancels all of it and the
session awaits it before the next attempt. Supervisors are not the connection's:
they belong to the session and keep working. Every producer only enqueues on the
``Outbox``. Blocking calls (NVML) go through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

import grpc
import grpc.aio

from agent.gpu import GpuReader, GpuStats
from agent.session._errors import ConnectionLost
from agent.session._exits import ExitWatcher
from agent.session._outbox import Outbox
from agent.session._wire import (
    command_instance,
    connection_error,
    container_info,
    deploy_spec,
    deployment_status,
    gpu_stats,
    of_worker,
)
from agent.supervisor import Supervisors
from agent.types import ERROR, RUNNING, ContainerState, Reporter, Runtime, StatusUpdate
from shared.errors import LMStackError
from shared.proto.lmstack.v1 import agent_pb2

logger = logging.getLogger("lmstack.agent.session")

# Lines of an exited container's log quoted in its ``error`` report.
EXIT_LOG_LINES = 20
# FetchLogs with ``lines == 0`` means "a sensible amount".
DEFAULT_LOG_LINES = 100

Call = grpc.aio.StreamStreamCall[agent_pb2.AgentMessage, agent_pb2.ControllerMessage]
_Command = agent_pb2.Deploy | agent_pb2.Stop


class Connection:
    """One live stream after Welcome: command dispatch, lanes and heartbeats."""

    def __init__(
        self,
        tasks: asyncio.TaskGroup,
        outbox: Outbox,
        runtime: Runtime,
        gpus: GpuReader,
        watcher: ExitWatcher,
        *,
        supervisors: Supervisors,
        cluster_id: str = "",
        worker_id: str = "",
    ) -> None:
        self._tasks = tasks
        self._cluster_id = cluster_id
        self._worker_id = worker_id
        self._outbox = outbox
        self._runtime = runtime
        self._gpus = gpus
        self._watcher = watcher
        self._supervisors = supervisors
        # Commands waiting per instance id, each with the Stops it waits for; a
        # lane task drains each.
        self._lanes: dict[str, deque[tuple[_Command, list[asyncio.Event]]]] = {}
        # Stops received and not finished yet, by instance id: set when done.
        self._stops: dict[str, asyncio.Event] = {}
        self._last_containers: list[ContainerState] = []
        self._listing_failed = False
        # Log follows in progress, by the request id of their FollowLogs.
        self._follows: dict[str, asyncio.Task[None]] = {}
        # Follows cancelled by a StopFollow (as opposed to the connection ending).
        self._stopped_follows: set[str] = set()

    # -- commands --------------------------------------------------------------------

    async def read_commands(self, call: Call, controller: str) -> None:
        """Dispatch commands until the stream ends; always raises."""
        while True:
            try:
                message = await call.read()
            except grpc.aio.AioRpcError as exc:
                raise connection_error(exc, controller) from exc
            if not isinstance(message, agent_pb2.ControllerMessage):  # grpc.aio.EOF
                raise ConnectionLost("controller closed the stream")
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
        instance_id = command_instance(command)
        waits: list[asyncio.Event] = []
        if isinstance(command, agent_pb2.Stop):
            self._supersede(instance_id)
            self._stops.setdefault(instance_id, asyncio.Event())
        else:
            waits = list(self._stops.values())
        lane = self._lanes.get(instance_id)
        if lane is None:
            lane = self._lanes[instance_id] = deque()
            self._spawn(self._drain(instance_id, lane), f"lane-{instance_id}")
        lane.append((command, waits))

    def _supersede(self, instance_id: str) -> None:
        """A Stop makes queued Deploys, a deploy in flight and a pending restart of
        that instance moot."""
        lane = self._lanes.get(instance_id)
        if lane is not None:
            kept = [entry for entry in lane if not isinstance(entry[0], agent_pb2.Deploy)]
            lane.clear()
            lane.extend(kept)
        if self._supervisors.supervised(instance_id):
            logger.info("instance %s: stop requested, cancelling its supervisor", instance_id)
            self._supervisors.cancel(instance_id)

    async def _drain(
        self, instance_id: str, lane: deque[tuple[_Command, list[asyncio.Event]]]
    ) -> None:
        try:
            while lane:
                command, waits = lane.popleft()
                for stopped in waits:
                    await stopped.wait()
                await self._execute(command)
        finally:
            # No await between the empty check and this: ``_enqueue`` either
            # appended in time or will start a new lane.
            del self._lanes[instance_id]

    async def _execute(self, command: _Command) -> None:
        instance_id = command_instance(command)
        report = self._reporter(command.deployment_id or instance_id)
        self._watcher.begin(instance_id)
        try:
            if isinstance(command, agent_pb2.Deploy):
                await self._supervisors.deploy(
                    deploy_spec(command, self._cluster_id, self._worker_id)
                )
            else:
                await self._supervisors.forget(instance_id)
                await self._runtime.stop(
                    instance_id, command.remove, report, cluster_id=self._cluster_id
                )
        except LMStackError as exc:
            logger.warning("instance %s: %s", instance_id, exc)
            await report(StatusUpdate(instance_id, ERROR, str(exc), final=True))
        except Exception as exc:
            logger.exception("instance %s: runtime failed", instance_id)
            await report(StatusUpdate(instance_id, ERROR, f"agent error: {exc!r}", final=True))
        finally:
            self._watcher.end(instance_id)
            if isinstance(command, agent_pb2.Stop) and (done := self._stops.pop(instance_id, None)):
                done.set()

    def _reporter(self, deployment_id: str) -> Reporter:
        """``report`` for a command's reports: its deployment id where one lacks it."""

        async def report(update: StatusUpdate) -> None:
            if not update.deployment_id:
                update = dataclasses.replace(update, deployment_id=deployment_id)
            await self.report(update)

        return report

    async def report(self, update: StatusUpdate) -> None:
        """Send one status report (the supervisors' and the lanes' way out)."""
        self._watcher.reported(update)
        self._outbox.send(agent_pb2.AgentMessage(deployment_status=deployment_status(update)))

    async def _answer_logs(self, request: agent_pb2.FetchLogs) -> None:
        result = agent_pb2.LogsResult(request_id=request.request_id)
        try:
            result.logs = await self._runtime.logs(
                command_instance(request), request.lines or DEFAULT_LOG_LINES
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
            async for data in self._runtime.follow_logs(command_instance(request), request.tail):
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
            listed = self._supervisors.overlay(await self._listing())
            reply.containers.extend(container_info(c) for c in listed)
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
        containers = self._supervisors.overlay(await self._containers())
        unsupervised = []
        for container in self._own(containers):
            if not self._supervisors.supervised(container.instance_id):
                unsupervised.append(container)
            elif container.state != RUNNING:
                self._supervisors.nudge(container.instance_id)
        for container in self._watcher.observe(unsupervised, token):
            self._spawn(self._report_exit(container), f"exit-{container.instance_id}")
        heartbeat = agent_pb2.Heartbeat(
            gpus=[gpu_stats(gpu) for gpu in stats],
            containers=[container_info(c) for c in containers],
        )
        self._outbox.send(agent_pb2.AgentMessage(heartbeat=heartbeat))

    def _own(self, containers: list[ContainerState]) -> list[ContainerState]:
        """The containers not labelled with another cluster (whose exits are not
        this controller's to hear about)."""
        if not self._cluster_id:
            return containers
        return [c for c in containers if c.cluster_id in ("", self._cluster_id)]

    async def _listing(self) -> list[ContainerState]:
        """The runtime's containers of this worker (``of_worker``)."""
        listed = await self._runtime.list_containers()
        return of_worker(listed, self._worker_id, self._cluster_id)

    async def _gpu_stats(self) -> list[GpuStats]:
        if self._gpus.simulated:
            # No C call behind it; a thread hop per heartbeat would only cost
            # the 1,000-agent fleet benchmark.
            return self._gpus.stats()
        return await asyncio.to_thread(self._gpus.stats)

    async def _containers(self) -> list[ContainerState]:
        try:
            self._last_containers = await self._listing()
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
        """An unsupervised engine's exit: nothing here will restart it."""
        message = f"container exited with code {container.exit_code}"
        tail = await self._log_tail(container.instance_id)
        if tail:
            message += f"; last log lines:\n{tail}"
        logger.warning("instance %s: %s", container.instance_id, message)
        update = StatusUpdate(
            container.instance_id,
            ERROR,
            message,
            container_id=container.container_id,
            port=container.host_port,
            exit_code=container.exit_code,
            deployment_id=container.deployment_id,
            restarts=container.restarts,
            started_at=container.started_at,
            final=True,
        )
        await self.report(update)

    async def _log_tail(self, instance_id: str) -> str:
        try:
            return await self._runtime.logs(instance_id, EXIT_LOG_LINES)
        except Exception as exc:
            logger.debug("no logs for exited instance %s: %s", instance_id, exc)
            return ""

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.create_task(work, name=f"lmstack-{name}")
