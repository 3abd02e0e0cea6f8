"""The fleet hub: live agent sessions and every request the REST API makes of them.

Guarantees:
* At most one live session per worker. A new Hello from a worker that is still
  connected replaces the old session, which is closed. What a session
  guarantees (command order, request timeouts, log follows) is stated in
  ``controller.fleet.session``.
* A worker's stored ``status`` is ``online`` exactly while it has a session
  (every worker is marked offline when the controller starts).
* Heartbeat state (last heartbeat, GPU statistics) is kept in memory and
  written to the store in one batch every heartbeat interval, so 1,000 agents
  do not mean 200 transactions a second.
* A session whose heartbeats stop for ``MISSED_HEARTBEATS`` intervals is closed
  and its worker goes offline; its containers are not touched.
* Live changes are published on ``Fleet.events`` (``controller.events``):
  deployment statuses, deletions, workers going online/offline, and GPU
  statistics at most once per ``GPU_PUSH_SECONDS`` per worker.
* A log follow (``follow_logs``) also ends when its instance is stopped, and
  leaving it sends ``StopFollow``.
* Container listings mark each container ``foreign`` unless it belongs to this
  controller's cluster (``controller.fleet.ownership``).

Concurrency: everything runs on the controller's event loop. ``run()`` is the
one background loop (liveness and flushing); it is owned by the fleet's
lifecycle (``controller.fleet.lifecycle``). Placement is not the fleet's: the
deployment service (``controller.deployments``) owns its lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from sqlalchemy import select, update

from controller.events import EventHub
from controller.fleet.messages import deploy_message, deployment_event, stop_message, worker_event
from controller.fleet.ownership import ours, unlabelled_ids
from controller.fleet.session import AgentSession, LogFollow
from controller.metrics import Metrics
from controller.store import Database, Deployment, Instance, Worker, uncancelled
from controller.store.timeutil import utcnow
from shared.errors import ServiceUnavailable
from shared.proto.lmstack.v1 import agent_pb2
from shared.status import WorkerStatus

log = logging.getLogger("lmstack.fleet")

MISSED_HEARTBEATS = 3
# GPU statistics are pushed to dashboards at most this often per worker.
GPU_PUSH_SECONDS = 1.0


class Fleet:
    def __init__(
        self,
        db: Database,
        *,
        heartbeat_interval: float,
        request_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        events: EventHub | None = None,
        metrics: Metrics | None = None,
        cluster_id: str = "",
    ) -> None:
        self._db = db
        # Sent in every Welcome; the agents label containers with it.
        self.cluster_id = cluster_id
        self.events = events or EventHub()
        self.metrics = metrics or Metrics()
        self.heartbeat_interval = heartbeat_interval
        self._request_timeout = request_timeout
        self._clock = clock
        self._sessions: dict[str, AgentSession] = {}
        self._listeners: list[Callable[[], None]] = []
        self._instance_listeners: list[Callable[[str], None]] = []
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------ change events

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever a worker or deployment may have changed
        (connect, disconnect, status report, deploy, stop). It must be cheap."""
        self._listeners.append(listener)

    def changed(self) -> None:
        for listener in self._listeners:
            listener()

    def subscribe_instances(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(deployment_id)`` after an instance of that deployment
        reported a new status (committed). It must be cheap."""
        self._instance_listeners.append(listener)

    def instance_changed(self, deployment_id: str) -> None:
        for listener in self._instance_listeners:
            listener(deployment_id)

    # ------------------------------------------------------------ sessions

    def is_connected(self, worker_id: str) -> bool:
        return worker_id in self._sessions

    def session(self, worker_id: str) -> AgentSession:
        found = self._sessions.get(worker_id)
        if found is None:
            raise ServiceUnavailable(f"Worker '{worker_id}' has no connected agent")
        return found

    @property
    def connected(self) -> int:
        return len(self._sessions)

    def live_sessions(self) -> Iterable[AgentSession]:
        """The sessions of the online workers (a live view; do not await while iterating)."""
        return self._sessions.values()

    async def attach(self, session: AgentSession) -> None:
        old = self._sessions.get(session.worker_id)
        if old is not None:
            old.close("replaced by a new connection")
        session.last_seen = self._clock()
        self._sessions[session.worker_id] = session
        self.changed()
        self.events.publish(worker_event(session, WorkerStatus.ONLINE))
        # Registration stored "online" already; written again now that the
        # session is live, because an earlier session's detach may have stored
        # "offline" in between (detach re-checks after its own write).
        await uncancelled(self._set_status(session.worker_id, WorkerStatus.ONLINE))

    async def _set_status(self, worker_id: str, status: str, **values: Any) -> None:
        # ``offline_since`` starts the rescheduling grace (``controller.deployments``).
        since = None if status == WorkerStatus.ONLINE else utcnow()
        async with self._db.session() as db:
            await db.execute(
                update(Worker)
                .where(Worker.id == worker_id)
                .values(status=status, offline_since=since, **values)
            )
            await db.commit()

    async def detach(self, session: AgentSession) -> None:
        session.close("stream ended")
        if self._sessions.get(session.worker_id) is not session:
            return  # replaced by a newer session; the worker stays online
        del self._sessions[session.worker_id]
        self.changed()
        self.events.publish(worker_event(session, WorkerStatus.OFFLINE))
        offline = self._set_status(
            session.worker_id, WorkerStatus.OFFLINE, **self._heartbeat_values(session)
        )
        await uncancelled(offline)
        if self.is_connected(session.worker_id):
            # It reconnected while we were writing: it is online after all.
            await uncancelled(self._set_status(session.worker_id, WorkerStatus.ONLINE))
            return
        log.info("worker %s (%s) is offline", session.name, session.worker_id)

    def record_heartbeat(self, session: AgentSession, beat: agent_pb2.Heartbeat) -> None:
        session.last_seen = self._clock()
        session.last_heartbeat = utcnow()
        session.gpu_stats = {
            gpu.index: {
                "memory_used": gpu.memory_used_bytes // (1024 * 1024),
                "utilization": gpu.utilization,
                "temperature": gpu.temperature,
                "power": round(gpu.power, 1),
            }
            for gpu in beat.gpus
        }
        session.dirty = True
        now = self._clock()
        if self.events.subscribers and now - session.last_pushed >= GPU_PUSH_SECONDS:
            session.last_pushed = now
            self.events.publish(worker_event(session, "heartbeat"))

    @staticmethod
    def _heartbeat_values(session: AgentSession) -> dict[str, Any]:
        values: dict[str, Any] = {"gpu_info": session.gpu_info()}
        if session.last_heartbeat is not None:
            values["last_heartbeat"] = session.last_heartbeat
        return values

    # ------------------------------------------------------------ background

    async def mark_all_offline(self) -> None:
        """At start: every worker offline until its agent says Hello, each with
        the whole rescheduling grace from now (the controller being down is not
        the worker being lost)."""
        async with self._db.session() as db:
            await db.execute(
                update(Worker).values(status=WorkerStatus.OFFLINE, offline_since=utcnow())
            )
            await db.commit()

    async def run(self) -> None:
        """Close silent sessions and write heartbeat state, once per interval,
        until ``shut_down()``: it ends between two passes, never inside a write."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.heartbeat_interval)
                return
            self.expire_silent()
            try:
                await self.flush()
            except Exception:
                log.exception("writing heartbeat state failed; will retry")

    def shut_down(self) -> None:
        """Ends ``run()`` after its current pass."""
        self._stopping.set()

    def expire_silent(self) -> None:
        deadline = self._clock() - MISSED_HEARTBEATS * self.heartbeat_interval
        for session in list(self._sessions.values()):
            if session.last_seen < deadline:
                session.close(f"no heartbeat for {MISSED_HEARTBEATS} intervals")

    async def flush(self) -> None:
        dirty = [s for s in self._sessions.values() if s.dirty]
        if not dirty:
            return
        rows = [{"id": s.worker_id, **self._heartbeat_values(s)} for s in dirty]
        for session in dirty:
            session.dirty = False
        async with self._db.session() as db:
            await db.execute(update(Worker), rows)
            await db.commit()

    async def close_all(self) -> None:
        """Shutdown: end every session and record the workers offline now,
        while the store is still open (the streams finish after this)."""
        sessions = list(self._sessions.values())
        try:
            await self.flush()
        except Exception:
            # The last heartbeat state is lost, not the shutdown: go on.
            log.exception("writing heartbeat state at shutdown failed")
        self._sessions.clear()
        for session in sessions:
            session.close("controller shutting down")
        if sessions:
            async with self._db.session() as db:
                await db.execute(
                    update(Worker)
                    .where(Worker.id.in_([s.worker_id for s in sessions]))
                    .values(status=WorkerStatus.OFFLINE, offline_since=utcnow())
                )
                await db.commit()

    # ------------------------------------------------------------ REST requests

    async def fetch_logs(
        self, worker_id: str, instance_id: str, deployment_id: str, lines: int
    ) -> str:
        session = self.session(worker_id)
        reply = await session.request(
            lambda rid: agent_pb2.ControllerMessage(
                fetch_logs=agent_pb2.FetchLogs(
                    request_id=rid, deployment_id=deployment_id, instance_id=instance_id,
                    lines=lines,
                )
            ),
            self._request_timeout,
        )  # fmt: skip
        result = reply.logs_result
        if result.error:
            raise ServiceUnavailable(f"Worker '{session.name}' could not read logs: {result.error}")
        return result.logs

    @contextlib.asynccontextmanager
    async def follow_logs(
        self, worker_id: str, instance_id: str, deployment_id: str, tail: int
    ) -> AsyncIterator[LogFollow]:
        """Follow the instance's log on its worker while the block runs
        (``ServiceUnavailable`` when the worker is not connected)."""
        session = self.session(worker_id)
        follow = LogFollow(instance_id, deployment_id)
        session.start_follow(follow, tail)
        try:
            yield follow
        finally:
            session.stop_follow(follow)

    async def list_containers(self, worker_id: str) -> list[dict[str, Any]]:
        session = self.session(worker_id)
        reply = await session.request(
            lambda rid: agent_pb2.ControllerMessage(
                list_containers=agent_pb2.ListContainers(request_id=rid)
            ),
            self._request_timeout,
        )
        if reply.containers.error:
            raise ServiceUnavailable(
                f"Worker '{session.name}' could not list containers: {reply.containers.error}"
            )
        found = list(reply.containers.containers)
        known = await self.known_deployments(unlabelled_ids(found))
        return [
            {
                "id": c.container_id,
                "name": c.name,
                "status": c.state,
                "image": c.image,
                "deployment_id": c.deployment_id,
                "instance_id": c.instance_id or c.deployment_id,
                "port": c.host_port or None,
                "cluster_id": c.cluster_id,
                "foreign": not ours(self.cluster_id, c, known),
            }
            for c in found
        ]

    async def known_deployments(self, deployment_ids: set[str]) -> set[str]:
        """Those of ``deployment_ids`` that are deployments of this database."""
        if not deployment_ids:
            return set()
        async with self._db.session() as db:
            found = await db.scalars(
                select(Deployment.id).where(Deployment.id.in_(sorted(deployment_ids)))
            )
            return set(found)

    def deploy(self, instance: Instance, name: str, backend: str) -> None:
        """Push the instance's Deploy to its worker if its agent is connected
        (otherwise its next Hello's reconciliation deploys it)."""
        self.changed()
        if instance.worker_id is None:
            return
        session = self._sessions.get(instance.worker_id)
        if session is not None and not session.closed:
            session.send(deploy_message(instance, name, backend))

    def stop(self, worker_id: str | None, instance_id: str, deployment_id: str) -> None:
        """Push a Stop (remove) of the instance if its agent is connected;
        otherwise the next Hello's reconciliation removes the orphan. Its log
        followers end."""
        self.changed()
        for live in self._sessions.values():
            live.end_follows(instance_id, "instance stopped")
        session = self._sessions.get(worker_id) if worker_id is not None else None
        if session is not None and not session.closed:
            session.send(stop_message(instance_id, deployment_id))

    def publish_deployment(self, row: Deployment) -> None:
        self.events.publish(deployment_event(row))

    def publish_deleted(self, deployment_id: str) -> None:
        self.events.publish({"type": "deployment_deleted", "id": deployment_id})
