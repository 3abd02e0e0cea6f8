"""The LMStack agent: runs engine containers on a GPU host for the controller.

Public surface, by module:

* ``agent.session``: ``AgentSession`` (the controller stream), ``SessionRejected``,
  ``AuthenticationFailed``, ``ProtocolVersionRejected``, ``Backoff``.
* ``agent.gpu``: ``GpuReader`` protocol, ``NvmlGpuReader``, ``SimulatedGpuReader``,
  ``GpuDevice``, ``GpuStats``.
* ``agent.runtime``: ``DockerRuntime``, ``PullProgress``; ``agent.types``: the ``Runtime``
  protocol and the data passed to and from it.
* ``agent.supervisor``: ``Supervisors``, the per-instance deploy/watch/restart tasks
  the session owns; ``agent.restarts``: the restart policy's decisions and back-off
  (``RestartTimings``, ``RestartBackoff``, ``refusal``).
* ``MemoryRuntime``, the in-memory double for tests and the fleet benchmark, lives in
  ``tests.runtime.memory_runtime``: it does not ship.
* ``agent.main``: ``main()``, the ``lmstack-agent`` entry point.

Nothing is imported here, so ``import agent.types`` stays cheap and no import
cycle can form between the agent's modules.
"""
