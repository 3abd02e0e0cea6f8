"""The Docker runtime: engine containers on the local Docker engine.

Public surface: ``DockerRuntime`` (the real ``agent.types.Runtime``) and
``PullProgress`` (how an image pull's progress reads). Everything else is private,
one concern a module:

* ``_docker``: ``DockerRuntime``: queries, logs, stop, and deploy through ``_deploys``;
* ``_deploys``: bringing a spec to a healthy engine container, or reporting why not;
* ``_pulls``: image presence and pulls with progress;
* ``_bridge``: the one thread-to-loop bridge (pull events, followed logs);
* ``_client``: the lazily connected SDK client and its thread hop;
* ``_containers``: blocking helpers over containers; ``_errors``: Docker's errors, ours.
"""

from agent.runtime._docker import DockerRuntime
from agent.runtime._pulls import PullProgress

__all__ = ["DockerRuntime", "PullProgress"]
