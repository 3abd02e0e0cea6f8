"""The backend interface: how one inference engine is run in a container.

A backend is pure (no Docker, no I/O): from a ``DeploySpec`` it says which image to run,
the command line, the request that fetches the model when the engine starts without it,
and the environment the engine needs. Every fact it states about its engine (image,
port, health path, which config key becomes which option, the reservation and
served-name rules) comes from the engine registry, ``shared.engines``, which the
controller's schema and scheduler read too. The runtime (``agent.runtime``) turns a
backend's answers into a container.

The config arrives typed (``EngineConfig``, validated by the controller and rebuilt
by the session); keys an engine has no option for are ignored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from agent.types import DeploySpec
from shared.engines import Engine, EngineConfig, GpuReservation

# Where the host's Hugging Face cache is mounted in engine containers.
HF_CACHE_TARGET = "/root/.cache/huggingface"


class Backend(ABC):
    """One inference engine. Subclasses name their ``engine`` and build the command."""

    engine: ClassVar[Engine]

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def default_image(self) -> str:
        return self.engine.default_image

    @property
    def engine_port(self) -> int:
        """Port the engine listens on inside the container."""
        return self.engine.engine_port

    @property
    def health_path(self) -> str:
        """Path that answers 200 once the engine can serve."""
        return self.engine.health_path

    def image(self, spec: DeploySpec) -> str:
        """The controller's resolved image, else ``config.image``, else the default."""
        return self.engine.image(spec.image, spec.config)

    def entrypoint(self, spec: DeploySpec) -> list[str] | None:
        """Override the image's entrypoint; ``None`` keeps it."""
        return None

    @abstractmethod
    def command(self, spec: DeploySpec) -> list[str]:
        """The container command (arguments to the image's entrypoint)."""

    def model_pull(self, spec: DeploySpec) -> tuple[str, dict[str, Any]] | None:
        """A POST (path, JSON body) the engine needs once it answers and before it can
        serve, e.g. fetching the model into an engine that starts empty; ``None``: none."""
        return None

    def env(self, spec: DeploySpec) -> dict[str, str]:
        """Environment the engine itself needs (the runtime adds HF_TOKEN and user env)."""
        return {}

    def gpu_reservation(self, config: EngineConfig) -> GpuReservation:
        """How many GPUs and what fraction of each one the deployment takes (the
        registry's rule, the one the controller's scheduler applies)."""
        return self.engine.reservation(config)

    def served_model_name(self, spec: DeploySpec) -> str:
        """The name the engine serves the model under (the registry's rule, the one
        the controller's gateway applies)."""
        return self.engine.served_model_name(spec.name, spec.model, spec.config)

    def serving_args(self, spec: DeploySpec) -> list[str]:
        """The served name, every interface and the engine port, as the OpenAI servers
        of vLLM and SGLang both spell them."""
        return [
            "--served-model-name",
            self.served_model_name(spec),
            "--host",
            "0.0.0.0",
            "--port",
            str(self.engine_port),
        ]

    def config_args(self, spec: DeploySpec) -> list[str]:
        """The options the registry maps the config's keys to, then ``extra_args``."""
        return [*self.engine.arguments(spec.config), *extra_args(spec.config)]


def extra_args(config: EngineConfig) -> list[str]:
    """``config.extra_args`` verbatim: each item is one argument."""
    return list(config.extra_args or ())
