"""``EngineConfig``: a deployment's engine settings, validated once and typed after.

The controller validates a request's ``config`` into this model (its REST schema,
``controller.schemas.DeploymentConfig``, is a subclass that only names it for the
OpenAPI document); from then on the typed object travels: to the scheduler, into
the database and onto the wire as ``to_mapping()``, and back with
``from_mapping()``, which the agent uses to rebuild it from ``Deploy.config_json``.

Three keys are the gateway's, not the engine's, and no engine has a flag for
them (``registry.Engine.flags``), so they never reach a command line:
``max_parallel`` (requests forwarded at once), ``max_queued`` (requests waiting
beyond those; default ``4 * max_parallel``) and ``queue_timeout`` (seconds one
waits; default 30). The last two require the first. See
``controller.gateway.admission``.

The serving keys (``SERVING_KEYS``: admission, ``restart_policy``,
``max_restarts``, ``drain_timeout``, ``reschedule_after``, ``worker_selector``)
shape how the engine is served, not its container: a change to them alone is
applied in place, without a rolling update, and ``container_mapping`` (what the
agent's spec hash covers) leaves them out.

Wire and storage format: a JSON object holding only the keys that are set, so a
config round-trips unchanged (``from_mapping(c.to_mapping()) == c``). Keys this
version does not know are dropped by ``from_mapping``: the agent ignored them
before it had types, and a newer controller may send some.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from shared.errors import ConfigError

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Dtype = Literal["auto", "half", "float16", "bfloat16", "float", "float32"]
RestartPolicy = Literal["on-failure", "always", "never"]
# Worker labels (``lmstack-agent --label key=value``) and selectors on them.
LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")]
LabelValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/-]{0,63}$")]

# Keys that change how LMStack serves the engine, not the engine's container:
# changing them changes no container (``container_mapping``) and rolls nothing.
SERVING_KEYS: frozenset[str] = frozenset(
    {
        "max_parallel",
        "max_queued",
        "queue_timeout",
        "restart_policy",
        "max_restarts",
        "drain_timeout",
        "reschedule_after",
        "worker_selector",
    }
)
DEFAULT_DRAIN_TIMEOUT = 30.0
DEFAULT_RESCHEDULE_AFTER = 300


class EngineConfig(BaseModel):
    """Engine settings of one deployment. Unknown keys are rejected by name."""

    # Strict: a JSON body's types are not coerced. Frozen: validated once, then only read.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    max_model_len: int | None = Field(default=None, gt=0)
    tensor_parallel_size: int | None = Field(default=None, ge=1, le=64)
    dtype: Dtype | None = None
    quantization: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,32}$")] | None = None
    served_model_name: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    max_num_seqs: int | None = Field(default=None, ge=1)
    trust_remote_code: bool | None = None
    enforce_eager: bool | None = None
    revision: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    image: Annotated[str, StringConstraints(pattern=r"^[^\s]{1,512}$")] | None = None
    env: dict[EnvName, str] | None = None
    extra_args: list[Annotated[str, StringConstraints(max_length=4096)]] | None = None
    # Seconds the engine gets to answer its health check after the container starts.
    startup_timeout: int | None = Field(default=None, ge=1, le=86400)
    # Placement (declared after tensor_parallel_size: their validators read it).
    gpu_count: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="GPUs to reserve; 0 runs CPU-only. Default: tensor_parallel_size "
        "(vLLM, SGLang) or 1 (Ollama). A multiple of tensor_parallel_size.",
    )
    gpu_ids: list[Annotated[int, Field(ge=0, le=1023)]] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Pin these GPU indices (unique; as many as gpu_count when both "
        "are given; a multiple of tensor_parallel_size).",
    )

    # Gateway admission (``controller.gateway.admission``); no engine flag reads them.
    max_parallel: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Requests forwarded to the engine at once; further ones wait in a "
        "bounded queue (max_queued, queue_timeout), then get 429. Unset: no limit.",
    )
    max_queued: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Requests that may wait for a slot (needs max_parallel; default "
        "4 x max_parallel; 0: refuse at once when all slots are busy).",
    )
    queue_timeout: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="Seconds a request may wait for a slot before it gets 429 (needs "
        "max_parallel; default 30).",
    )

    # Serving (DESIGN.md section 7): the agent's restart policy, the controller's
    # draining, rescheduling and placement filter. No engine flag reads them.
    restart_policy: RestartPolicy | None = Field(
        default=None,
        description="When the agent restarts an engine that exited or failed its "
        "health check 3 times: on-failure (default: a non-zero exit or a failed "
        "health check), always, never. Back-off 10 s doubling to 5 min, reset after "
        "10 min healthy.",
    )
    max_restarts: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Restarts after which an instance stays in error. Unset: unlimited.",
    )
    drain_timeout: float | None = Field(
        default=None,
        ge=0,
        le=86400,
        description="Seconds an instance being stopped (scale down, update, stop, "
        "delete) keeps serving its in-flight requests; it gets no new ones. Default 30.",
    )
    reschedule_after: int | None = Field(
        default=None,
        ge=0,
        le=30 * 86400,
        description="Seconds a worker may be offline before its instances are placed "
        "elsewhere; 0: never. Default 300.",
    )
    worker_selector: dict[LabelKey, LabelValue] | None = Field(
        default=None,
        max_length=32,
        description="Worker labels an instance's worker must carry (lmstack-agent "
        '--label key=value), e.g. {"gpu": "a100"}.',
    )

    @field_validator("max_queued", "queue_timeout")
    @classmethod
    def _needs_max_parallel(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("max_parallel") is None:
            raise ValueError("only applies with max_parallel")
        return value

    @field_validator("gpu_count")
    @classmethod
    def _gpu_count_fits_tp(cls, value: int | None, info: ValidationInfo) -> int | None:
        tp = info.data.get("tensor_parallel_size")
        if value is None or not tp:
            return value
        if value == 0 and tp > 1:
            raise ValueError(f"0 (CPU only) cannot run tensor_parallel_size {tp}")
        if value % tp:
            raise ValueError(f"must be a multiple of tensor_parallel_size ({tp})")
        return value

    @field_validator("gpu_ids")
    @classmethod
    def _gpu_ids_consistent(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is None:
            return value
        if len(set(value)) != len(value):
            raise ValueError("GPU indices must be unique")
        count = info.data.get("gpu_count")
        if count is not None and count != len(value):
            raise ValueError(f"{len(value)} indices given but gpu_count is {count}")
        tp = info.data.get("tensor_parallel_size")
        if tp and len(value) % tp:
            raise ValueError(f"{len(value)} GPUs is not a multiple of tensor_parallel_size ({tp})")
        return value

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> Self:
        """The config stored or sent as ``mapping`` (``None``: all defaults).

        Raises ``ConfigError`` when a known key has an invalid value."""
        known = {key: value for key, value in (mapping or {}).items() if key in cls.model_fields}
        try:
            return cls.model_validate(known)
        except ValidationError as exc:
            raise ConfigError(f"invalid engine config: {exc}") from exc

    def to_mapping(self) -> dict[str, Any]:
        """The JSON object to store and send: only the keys that are set."""
        return self.model_dump(mode="json", exclude_none=True)

    def container_mapping(self) -> dict[str, Any]:
        """``to_mapping`` without the serving keys (``SERVING_KEYS``): what the
        engine's container is made from. Equal ones mean the same container."""
        return {k: v for k, v in self.to_mapping().items() if k not in SERVING_KEYS}

    @property
    def effective_restart_policy(self) -> RestartPolicy:
        return self.restart_policy or "on-failure"

    @property
    def effective_drain_timeout(self) -> float:
        return DEFAULT_DRAIN_TIMEOUT if self.drain_timeout is None else self.drain_timeout

    @property
    def effective_reschedule_after(self) -> int:
        return DEFAULT_RESCHEDULE_AFTER if self.reschedule_after is None else self.reschedule_after


# Every backend accepts every key; one it has no use for is ignored (see ``Engine``).
CONFIG_KEYS: frozenset[str] = frozenset(EngineConfig.model_fields)
