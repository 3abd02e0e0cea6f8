"""What the fleet sends: commands to agents and change events to dashboards."""

from __future__ import annotations

import json
from typing import Any

from controller.fleet.session import AgentSession
from controller.store import Deployment, Instance
from shared.proto.lmstack.v1 import agent_pb2
from shared.status import WorkerStatus


def deploy_message(instance: Instance, name: str, backend: str) -> agent_pb2.ControllerMessage:
    """The Deploy of ``instance`` (of the deployment ``name`` on ``backend``):
    the spec the instance runs, which during a rolling update may be older than
    its deployment's."""
    config = dict(instance.config or {})
    env = {str(k): str(v) for k, v in (config.get("env") or {}).items()}
    return agent_pb2.ControllerMessage(
        deploy=agent_pb2.Deploy(
            deployment_id=instance.deployment_id,
            instance_id=instance.id,
            name=name,
            backend=backend,
            image=str(config.get("image") or ""),
            model=instance.model,
            config_json=json.dumps(config, sort_keys=True),
            host_port=instance.port or 0,
            gpu_indices=[int(i) for i in instance.gpu_indices or []],
            env=env,
            restarts=instance.restarts,
        )
    )


def deployment_event(row: Deployment) -> dict[str, Any]:
    """What dashboards are told when a deployment changes."""
    return {
        "type": "deployment",
        "deployment": {
            "id": row.id,
            "name": row.name,
            "status": row.status,
            "status_message": row.status_message or "",
            "worker_id": row.worker_id,
            "port": row.port,
            "container_id": row.container_id,
            "replicas": row.replicas,
            "stopped": row.stopped,
        },
    }


def worker_event(session: AgentSession, change: str) -> dict[str, Any]:
    """What dashboards are told on ``change``: online, offline or heartbeat."""
    last = session.last_heartbeat
    return {
        "type": "worker",
        "change": change,
        "worker": {
            "id": session.worker_id,
            "name": session.name,
            "status": WorkerStatus.OFFLINE if change == "offline" else WorkerStatus.ONLINE,
            "gpu_info": session.gpu_info(),
            "last_heartbeat": last.strftime("%Y-%m-%dT%H:%M:%SZ") if last else None,
        },
    }


def stop_message(instance_id: str, deployment_id: str = "") -> agent_pb2.ControllerMessage:
    """Stop and remove the instance's container."""
    return agent_pb2.ControllerMessage(
        stop=agent_pb2.Stop(
            deployment_id=deployment_id or instance_id, instance_id=instance_id, remove=True
        )
    )
