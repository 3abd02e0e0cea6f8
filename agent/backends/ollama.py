"""Ollama: ``ollama/ollama`` (entrypoint ``ollama``), run as ``ollama serve``.

Limitation: Ollama does not take a model on its command line; the container starts empty
and the model must be pulled into it afterwards (``ollama pull <model>`` in the container,
or ``POST /api/pull``), which this backend does not do. Readiness is the server answering
``/api/version``. Ollama allocates GPU memory as models load and may use all of it, so a
deployment reserves whole GPUs (fraction 1.0) unless ``gpu_memory_utilization`` says
otherwise. The engine-tuning keys (max_model_len, dtype, served_model_name, ...) have no
``ollama serve`` flag and are ignored; ``extra_args`` are appended to ``serve``.
"""

from __future__ import annotations

from agent.backends.base import Backend, extra_args
from agent.types import DeploySpec


class OllamaBackend(Backend):
    name = "ollama"
    default_image = "ollama/ollama:latest"
    engine_port = 11434
    health_path = "/api/version"

    def command(self, spec: DeploySpec) -> list[str]:
        return ["serve", *extra_args(spec.config)]

    def env(self, spec: DeploySpec) -> dict[str, str]:
        # Listen on every interface of the container, not only its loopback.
        return {"OLLAMA_HOST": f"0.0.0.0:{self.engine_port}"}
