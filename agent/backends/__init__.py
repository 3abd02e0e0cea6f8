"""Backend adapters: one small class per inference engine, looked up by name.

``get_backend("vllm")`` gives the adapter; an unknown name raises ``ConfigError`` so the
caller reports it instead of crashing. Adapters are stateless, so one instance each is
shared.
"""

from __future__ import annotations

from agent.backends.base import HF_CACHE_TARGET, Backend
from agent.backends.ollama import OllamaBackend
from agent.backends.sglang import SglangBackend
from agent.backends.vllm import VllmBackend
from shared.errors import ConfigError
from shared.reservation import GpuReservation

DEFAULT_BACKEND = "vllm"

_BACKENDS: dict[str, Backend] = {
    backend.name: backend for backend in (VllmBackend(), SglangBackend(), OllamaBackend())
}

BACKEND_NAMES: tuple[str, ...] = tuple(_BACKENDS)


def get_backend(name: str) -> Backend:
    """The adapter for ``name`` (empty means the default, vLLM)."""
    try:
        return _BACKENDS[name or DEFAULT_BACKEND]
    except KeyError:
        known = ", ".join(BACKEND_NAMES)
        raise ConfigError(f"unknown backend {name!r} (known: {known})") from None


__all__ = [
    "BACKEND_NAMES",
    "DEFAULT_BACKEND",
    "HF_CACHE_TARGET",
    "Backend",
    "GpuReservation",
    "get_backend",
]
