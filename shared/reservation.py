"""How much GPU a deployment reserves: the one rule both daemons use.

The controller's scheduler places deployments with it and the agent's backend
adapters state it (``Backend.gpu_reservation``), so the two can never disagree.

Capacity model: every GPU has capacity 1.0. A deployment takes ``count`` GPUs of
one worker and ``fraction`` of each of them:

* ``count`` is ``len(gpu_ids)`` when GPUs are pinned, else ``gpu_count`` when
  given (``0`` means CPU only), else ``tensor_parallel_size`` for engines that
  shard over it (vLLM, SGLang), else 1.
* ``fraction`` is ``gpu_memory_utilization`` when given, else what the engine
  claims by itself: vLLM 0.9 (its own default), SGLang 0.9 (it sizes its static
  pool at about 0.8-0.9, so the safe side), Ollama 1.0 (it grows into all the
  memory as models load).

The rule is pure: no I/O, no state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import ConfigError

# What each engine claims of a GPU when ``gpu_memory_utilization`` is unset.
DEFAULT_FRACTION: Mapping[str, float] = {"vllm": 0.9, "sglang": 0.9, "ollama": 1.0}

# Engines that spread one model over ``tensor_parallel_size`` GPUs.
TENSOR_PARALLEL_BACKENDS = frozenset({"vllm", "sglang"})


@dataclass(frozen=True)
class GpuReservation:
    """``count`` GPUs of one worker, ``fraction`` (0-1] of each one."""

    count: int
    fraction: float

    @property
    def cpu_only(self) -> bool:
        return self.count == 0


def gpu_count(config: Mapping[str, Any], default: int = 1) -> int:
    """GPUs a deployment needs: ``gpu_ids`` if pinned, else ``gpu_count``, else ``default``."""
    ids = config.get("gpu_ids")
    if ids:
        return len(ids)
    count = config.get("gpu_count")
    # 0 is a real answer (CPU only), so only a missing value falls back.
    return default if count is None else int(count)


def default_gpu_count(backend: str, config: Mapping[str, Any]) -> int:
    """GPUs the engine uses when neither ``gpu_ids`` nor ``gpu_count`` says."""
    if backend in TENSOR_PARALLEL_BACKENDS:
        return int(config.get("tensor_parallel_size") or 1)
    return 1


def gpu_reservation(backend: str, config: Mapping[str, Any]) -> GpuReservation:
    """The reservation of a ``backend`` deployment with this (validated) config."""
    try:
        default_fraction = DEFAULT_FRACTION[backend]
    except KeyError:
        raise ConfigError(f"unknown backend {backend!r}") from None
    fraction = float(config.get("gpu_memory_utilization") or default_fraction)
    count = gpu_count(config, default=default_gpu_count(backend, config))
    return GpuReservation(count=count, fraction=fraction)
