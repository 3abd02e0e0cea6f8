"""SGLang: ``lmsysorg/sglang``, started as ``python3 -m sglang.launch_server``.

The image has no API-server entrypoint, so the whole command line is given. LMStack's
config keys map to SGLang's flags (``shared.engines.SGLANG.flags``:
``gpu_memory_utilization`` -> ``--mem-fraction-static``, ``max_model_len`` ->
``--context-length``, ``max_num_seqs`` -> ``--max-running-requests``, ``enforce_eager``
-> ``--disable-cuda-graph``); ``tensor_parallel_size`` is always given as ``--tp``.
Reservation: ``gpu_memory_utilization`` of each of ``--tp`` GPUs; unset, SGLang sizes
its static pool itself (about 0.8-0.9 of memory depending on the GPU), so 0.9 is
reserved to stay on the safe side.
"""

from __future__ import annotations

from agent.backends.base import Backend
from agent.types import DeploySpec
from shared.engines import SGLANG


class SglangBackend(Backend):
    engine = SGLANG

    def command(self, spec: DeploySpec) -> list[str]:
        return [
            "python3",
            "-m",
            "sglang.launch_server",
            "--model-path",
            spec.model,
            *self.serving_args(spec),
            "--tp",
            str(spec.config.tensor_parallel_size or 1),
            *self.config_args(spec),
        ]
