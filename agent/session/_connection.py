"""One live stream after Welcome: command dispatch, per-deployment lanes, heartbeats.

Guarantees:

* **Per-deployment order.** Deploy and Stop commands for one deployment run
  one after another, in arrival order, on that deployment's lane; different
  deployments run concurrently. FetchLogs, ListContainers and FollowLogs never
  wait behind a lane.
* **A Stop supersedes Deploys.** It drops the deployment's queued Deploys and
  cancels the one in flight, so it never waits on an engine that will not
  become healthy.
* **Every runtime status is reported** as a DeploymentStatus, and a container
  that exits on its own (seen on a heartbeat) is reported as ``error`` with its
  exit code and last log lines, unless it belongs to another cluster.
* **Ownership.** Every Deploy runs with the cluster id of the controller's
  Welcome (its container is labelled with it), and every Stop with it too, so
  the runtime refuses to stop another cluster's container. Commands for one
  container *name* but different deployments (an orphan's removal, a new
  deployment of that name) may run on two lanes at once; the runtime orders
  what they do to the name (``agent.runtime._names``).

Concurrency model: one asyncio loop. Every piece of background work (the
heartbeat loop, lanes, request handlers, log follows, exit reports) is a task of
the ``asyncio.TaskGroup`` the session hands in, so when the stream breaks,
``read_commands`` raises, the group cancels all of it (in-flight deploys too: the
controller re-sends them after the next Hello, commands being level-triggered)
and the session awaits it before the next attempt. Every producer only enqueues
on the ``Outbox``. Blocking calls (NVML) go through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
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
    connection_error,
    container_info,
    deploy_spec,
    deployment_status,
    gpu_stats,
)
from agent.types import ERROR, ContainerState, Runtime, StatusUpdate
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
        cluster_id: str = "",
    ) -> None:
        self._tasks = tasks
        self._cluster_id = cluster_id
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
        spec = deploy_spec(command, self._cluster_id)
        deploying = asyncio.ensure_future(self._runtime.deploy(spec, self._report))
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
                await self._runtime.stop(
                    deployment_id, command.remove, self._report, cluster_id=self._cluster_id
                )
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
        self._outbox.send(agent_pb2.AgentMessage(deployment_status=deployment_status(update)))

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
                container_info(c) for c in await self._runtime.list_containers()
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
        for container in self._watcher.observe(self._own(containers), token):
            self._spawn(self._report_exit(container), f"exit-{container.deployment_id}")
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
