"""The backend interface: how one inference engine is run in a container.

A backend is pure (no Docker, no I/O): from a ``DeploySpec`` it says which image to run,
the command line, the port the engine listens on inside the container, the path that
answers 200 once the engine is ready, the request that fetches the model when the engine
starts without it, and how much of each GPU the deployment reserves.
The runtime (``agent.runtime``) turns that into a container; the scheduler uses
``gpu_reservation`` to place deployments.

Config keys (validated by the controller before they get here): gpu_memory_utilization,
max_model_len, tensor_parallel_size, dtype, quantization, image, env, extra_args,
served_model_name, trust_remote_code, max_num_seqs, enforce_eager, revision,
startup_timeout, gpu_count, gpu_ids. Unknown keys are ignored here.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from agent.types import DeploySpec
from shared import serving
from shared.reservation import GpuReservation, gpu_reservation

# Where the host's Hugging Face cache is mounted in engine containers.
HF_CACHE_TARGET = "/root/.cache/huggingface"


class Backend(ABC):
    """One inference engine. Subclasses set the class attributes and build the command."""

    name: ClassVar[str]
    default_image: ClassVar[str]
    # Port the engine listens on inside the container.
    engine_port: ClassVar[int]
    # Path that answers 200 once the engine can serve.
    health_path: ClassVar[str]

    def image(self, spec: DeploySpec) -> str:
        """The controller's resolved image, else ``config["image"]``, else the default."""
        configured = spec.config.get("image")
        return spec.image or (str(configured) if configured else "") or self.default_image

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

    def gpu_reservation(self, config: Mapping[str, Any]) -> GpuReservation:
        """How many GPUs and what fraction of each one the deployment takes.

        The rule lives in ``shared.reservation`` so the controller's scheduler
        applies exactly the same one."""
        return gpu_reservation(self.name, config)


def served_model_name(spec: DeploySpec) -> str:
    """The name the engine serves the model under (``shared.serving``)."""
    return serving.served_model_name(spec.backend, spec.name, spec.model, spec.config)


def extra_args(config: Mapping[str, Any]) -> list[str]:
    """``config["extra_args"]`` verbatim: a list of strings, or one shell-quoted string."""
    value = config.get("extra_args")
    if not value:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(item) for item in value]


def flag(args: list[str], config: Mapping[str, Any], key: str, option: str) -> None:
    """Append ``option value`` when ``key`` is set (``None`` and ``""`` mean unset)."""
    value = config.get(key)
    if value is None or value == "":
        return
    args.extend([option, str(value)])


def switch(args: list[str], config: Mapping[str, Any], key: str, option: str) -> None:
    """Append the bare ``option`` when ``key`` is true."""
    if config.get(key) is True:
        args.append(option)
