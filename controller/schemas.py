"""Request and response bodies of the REST API (pydantic), the single source of
both validation and the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from controller.limits.periods import BudgetPeriod
from controller.store.timeutil import iso_z
from shared import status
from shared.engines import BackendName, EngineConfig

Timestamp = Annotated[
    datetime, PlainSerializer(iso_z, return_type=str, when_used="json-unless-none")
]
Backend: TypeAlias = BackendName
# Status fields take the enums of ``shared.status``. To pydantic they are a Literal
# of the members: the OpenAPI document lists the values inline (an Enum would add a
# component) and strict bodies accept the plain strings.
if TYPE_CHECKING:
    DeploymentStatus: TypeAlias = status.DeploymentStatus
    WorkerStatus: TypeAlias = status.WorkerStatus
else:
    DeploymentStatus = Literal[tuple(status.DeploymentStatus)]
    WorkerStatus = Literal[tuple(status.WorkerStatus)]
DEPLOYMENT_STATUSES: tuple[str, ...] = tuple(status.DeploymentStatus)

# Deployment names become container names (``lmstack-<name>``) and model ids.
DeploymentName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", max_length=63)
]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=72)]


class Strict(BaseModel):
    """A request body: unknown fields are rejected and JSON types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query parameters: strings coerced to the declared types."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- errors


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: str
    status_code: int
    errors: list[FieldError] | None = None


# ---------------------------------------------------------------- auth


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class HealthResponse(BaseModel):
    status: Literal["healthy"] = "healthy"


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


# ---------------------------------------------------------------- limits

# Bounds of the columns: rpm and max_parallel are INTEGER, tpm and budgets BIGINT.
_INT_MAX = 2**31 - 1
_BIGINT_MAX = 2**63 - 1


class Limits(Strict):
    """What a user or an API key is held to; null: unlimited. A key's calls are
    held to both the key's and its user's limits (the stricter wins)."""

    rpm: int | None = Field(default=None, ge=1, le=_INT_MAX, description="Requests per minute")
    tpm: int | None = Field(
        default=None, ge=1, le=_BIGINT_MAX, description="Prompt + completion tokens per minute"
    )
    max_parallel: int | None = Field(
        default=None, ge=1, le=_INT_MAX, description="Requests in flight at once"
    )
    token_budget: int | None = Field(
        default=None, ge=1, le=_BIGINT_MAX, description="Prompt + completion tokens per period"
    )
    budget_period: BudgetPeriod | None = Field(
        default=None,
        validate_default=True,
        description="UTC day or month; month when token_budget is set and this is not",
    )

    @field_validator("budget_period")
    @classmethod
    def _period_of_a_budget(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "token_budget" not in info.data:
            return value  # token_budget itself is invalid, and reported
        has_budget = info.data["token_budget"] is not None
        if value is not None and not has_budget:
            raise ValueError("budget_period needs token_budget")
        return "month" if value is None and has_budget else value


class Budget(BaseModel):
    """A token budget in its current UTC period."""

    period: BudgetPeriod
    used: int = Field(description="Prompt + completion tokens used in this period")
    remaining: int = Field(description="Tokens left in this period (0 when exhausted)")
    resets_at: Timestamp = Field(description="Start of the next period (UTC)")


# ---------------------------------------------------------------- api keys


class ApiKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=128)
    # Deployment names the key may call through the gateway; omitted or null: all.
    allowed_deployments: list[DeploymentName] | None = Field(default=None, max_length=1000)
    limits: Limits | None = None


class ApiKeyUpdate(Strict):
    """Given fields replace the key's; ``limits`` replaces all five (null or {}: none)."""

    name: str | None = Field(default=None, min_length=1, max_length=128)
    allowed_deployments: list[DeploymentName] | None = Field(default=None, max_length=1000)
    limits: Limits | None = None


class ApiKeyCreated(BaseModel):
    id: str
    name: str
    key: str
    prefix: str
    hint: str
    allowed_deployments: list[str] | None
    limits: Limits
    budget: Budget | None
    created_at: Timestamp


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    hint: str
    user_id: str
    allowed_deployments: list[str] | None
    limits: Limits
    budget: Budget | None = Field(description="null without a token budget")
    created_at: Timestamp
    last_used: Timestamp | None


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]


# ---------------------------------------------------------------- users


class UserCreate(Strict):
    username: Username
    email: Email | None = None
    password: Password
    is_admin: bool = False
    limits: Limits | None = None


class UserUpdate(Strict):
    email: Email | None = None
    password: Password | None = None
    is_admin: bool | None = None
    limits: Limits | None = Field(
        default=None, description="Replaces the user's limits (null or {}: none)"
    )


class UserOut(BaseModel):
    id: str
    username: str
    email: str | None
    is_admin: bool
    limits: Limits
    budget: Budget | None = Field(description="null without a token budget")
    created_at: Timestamp


class UserList(BaseModel):
    items: list[UserOut]


# ---------------------------------------------------------------- gateway (documented only)


class OpenAIRequest(BaseModel):
    """An OpenAI request body; fields other than these pass through to the engine."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="The deployment name")
    stream: bool | None = None


class OpenAIResponse(BaseModel):
    """The engine's OpenAI-compatible answer, passed through (SSE when streaming)."""

    model_config = ConfigDict(extra="allow")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail
