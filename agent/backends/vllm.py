"""vLLM (the default backend): ``vllm/vllm-openai``, whose entrypoint is the API server.

The command is only flags, built from the validated config, then ``extra_args`` verbatim
(so a user can pass any flag LMStack does not model). Reservation: ``gpu_memory_utilization``
(vLLM's default 0.9) of each of ``tensor_parallel_size`` GPUs (``gpu_count``/``gpu_ids``
win when given, e.g. for pipeline parallelism through ``extra_args``).
"""

from __future__ import annotations

from agent.backends.base import (
    Backend,
    extra_args,
    flag,
    served_model_name,
    switch,
)
from agent.types import DeploySpec


class VllmBackend(Backend):
    name = "vllm"
    default_image = "vllm/vllm-openai:latest"
    engine_port = 8000
    health_path = "/health"

    def command(self, spec: DeploySpec) -> list[str]:
        config = spec.config
        args = [
            "--model",
            spec.model,
            "--served-model-name",
            served_model_name(spec),
            "--host",
            "0.0.0.0",
            "--port",
            str(self.engine_port),
        ]
        flag(args, config, "gpu_memory_utilization", "--gpu-memory-utilization")
        flag(args, config, "max_model_len", "--max-model-len")
        flag(args, config, "tensor_parallel_size", "--tensor-parallel-size")
        flag(args, config, "dtype", "--dtype")
        flag(args, config, "quantization", "--quantization")
        switch(args, config, "trust_remote_code", "--trust-remote-code")
        flag(args, config, "max_num_seqs", "--max-num-seqs")
        switch(args, config, "enforce_eager", "--enforce-eager")
        flag(args, config, "revision", "--revision")
        return args + extra_args(config)
