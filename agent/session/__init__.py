"""The agent's side of the controller stream (DESIGN.md section 3).

Public surface: ``AgentSession`` (keeps the stream open, serves commands),
the refusals it raises (``SessionRejected`` and its ``AuthenticationFailed`` and
``ProtocolVersionRejected``), ``Backoff`` (the reconnect schedule) and ``Sleep``
(the injectable sleep's type). Everything else is private, one concern a module:

* ``_session``: ``AgentSession``, the reconnect loop and the Hello/Welcome handshake;
* ``_connection``: one live stream: command lanes, requests, heartbeats;
* ``_outbox``: the connection's single writer;
* ``_exits``: spotting engines that exited on their own;
* ``_wire``: proto messages to and from the agent's dataclasses;
* ``_identity``: the persisted worker id;
* ``_channel``: the gRPC channel (TLS, keepalive);
* ``_backoff``, ``_errors``: the reconnect schedule, how a connection ends.
"""

from agent.session._backoff import Backoff
from agent.session._errors import AuthenticationFailed, ProtocolVersionRejected, SessionRejected
from agent.session._session import AgentSession, Sleep

__all__ = [
    "AgentSession",
    "AuthenticationFailed",
    "Backoff",
    "ProtocolVersionRejected",
    "SessionRejected",
    "Sleep",
]
