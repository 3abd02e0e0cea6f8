"""Backend adapters and container plans: pure, no Docker needed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.backends import BACKEND_NAMES, GpuReservation, get_backend
from agent.backends.container import plan_container
from agent.runtime import PullProgress
from agent.types import (
    LABEL_BACKEND,
    LABEL_DEPLOYMENT_ID,
    LABEL_DEPLOYMENT_NAME,
    LABEL_HOST_PORT,
    LABEL_INSTANCE_ID,
    LABEL_MANAGED,
    LABEL_RESTARTS,
    LABEL_SPEC_HASH,
    DeploySpec,
    spec_hash,
)
from shared import engines
from shared.engines import EngineConfig
from shared.errors import ConfigError


def spec(
    backend: str = "vllm", config: dict[str, Any] | EngineConfig | None = None, **fields: Any
) -> DeploySpec:
    if not isinstance(config, EngineConfig):
        config = EngineConfig.from_mapping(config)
    values: dict[str, Any] = {
        "deployment_id": "dep-1",
        "name": "llama",
        "backend": backend,
        "image": "",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "config": config,
        "host_port": 40001,
    }
    values.update(fields)
    return DeploySpec(**values)


def test_registry() -> None:
    assert set(BACKEND_NAMES) == {"vllm", "sglang", "ollama"}
    assert get_backend("").name == "vllm"
    with pytest.raises(ConfigError, match="unknown backend 'tgi'"):
        get_backend("tgi")


def test_vllm_minimal_command() -> None:
    backend = get_backend("vllm")
    assert backend.image(spec()) == "vllm/vllm-openai:latest"
    assert (backend.engine_port, backend.health_path) == (8000, "/health")
    assert backend.entrypoint(spec()) is None
    # The model is ``vllm serve``'s positional argument (the image's entrypoint).
    assert backend.command(spec()) == [
        "meta-llama/Llama-3.1-8B-Instruct",
        "--served-model-name",
        "llama",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]


def test_vllm_full_command() -> None:
    config = {
        "gpu_memory_utilization": 0.85,
        "max_model_len": 8192,
        "tensor_parallel_size": 2,
        "dtype": "bfloat16",
        "quantization": "awq",
        "trust_remote_code": True,
        "max_num_seqs": 64,
        "enforce_eager": True,
        "revision": "main",
        "served_model_name": "chat",
        "extra_args": ["--seed", "7"],
    }
    command = get_backend("vllm").command(spec(config=config))
    assert command == [
        "meta-llama/Llama-3.1-8B-Instruct",
        "--served-model-name",
        "chat",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--gpu-memory-utilization",
        "0.85",
        "--max-model-len",
        "8192",
        "--tensor-parallel-size",
        "2",
        "--dtype",
        "bfloat16",
        "--quantization",
        "awq",
        "--trust-remote-code",
        "--max-num-seqs",
        "64",
        "--enforce-eager",
        "--revision",
        "main",
        "--seed",
        "7",
    ]


def test_false_switches_and_extra_args_verbatim() -> None:
    config = {"trust_remote_code": False, "enforce_eager": False, "extra_args": ["--a", "b c"]}
    command = get_backend("vllm").command(spec(config=config))
    assert "--trust-remote-code" not in command
    assert "--enforce-eager" not in command
    assert command[-2:] == ["--a", "b c"]


def test_image_precedence() -> None:
    backend = get_backend("vllm")
    assert backend.image(spec(config={"image": "vllm/vllm-openai:v0.6.0"})) == (
        "vllm/vllm-openai:v0.6.0"
    )
    assert backend.image(spec(image="mine:1", config={"image": "other:2"})) == "mine:1"


def test_sglang_command() -> None:
    config = {
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.8,
        "max_model_len": 4096,
        "enforce_eager": True,
        "extra_args": ["--enable-torch-compile"],
    }
    backend = get_backend("sglang")
    assert backend.image(spec("sglang")) == "lmsysorg/sglang:latest"
    assert (backend.engine_port, backend.health_path) == (30000, "/health")
    assert backend.command(spec("sglang", config=config)) == [
        "python3",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--served-model-name",
        "llama",
        "--host",
        "0.0.0.0",
        "--port",
        "30000",
        "--tp",
        "4",
        "--mem-fraction-static",
        "0.8",
        "--context-length",
        "4096",
        "--disable-cuda-graph",
        "--enable-torch-compile",
    ]


def test_ollama() -> None:
    backend = get_backend("ollama")
    assert backend.image(spec("ollama")) == "ollama/ollama:latest"
    assert (backend.engine_port, backend.health_path) == (11434, "/api/version")
    assert backend.command(spec("ollama")) == ["serve"]
    assert backend.env(spec("ollama")) == {
        "OLLAMA_HOST": "0.0.0.0:11434",
        "OLLAMA_MODELS": "/root/.cache/huggingface/ollama",  # in the mounted cache
    }
    # It starts empty: the model is pulled once it answers.
    deployment = spec("ollama")
    assert backend.model_pull(deployment) == (
        "/api/pull",
        {"model": deployment.model, "stream": False},
    )
    assert get_backend("vllm").model_pull(spec("vllm")) is None


@pytest.mark.parametrize(
    ("backend", "config", "expected"),
    [
        ("vllm", {}, GpuReservation(1, 0.9)),
        (
            "vllm",
            {"tensor_parallel_size": 4, "gpu_memory_utilization": 0.5},
            GpuReservation(4, 0.5),
        ),
        ("vllm", {"tensor_parallel_size": 2, "gpu_count": 4}, GpuReservation(4, 0.9)),
        ("vllm", {"gpu_ids": [1, 3]}, GpuReservation(2, 0.9)),
        ("sglang", {"tensor_parallel_size": 2}, GpuReservation(2, 0.9)),
        ("ollama", {}, GpuReservation(1, 1.0)),
        ("ollama", {"gpu_count": 2, "gpu_memory_utilization": 0.3}, GpuReservation(2, 0.3)),
    ],
)
def test_gpu_reservation(backend: str, config: dict[str, Any], expected: GpuReservation) -> None:
    assert get_backend(backend).gpu_reservation(EngineConfig.from_mapping(config)) == expected


def test_plan_container() -> None:
    s = spec(
        config={"env": {"VLLM_LOGGING_LEVEL": "DEBUG", "HF_TOKEN": "from-config"}},
        env={"EXTRA": "1"},
        gpu_indices=(2, 3),
    )
    plan = plan_container(s, hf_cache_dir=Path("/hf"), hf_token="hf_agent", simulate_gpus=False)
    # No instance id (a Deploy of protocol 1): the deployment's id is the instance's.
    assert plan.name == "lmstack-llama-dep-1"
    assert plan.image == "vllm/vllm-openai:latest"
    assert plan.labels == {
        LABEL_MANAGED: "true",
        LABEL_DEPLOYMENT_ID: "dep-1",
        LABEL_INSTANCE_ID: "dep-1",
        LABEL_DEPLOYMENT_NAME: "llama",
        LABEL_SPEC_HASH: spec_hash(s),
        LABEL_HOST_PORT: "40001",
        LABEL_BACKEND: "vllm",
        LABEL_RESTARTS: "0",
    }
    instance = replace(s, instance_id="9f86d081-884c-4d63-9b2f-c1e4d1f0a2b3", restarts=4)
    plan = plan_container(instance, hf_cache_dir=Path("/hf"), hf_token=None, simulate_gpus=False)
    assert plan.name == "lmstack-llama-9f86d081"
    assert plan.labels[LABEL_INSTANCE_ID] == instance.instance_id
    assert plan.labels[LABEL_RESTARTS] == "4"
    assert plan.labels[LABEL_SPEC_HASH] == spec_hash(s)  # the same container
    # The deployment's own env wins over the agent's token.
    assert plan.env == {"HF_TOKEN": "from-config", "VLLM_LOGGING_LEVEL": "DEBUG", "EXTRA": "1"}
    assert plan.gpu_indices == (2, 3)
    assert (plan.engine_port, plan.host_port, plan.health_path) == (8000, 40001, "/health")
    assert (plan.hf_cache_dir, plan.hf_cache_target) == (Path("/hf"), "/root/.cache/huggingface")


def test_plan_simulated_gpus() -> None:
    plan = plan_container(
        spec(gpu_indices=(0, 1)), hf_cache_dir=Path("/hf"), hf_token=None, simulate_gpus=True
    )
    assert plan.gpu_indices == ()
    assert plan.env == {"CUDA_VISIBLE_DEVICES": "0,1"}


def test_spec_hash_is_stable() -> None:
    a = spec(config={"max_model_len": 1, "dtype": "auto"})
    b = spec(config={"dtype": "auto", "max_model_len": 1})
    assert spec_hash(a) == spec_hash(b)
    assert spec_hash(a) != spec_hash(spec(config={"max_model_len": 2, "dtype": "auto"}))
    assert spec_hash(a) != spec_hash(spec(config=a.config, host_port=40002))


def test_pull_progress_aggregates_layers() -> None:
    progress = PullProgress("vllm/vllm-openai:latest")
    assert progress.message() == "pulling image vllm/vllm-openai:latest (0/0 layers)"
    events: list[dict[str, Any]] = [
        {"status": "Pulling from vllm/vllm-openai", "id": "latest"},
        {"status": "Pulling fs layer", "id": "a"},
        {"status": "Pulling fs layer", "id": "b"},
        {"status": "Already exists", "id": "c"},
        {"status": "Downloading", "id": "a", "progressDetail": {"current": 500, "total": 1000}},
        {"status": "Downloading", "id": "b", "progressDetail": {"current": 0, "total": 3000}},
    ]
    for event in events:
        progress.update(event)
    assert progress.message() == (
        "pulling image vllm/vllm-openai:latest: 12% (500 B of 4.0 KB, 1/3 layers)"
    )
    progress.update({"status": "Pull complete", "id": "a"})
    progress.update({"status": "Download complete", "id": "b"})
    assert "100% (4.0 KB of 4.0 KB, 2/3 layers)" in progress.message()


@pytest.mark.parametrize(
    ("backend", "config", "served"),
    [
        ("vllm", {}, "llama"),
        ("vllm", {"served_model_name": "chat"}, "chat"),
        ("sglang", {"served_model_name": "chat"}, "chat"),
        ("ollama", {"served_model_name": "chat"}, "meta-llama/Llama-3.1-8B-Instruct"),
    ],
)
def test_the_served_name_is_one_rule_for_agent_and_gateway(
    backend: str, config: dict[str, Any], served: str
) -> None:
    deployment = spec(backend, config)
    assert get_backend(backend).served_model_name(deployment) == served
    # The controller's gateway sends the same name (controller.gateway.routes).
    typed = EngineConfig.from_mapping(config)
    assert engines.served_model_name(backend, "llama", deployment.model, typed) == served
