"""Deployment and worker bodies of the REST API."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    Field,
    StringConstraints,
    model_validator,
)

from controller.schemas._common import (
    Backend,
    DeploymentName,
    DeploymentStatus,
    Query,
    Strict,
    Timestamp,
    WorkerStatus,
)
from shared.engines import EngineConfig

# ---------------------------------------------------------------- deployments


class DeploymentConfig(EngineConfig):
    """Engine settings. Unknown keys are rejected by name."""

    # ``EngineConfig`` (shared with the agent) under the name the REST API documents.


MAX_REPLICAS = 1000
Replicas = Annotated[int, Field(ge=0, le=MAX_REPLICAS)]


class DeploymentCreate(Strict):
    name: DeploymentName
    backend: Backend = "vllm"
    model: str = Field(min_length=1, max_length=512)
    worker_id: str | None = Field(
        default=None,
        description="Place every instance on this worker; omitted: the scheduler places "
        "them, spread over workers",
    )
    replicas: Replicas = Field(default=1, description="Instances to run (0 allowed)")
    config: DeploymentConfig = Field(default_factory=DeploymentConfig)


class DeploymentPatch(Strict):
    """A change: ``replicas`` scales; ``model``, ``image`` or ``config`` (the whole
    new config) rolls the instances one at a time, unless only serving keys
    (admission, restart policy, draining, rescheduling, selector) changed."""

    replicas: Replicas | None = None
    model: str | None = Field(default=None, min_length=1, max_length=512)
    image: Annotated[str, StringConstraints(pattern=r"^[^\s]{1,512}$")] | None = Field(
        default=None, description="The engine image (config.image)"
    )
    config: DeploymentConfig | None = Field(
        default=None, description="The whole new config (replaces the current one)"
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("give at least one of replicas, model, image, config")
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self


class InstanceOut(BaseModel):
    id: str
    worker_id: str | None
    worker_name: str | None = None
    gpu_indices: list[int]
    port: int | None
    container_id: str | None
    status: DeploymentStatus
    status_message: str
    restarts: int
    last_exit_code: int | None
    started_at: Timestamp | None
    spec_version: int
    draining: bool = Field(description="Being stopped: it gets no new requests")
    created_at: Timestamp


class DeploymentCreated(BaseModel):
    id: str
    name: str
    status: DeploymentStatus


class DeploymentOut(BaseModel):
    id: str
    name: str
    backend: Backend
    model: str
    status: DeploymentStatus
    status_message: str
    worker_id: str | None
    container_id: str | None
    port: int | None
    gpu_indices: list[int]
    created_at: Timestamp
    updated_at: Timestamp
    config: dict[str, Any]
    replicas: int = Field(description="Desired instances")
    ready_replicas: int = Field(default=0, description="Instances running and not draining")
    stopped: bool = Field(default=False, description="Stopped (POST .../stop); replicas kept")
    spec_version: int = 1
    rollout_error: str = Field(default="", description="Why the last rolling update halted")
    instances: list[InstanceOut] = []


class DeploymentList(BaseModel):
    items: list[DeploymentOut]
    total: int


class DeploymentListQuery(Query):
    skip: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=1000)
    status: DeploymentStatus | None = None
    worker_id: str | None = None


class LogsQuery(Query):
    lines: int = Field(default=100, ge=1, le=10000)


class LogsResponse(BaseModel):
    logs: str


# ---------------------------------------------------------------- workers


class GpuDeviceOut(BaseModel):
    index: int
    uuid: str
    name: str
    memory: int = Field(description="Total memory in MiB")
    driver_version: str = ""
    cuda_version: str = ""
    memory_used: int | None = Field(default=None, description="MiB, from the last heartbeat")
    utilization: int | None = None
    temperature: int | None = None
    power: float | None = None
    reserved: float = Field(
        default=0.0, description="Fraction of this GPU reserved by deployments (capacity 1.0)"
    )
    deployments: list[str] = Field(
        default_factory=list, description="Ids of the deployments holding a reservation on it"
    )


class GpuInfo(BaseModel):
    count: int = 0
    simulated: bool = False
    devices: list[GpuDeviceOut] = []


class EnginePorts(BaseModel):
    """The host ports the worker's engines are given, both ends inclusive."""

    min: int
    max: int
    source: Literal["agent", "controller"] = Field(
        description="agent: the range its agent declared (--engine-port-range); "
        "controller: none declared, the controller's LMSTACK_ENGINE_PORT_MIN-_MAX"
    )


class WorkerOut(BaseModel):
    id: str
    name: str
    status: WorkerStatus
    advertise_address: str
    agent_version: str
    runtime_error: str
    gpu_info: GpuInfo
    gpu_free: float = Field(
        default=0.0, description="Free GPU capacity: the sum of each GPU's unreserved fraction"
    )
    free_gpus: int = Field(default=0, description="GPUs with nothing reserved")
    engine_ports: EnginePorts
    labels: dict[str, str] = Field(
        default_factory=dict, description="Its agent's labels (--label key=value)"
    )
    last_heartbeat: Timestamp | None
    created_at: Timestamp


class WorkerList(BaseModel):
    items: list[WorkerOut]


class WorkerDetail(WorkerOut):
    system_info: dict[str, Any]
    deployments: list[DeploymentOut]


class ContainerOut(BaseModel):
    id: str
    name: str
    status: str
    image: str
    deployment_id: str
    instance_id: str = ""
    port: int | None
    cluster_id: str = Field(
        default="",
        description="The cluster of the controller that had it made; empty for "
        "containers made before clusters were labelled",
    )
    foreign: bool = Field(
        default=False,
        description="Not this controller's cluster: it never stops or removes it",
    )


class ContainerList(BaseModel):
    containers: list[ContainerOut]
