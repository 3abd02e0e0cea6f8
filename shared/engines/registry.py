"""The engine registry: every fact about each backend, written once.

Each ``Engine`` says which image runs it, the port it listens on inside its
container, the path that answers 200 once it can serve, which config keys become
which command-line options, and the two rules both daemons must agree on:

* **Reservation** (the scheduler places with it, the agent's adapters state it).
  Every GPU has capacity 1.0; a deployment takes ``count`` GPUs of one worker and
  ``fraction`` of each. ``count`` is ``len(gpu_ids)`` when GPUs are pinned, else
  ``gpu_count`` when given (``0`` means CPU only), else ``tensor_parallel_size``
  for engines that shard over it (vLLM, SGLang), else 1. ``fraction`` is
  ``gpu_memory_utilization`` when given, else what the engine claims by itself:
  vLLM 0.9 (its own default), SGLang 0.9 (it sizes its static pool at about
  0.8-0.9, so the safe side), Ollama 1.0 (it grows into all the memory as models
  load).
* **Served model name** (the agent starts the engine under it, the gateway sends
  it as ``model``). Ollama serves each model under its tag, the deployment's
  ``model``; vLLM and SGLang serve ``served_model_name`` when set, else the
  deployment's name. Clients always use the deployment's name.

Every backend accepts every key of ``EngineConfig``; keys an engine has no
option for (e.g. ``max_model_len`` for Ollama) are ignored. Pure: no I/O, no state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from shared.engines.config import EngineConfig
from shared.errors import ConfigError

BackendName = Literal["vllm", "sglang", "ollama"]


@dataclass(frozen=True)
class GpuReservation:
    """``count`` GPUs of one worker, ``fraction`` (0-1] of each one."""

    count: int
    fraction: float

    @property
    def cpu_only(self) -> bool:
        return self.count == 0


@dataclass(frozen=True)
class Flag:
    """Config ``key`` given to the engine as ``option value``, or as the bare
    ``option`` when it is a ``switch`` (and the key is true)."""

    key: str
    option: str
    switch: bool = False

    def arguments(self, config: EngineConfig) -> list[str]:
        """The command-line arguments for ``config`` (none when the key is unset)."""
        value = getattr(config, self.key)
        if self.switch:
            return [self.option] if value is True else []
        if value is None or value == "":
            return []
        return [self.option, str(value)]


@dataclass(frozen=True)
class Engine:
    """One inference engine's facts; the agent's adapter builds its command from them."""

    name: BackendName
    default_image: str
    # Port the engine listens on inside the container.
    engine_port: int
    # Path that answers 200 once the engine can serve.
    health_path: str
    # What the engine claims of each GPU when ``gpu_memory_utilization`` is unset.
    default_fraction: float
    # Spreads one model over ``tensor_parallel_size`` GPUs.
    tensor_parallel: bool
    # Serves the model under its own tag (Ollama) rather than a chosen name.
    served_as_model: bool = False
    # Config keys that become command-line options, in command-line order.
    flags: tuple[Flag, ...] = ()

    def arguments(self, config: EngineConfig) -> list[str]:
        """The options ``config`` sets, in the order of ``flags``."""
        return [arg for flag in self.flags for arg in flag.arguments(config)]

    def gpu_count(self, config: EngineConfig) -> int:
        """GPUs the deployment takes: pinned ids, else ``gpu_count``, else the engine's default."""
        if config.gpu_ids:
            return len(config.gpu_ids)
        if config.gpu_count is not None:  # 0 is a real answer: CPU only
            return config.gpu_count
        if self.tensor_parallel:
            return config.tensor_parallel_size or 1
        return 1

    def count_source(self, config: EngineConfig) -> str:
        """The config key that decided ``gpu_count`` (``"default"``: none did)."""
        if config.gpu_ids:
            return "gpu_ids"
        if config.gpu_count is not None:
            return "gpu_count"
        if config.tensor_parallel_size and self.tensor_parallel:
            return "tensor_parallel_size"
        return "default"

    def reservation(self, config: EngineConfig) -> GpuReservation:
        """How many GPUs and what fraction of each one the deployment takes."""
        fraction = config.gpu_memory_utilization or self.default_fraction
        return GpuReservation(count=self.gpu_count(config), fraction=fraction)

    def served_model_name(self, name: str, model: str, config: EngineConfig) -> str:
        """The name the engine serves deployment ``name`` (of ``model``) under."""
        if self.served_as_model:
            return model
        return config.served_model_name or name

    def image(self, resolved: str, config: EngineConfig) -> str:
        """The controller's ``resolved`` image, else ``config.image``, else the default."""
        return resolved or config.image or self.default_image


VLLM = Engine(
    name="vllm",
    default_image="vllm/vllm-openai:latest",
    engine_port=8000,
    health_path="/health",
    default_fraction=0.9,
    tensor_parallel=True,
    flags=(
        Flag("gpu_memory_utilization", "--gpu-memory-utilization"),
        Flag("max_model_len", "--max-model-len"),
        Flag("tensor_parallel_size", "--tensor-parallel-size"),
        Flag("dtype", "--dtype"),
        Flag("quantization", "--quantization"),
        Flag("trust_remote_code", "--trust-remote-code", switch=True),
        Flag("max_num_seqs", "--max-num-seqs"),
        Flag("enforce_eager", "--enforce-eager", switch=True),
        Flag("revision", "--revision"),
    ),
)

SGLANG = Engine(
    name="sglang",
    default_image="lmsysorg/sglang:latest",
    engine_port=30000,
    health_path="/health",
    default_fraction=0.9,
    tensor_parallel=True,
    # ``tensor_parallel_size`` is always given (``--tp``), so it is not a flag here.
    flags=(
        Flag("gpu_memory_utilization", "--mem-fraction-static"),
        Flag("max_model_len", "--context-length"),
        Flag("dtype", "--dtype"),
        Flag("quantization", "--quantization"),
        Flag("trust_remote_code", "--trust-remote-code", switch=True),
        Flag("max_num_seqs", "--max-running-requests"),
        Flag("enforce_eager", "--disable-cuda-graph", switch=True),
        Flag("revision", "--revision"),
    ),
)

OLLAMA = Engine(
    name="ollama",
    default_image="ollama/ollama:latest",
    engine_port=11434,
    health_path="/api/version",
    default_fraction=1.0,
    tensor_parallel=False,
    served_as_model=True,
)

DEFAULT_BACKEND: BackendName = "vllm"

ENGINES: Mapping[str, Engine] = MappingProxyType(
    {engine.name: engine for engine in (VLLM, SGLANG, OLLAMA)}
)

BACKEND_NAMES: tuple[str, ...] = tuple(ENGINES)


def engine(name: str) -> Engine:
    """The engine called ``name`` (empty means the default, vLLM).

    Raises ``ConfigError`` for a name no engine has."""
    try:
        return ENGINES[name or DEFAULT_BACKEND]
    except KeyError:
        known = ", ".join(BACKEND_NAMES)
        raise ConfigError(f"unknown backend {name!r} (known: {known})") from None


def reservation(backend: str, config: EngineConfig) -> GpuReservation:
    """The reservation of a ``backend`` deployment (``ConfigError`` if unknown)."""
    return engine(backend).reservation(config)


def served_model_name(backend: str, name: str, model: str, config: EngineConfig) -> str:
    """The name a ``backend`` deployment is served under (``ConfigError`` if unknown)."""
    return engine(backend).served_model_name(name, model, config)
