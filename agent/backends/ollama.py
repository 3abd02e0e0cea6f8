"""Ollama: ``ollama/ollama`` (entrypoint ``ollama``), run as ``ollama serve``.

Ollama does not take a model on its command line: the container starts empty, and once
the server answers ``/api/version`` the agent pulls the deployment's ``model`` (an Ollama
tag such as ``qwen2.5:0.5b``) with ``POST /api/pull``; the deployment is running when the
pull has finished. Models are stored in the host's model cache (``OLLAMA_MODELS`` under
the mounted Hugging Face cache directory, in ``ollama/``), so a replaced or restarted
container does not download them again. The gateway sends the tag as ``model`` to
Ollama's OpenAI-compatible API.

Ollama allocates GPU memory as models load and may use all of it, so a
deployment reserves whole GPUs (fraction 1.0) unless ``gpu_memory_utilization`` says
otherwise. The engine-tuning keys (max_model_len, dtype, served_model_name, ...) have no
``ollama serve`` flag and are ignored; ``extra_args`` are appended to ``serve``.
"""

from __future__ import annotations

from typing import Any

from agent.backends.base import HF_CACHE_TARGET, Backend, extra_args
from agent.types import DeploySpec
from shared.engines import OLLAMA


class OllamaBackend(Backend):
    engine = OLLAMA

    def command(self, spec: DeploySpec) -> list[str]:
        return ["serve", *extra_args(spec.config)]

    def env(self, spec: DeploySpec) -> dict[str, str]:
        # Listen on every interface of the container, not only its loopback.
        return {
            "OLLAMA_HOST": f"0.0.0.0:{self.engine_port}",
            # Pulled models outlive the container: they go to the mounted cache.
            "OLLAMA_MODELS": f"{HF_CACHE_TARGET}/ollama",
        }

    def model_pull(self, spec: DeploySpec) -> tuple[str, dict[str, Any]] | None:
        return ("/api/pull", {"model": spec.model, "stream": False})
