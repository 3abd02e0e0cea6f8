"""What one deployment asks of a worker, derived from its backend and config.

The GPU count and per-GPU fraction come from the engine registry's reservation
rule (``shared.engines``, which the agent's backend adapters use too); this
module adds what placement needs besides: the pinned indices and which config
key decided the count, so a rejection can say "tensor_parallel_size 4 > 2 GPUs"
rather than a bare number. Pure: no I/O, no state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.engines import EngineConfig, engine

# Reservations are floats (0.45 + 0.45 ...); this absorbs their rounding so
# 0.1 taken ten times still fits one GPU.
EPSILON = 1e-9


@dataclass(frozen=True)
class Demand:
    """``count`` GPUs of one worker with ``fraction`` free on each, or CPU only."""

    count: int
    fraction: float
    # Exact GPU indices the user pinned (``config.gpu_ids``), else ``None``.
    pinned: tuple[int, ...] | None = None
    # The config key that set ``count``, for explanations.
    count_source: str = "default"

    @property
    def cpu_only(self) -> bool:
        return self.count == 0

    @property
    def min_worker_free(self) -> float:
        """A worker with less free capacity in total cannot take this demand
        (a little under the exact sum, so float rounding never excludes a fit)."""
        return self.count * self.fraction - 1e-5 if self.count else -math.inf

    def describe(self) -> str:
        """``needs 2 GPUs with 0.90 free each`` / ``CPU only``."""
        if self.cpu_only:
            return "CPU only"
        gpus = "1 GPU" if self.count == 1 else f"{self.count} GPUs"
        each = "" if self.count == 1 else " each"
        return f"needs {gpus} with {self.fraction:.2f} free{each}"


def demand_for(backend: str, config: EngineConfig) -> Demand:
    """The demand of a ``backend`` deployment with this validated config
    (``ConfigError`` for an unknown backend)."""
    facts = engine(backend)
    reservation = facts.reservation(config)
    return Demand(
        count=reservation.count,
        fraction=reservation.fraction,
        pinned=tuple(config.gpu_ids) if config.gpu_ids else None,
        count_source=facts.count_source(config),
    )
