"""SGLang: ``lmsysorg/sglang``, started as ``python3 -m sglang.launch_server``.

The image has no API-server entrypoint, so the whole command line is given. LMStack's
config keys map to SGLang's flags (``gpu_memory_utilization`` -> ``--mem-fraction-static``,
``max_model_len`` -> ``--context-length``, ``tensor_parallel_size`` -> ``--tp``,
``max_num_seqs`` -> ``--max-running-requests``, ``enforce_eager`` ->
``--disable-cuda-graph``). Reservation: ``gpu_memory_utilization`` of each of ``--tp``
GPUs; unset, SGLang sizes its static pool itself (about 0.8-0.9 of memory depending on
the GPU), so 0.9 is reserved to stay on the safe side.
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


class SglangBackend(Backend):
    name = "sglang"
    default_image = "lmsysorg/sglang:latest"
    engine_port = 30000
    health_path = "/health"

    def command(self, spec: DeploySpec) -> list[str]:
        config = spec.config
        args = [
            "python3",
            "-m",
            "sglang.launch_server",
            "--model-path",
            spec.model,
            "--served-model-name",
            served_model_name(spec),
            "--host",
            "0.0.0.0",
            "--port",
            str(self.engine_port),
            "--tp",
            str(int(config.get("tensor_parallel_size") or 1)),
        ]
        flag(args, config, "gpu_memory_utilization", "--mem-fraction-static")
        flag(args, config, "max_model_len", "--context-length")
        flag(args, config, "dtype", "--dtype")
        flag(args, config, "quantization", "--quantization")
        switch(args, config, "trust_remote_code", "--trust-remote-code")
        flag(args, config, "max_num_seqs", "--max-running-requests")
        switch(args, config, "enforce_eager", "--disable-cuda-graph")
        flag(args, config, "revision", "--revision")
        return args + extra_args(config)
