"""How much GPU a deployment reserves, for callers that still hold a mapping.

The rule itself is ``Engine.reservation`` in ``shared.engines`` (its docstring
states it); this module only types an untyped config first. Prefer
``shared.engines.reservation(backend, config)`` with an ``EngineConfig``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.engines import EngineConfig, GpuReservation, reservation


def gpu_reservation(backend: str, config: EngineConfig | Mapping[str, Any]) -> GpuReservation:
    """The reservation of a ``backend`` deployment; ``ConfigError`` for an unknown
    backend or an invalid config."""
    if not isinstance(config, EngineConfig):
        config = EngineConfig.from_mapping(config)
    return reservation(backend, config)


__all__ = ["GpuReservation", "gpu_reservation"]
