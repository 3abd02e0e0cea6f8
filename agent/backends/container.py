"""What container a ``DeploySpec`` becomes: pure data, no Docker calls.

``plan_container`` combines the backend's image/command/port with everything LMStack adds:
the ``lmstack-<deployment name>-<first 8 characters of the instance id>`` container
name, the labels that mark it as ours (the deployment and instance ids, a stable hash
of the spec, so an identical re-deploy is recognised, the restarts made before it, and
the cluster id of the controller that asked for it), the environment (backend
defaults, then the agent's ``HF_TOKEN``, then the deployment's ``config["env"]`` and the
spec's ``env``; later wins), the GPU indices to request (none when simulating GPUs: then
they go to ``CUDA_VISIBLE_DEVICES`` only) and the Hugging Face cache mount.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.backends import HF_CACHE_TARGET, get_backend
from agent.types import (
    LABEL_BACKEND,
    LABEL_CLUSTER_ID,
    LABEL_DEPLOYMENT_ID,
    LABEL_DEPLOYMENT_NAME,
    LABEL_HOST_PORT,
    LABEL_INSTANCE_ID,
    LABEL_MANAGED,
    LABEL_RESTARTS,
    LABEL_SPEC_HASH,
    LABEL_WORKER_ID,
    DeploySpec,
    spec_hash,
)

CONTAINER_PREFIX = "lmstack-"


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    image: str
    command: list[str]
    entrypoint: list[str] | None
    env: dict[str, str]
    labels: dict[str, str]
    engine_port: int
    host_port: int
    health_path: str
    # A POST (path, body) the engine needs once healthy: Ollama's model pull.
    model_pull: tuple[str, dict[str, Any]] | None
    # GPU indices to request from the NVIDIA runtime; empty: no device request.
    gpu_indices: tuple[int, ...]
    hf_cache_dir: Path
    hf_cache_target: str


# Characters of the instance id in a container name: unique enough on one host.
INSTANCE_SUFFIX = 8


def container_name(deployment_name: str, instance_id: str) -> str:
    return f"{CONTAINER_PREFIX}{deployment_name}-{instance_id[:INSTANCE_SUFFIX]}"


def plan_container(
    spec: DeploySpec, *, hf_cache_dir: Path, hf_token: str | None, simulate_gpus: bool
) -> ContainerPlan:
    """Raises ``ConfigError`` for an unknown backend."""
    backend = get_backend(spec.backend)
    env = dict(backend.env(spec))
    if hf_token:
        env["HF_TOKEN"] = hf_token
    env.update(spec.config.env or {})
    env.update(spec.env)
    gpu_indices = tuple(spec.gpu_indices)
    if simulate_gpus:
        # No GPUs to request, but the engine still sees which ones it was given.
        if gpu_indices:
            env.setdefault("CUDA_VISIBLE_DEVICES", ",".join(str(i) for i in gpu_indices))
        gpu_indices = ()
    labels = {
        LABEL_MANAGED: "true",
        LABEL_DEPLOYMENT_ID: spec.deployment_id,
        LABEL_INSTANCE_ID: spec.instance,
        LABEL_DEPLOYMENT_NAME: spec.name,
        LABEL_SPEC_HASH: spec_hash(spec),
        LABEL_HOST_PORT: str(spec.host_port),
        LABEL_BACKEND: backend.name,
        LABEL_RESTARTS: str(spec.restarts),
    }
    if spec.cluster_id:
        labels[LABEL_CLUSTER_ID] = spec.cluster_id
    if spec.worker_id:
        labels[LABEL_WORKER_ID] = spec.worker_id
    return ContainerPlan(
        name=container_name(spec.name, spec.instance),
        image=backend.image(spec),
        command=backend.command(spec),
        entrypoint=backend.entrypoint(spec),
        env=env,
        labels=labels,
        engine_port=backend.engine_port,
        host_port=spec.host_port,
        health_path=backend.health_path,
        model_pull=backend.model_pull(spec),
        gpu_indices=gpu_indices,
        hf_cache_dir=hf_cache_dir,
        hf_cache_target=HF_CACHE_TARGET,
    )
