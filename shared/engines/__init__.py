"""The engine registry and the typed engine config, read by every layer.

``engine("vllm")`` gives one backend's facts (``Engine``: image, port, health
path, options, reservation and served-name rules); ``ENGINES`` holds them all.
``EngineConfig`` is a deployment's validated engine settings, stored and sent as
``to_mapping()`` and rebuilt with ``EngineConfig.from_mapping()``.
"""

from __future__ import annotations

from shared.engines.config import CONFIG_KEYS, SERVING_KEYS, EngineConfig, RestartPolicy
from shared.engines.registry import (
    BACKEND_NAMES,
    DEFAULT_BACKEND,
    ENGINES,
    OLLAMA,
    SGLANG,
    VLLM,
    BackendName,
    Engine,
    GpuReservation,
    engine,
    reservation,
    served_model_name,
)

__all__ = [
    "BACKEND_NAMES",
    "CONFIG_KEYS",
    "DEFAULT_BACKEND",
    "ENGINES",
    "OLLAMA",
    "SERVING_KEYS",
    "SGLANG",
    "VLLM",
    "BackendName",
    "Engine",
    "EngineConfig",
    "GpuReservation",
    "RestartPolicy",
    "engine",
    "reservation",
    "served_model_name",
]
