"""Supervision of instances: deploy, watch, and restart under the restart policy.

``Supervisors`` keeps one supervisor per instance the controller deployed here. A
supervisor deploys the instance's spec (``Runtime.deploy``), then probes its
container every ``health_check_interval`` seconds (``Runtime.probe``); what the
restart policy makes of a failure is ``agent.restarts``'s to say.

Public surface: ``Supervisors`` and ``Phase`` (what ``Supervisors.phase`` says).
Everything else is private, one concern a module:

* ``_supervisors``: ``Supervisors``, the registry and owner of the supervisor tasks;
* ``_supervise``: one instance's supervisor loop: deploy, answer a failure, back off;
* ``_watch``: probing a running engine until it fails;
* ``_outlet``: where reports go (the attached reporter, or nowhere);
* ``_instance``: one instance's bookkeeping (``Phase``, ``Instance``).

Guarantees:

* **Restarts without the controller.** Supervisors are tasks of the
  ``Supervisors`` context, which the agent session opens around its reconnect
  loop: they outlive connections, so an engine that fails while the controller
  is unreachable is restarted all the same. Leaving the context cancels every
  supervisor and awaits it; engine containers are left as they are.
* **What counts as a failure.** A deploy that ends in ``error`` (the engine
  exited before it was ready, or could not be started), and, once running, an
  engine whose container exited or vanished, or that failed its health check
  ``HEALTH_CHECK_FAILURES`` times in a row (its container is then stopped). A
  running engine is probed every ``health_check_interval`` seconds, and at once
  when ``nudge`` says a listing (a heartbeat's) saw its container stopped.
* **How it is answered.** Restarted after the back-off: reported first as
  ``error`` with ``final`` false, the exit code, ``restarts`` and a message such
  as ``engine exited with code 3; restart 2 in 20 s; last log lines: …``; after
  the wait the spec is deployed again with ``restarts`` one higher, reporting
  ``pending`` → ``starting`` → ``running`` as a deploy does. Or not restarted
  (policy ``never``, a clean exit under ``on-failure``, ``max_restarts``
  reached): one ``error`` with ``final`` true saying why, and nothing more.
* **Reports.** Every report carries the instance and deployment ids and
  ``restarts``: the most of the Deploy's, an adopted container's label and the
  agent's own count. The runtime's ``error`` is held back until the policy has
  decided, then sent once with its decision. Reports go to the attached
  reporter (the live connection); while none is attached they are dropped: the
  next Hello lists the containers with their restarts, and the Deploys that
  follow it are answered with the current state.
* **Deploys** (``deploy``; the newest Deploy's config applies). For the spec
  hash the instance already runs: an attempt in progress is joined; a running
  instance is deployed again (the runtime adopts its container); a pending
  restart keeps its time, the new config decides again (it may make the error
  final) and the state is reported again; a final error is restarted at once
  if the new config would restart it, else reported again. For another spec the
  old supervisor is cancelled and a new one starts, its back-off afresh, its
  restart count going on. ``deploy`` returns once the attempt has an outcome
  (``running``, or an ``error`` report).
* **Stops.** ``cancel`` cuts a supervisor short at once (a Stop superseding a
  deploy, or a pending restart); ``forget`` cancels it, waits for it to end and
  forgets the instance, so the Stop that follows never meets a restart.

Concurrency model: the event loop only. ``deploy``, ``cancel`` and ``forget``
change the bookkeeping before their first ``await``, so a caller cancelled while
it waits leaves it consistent; a new supervisor first waits for the end of the
one it replaces, so two never work on one instance's container at once, and a
superseded one's late reports are dropped.
"""

from agent.supervisor._instance import Phase
from agent.supervisor._supervisors import Supervisors

__all__ = ["Phase", "Supervisors"]
