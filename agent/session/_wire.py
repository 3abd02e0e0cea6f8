"""Translation between the wire (``agent_pb2``) and the agent's dataclasses.

Pure functions, no I/O: a gRPC status becomes a refusal or a lost connection, a
``Deploy`` becomes a ``DeploySpec``, and the agent's records become messages.
A command's instance is its ``instance_id``, or its ``deployment_id`` when that is
empty (a controller of protocol 1: the deployment was its one instance).
"""

from __future__ import annotations

import dataclasses
import json

import grpc
import grpc.aio

from agent.gpu import GpuDevice, GpuStats
from agent.session._errors import AuthenticationFailed, ConnectionLost, ProtocolVersionRejected
from agent.types import ContainerState, DeploySpec, StatusUpdate
from shared import PROTOCOL_VERSION
from shared.engines import EngineConfig
from shared.errors import ProtocolError
from shared.proto.lmstack.v1 import agent_pb2


def connection_error(error: grpc.aio.AioRpcError, controller: str) -> Exception:
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
    return ConnectionLost(f"{code.name}: {details}")


def command_instance(
    command: agent_pb2.Deploy | agent_pb2.Stop | agent_pb2.FetchLogs | agent_pb2.FollowLogs,
) -> str:
    """The instance a command is about."""
    return command.instance_id or command.deployment_id


def of_worker(
    containers: list[ContainerState], worker_id: str, cluster_id: str = ""
) -> list[ContainerState]:
    """The containers this worker's agent made, the unlabelled ones made before
    containers were labelled with a worker, and (when ``cluster_id`` is known)
    those of other clusters, which the controller lists as foreign and leaves
    alone. Another agent of the same cluster on this host (and Docker engine)
    sees its own, never these."""
    return [
        c
        for c in containers
        if c.worker_id in ("", worker_id)
        or (cluster_id and c.cluster_id and c.cluster_id != cluster_id)
    ]


def deploy_spec(command: agent_pb2.Deploy, cluster_id: str = "", worker_id: str = "") -> DeploySpec:
    """The command as a spec, for the cluster ``cluster_id`` and the worker
    ``worker_id`` (the Welcome's)."""
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
        config=EngineConfig.from_mapping(config),
        host_port=command.host_port,
        gpu_indices=tuple(command.gpu_indices),
        env=dict(command.env),
        cluster_id=cluster_id,
        instance_id=command_instance(command),
        restarts=command.restarts,
        worker_id=worker_id,
    )


def deployment_status(update: StatusUpdate) -> agent_pb2.DeploymentStatus:
    return agent_pb2.DeploymentStatus(
        deployment_id=update.deployment_id or update.instance_id,
        instance_id=update.instance_id,
        status=update.status,
        message=update.message,
        container_id=update.container_id,
        port=update.port,
        has_exit_code=update.exit_code is not None,
        exit_code=update.exit_code or 0,
        restarts=update.restarts,
        started_at=update.started_at,
        final=update.final,
    )


# The dataclasses mirror their messages field for field.
def container_info(container: ContainerState) -> agent_pb2.ContainerInfo:
    """The container as sent; without its worker label (what an agent sends is
    of its own worker, see ``of_worker``)."""
    fields = dataclasses.asdict(container)
    del fields["worker_id"]
    return agent_pb2.ContainerInfo(**fields)


def gpu_device(device: GpuDevice) -> agent_pb2.GpuDevice:
    return agent_pb2.GpuDevice(**dataclasses.asdict(device))


def gpu_stats(stats: GpuStats) -> agent_pb2.GpuStats:
    return agent_pb2.GpuStats(**dataclasses.asdict(stats))


def heartbeat_interval(welcome: agent_pb2.Welcome, fallback: float) -> float:
    """The controller's interval (milliseconds preferred), else our own setting."""
    if welcome.heartbeat_interval_ms:
        return welcome.heartbeat_interval_ms / 1000
    return float(welcome.heartbeat_interval_seconds or fallback)
