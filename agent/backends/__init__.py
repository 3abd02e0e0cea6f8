"""Backend adapters: one small class per engine of the registry, looked up by name.

``get_backend("vllm")`` gives the adapter; an unknown name raises ``ConfigError`` so the
caller reports it instead of crashing. Adapters are stateless, so one instance each is
shared. The engines' facts live in ``shared.engines``; this package only turns them
into containers.
"""

from __future__ import annotations

from agent.backends.base import HF_CACHE_TARGET, Backend
from agent.backends.ollama import OllamaBackend
from agent.backends.sglang import SglangBackend
from agent.backends.vllm import VllmBackend
from shared.engines import BACKEND_NAMES, DEFAULT_BACKEND, GpuReservation, engine

_BACKENDS: dict[str, Backend] = {
    backend.name: backend for backend in (VllmBackend(), SglangBackend(), OllamaBackend())
}


def get_backend(name: str) -> Backend:
    """The adapter for ``name`` (empty means the default, vLLM); ``ConfigError`` for a
    name the registry does not know."""
    return _BACKENDS[engine(name).name]


__all__ = [
    "BACKEND_NAMES",
    "DEFAULT_BACKEND",
    "HF_CACHE_TARGET",
    "Backend",
    "GpuReservation",
    "get_backend",
]
