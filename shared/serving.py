"""The model name an engine serves: the one rule both daemons use.

The agent starts the engine under that name (vLLM's and SGLang's
``--served-model-name``) and the controller's gateway sends it as ``model``,
so the two can never disagree. Clients always use the deployment's name.

* Ollama serves each model under its tag, which is the deployment's ``model``.
* vLLM and SGLang serve ``config["served_model_name"]`` when set, else the
  deployment's name.

The rule is pure: no I/O, no state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def served_model_name(backend: str, name: str, model: str, config: Mapping[str, Any]) -> str:
    if backend == "ollama":
        return model
    configured = config.get("served_model_name")
    return str(configured) if configured else name
