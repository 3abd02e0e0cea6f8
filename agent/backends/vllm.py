"""vLLM (the default backend): ``vllm/vllm-openai``, whose entrypoint is ``vllm serve``.

The command is the model as ``vllm serve``'s positional argument (upstream vLLM warns
that ``--model`` "will be removed in a future version"), then flags built from the
validated config (``shared.engines.VLLM.flags``), then ``extra_args`` verbatim (so a
user can pass any flag LMStack does not model). Reservation: ``gpu_memory_utilization``
(vLLM's default 0.9) of each of ``tensor_parallel_size`` GPUs (``gpu_count``/``gpu_ids``
win when given, e.g. for pipeline parallelism through ``extra_args``).
"""

from __future__ import annotations

from agent.backends.base import Backend
from agent.types import DeploySpec
from shared.engines import VLLM


class VllmBackend(Backend):
    engine = VLLM

    def command(self, spec: DeploySpec) -> list[str]:
        return [spec.model, *self.serving_args(spec), *self.config_args(spec)]
