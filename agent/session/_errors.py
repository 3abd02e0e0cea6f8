"""How a connection to the controller can end: a refusal (final) or a loss (retried)."""

from __future__ import annotations

from collections.abc import Iterator

from shared.errors import AgentError


class SessionRejected(AgentError):
    """The controller refused this agent; retrying would not help."""


class AuthenticationFailed(SessionRejected):
    """The controller rejected the join token (``UNAUTHENTICATED``)."""


class ProtocolVersionRejected(SessionRejected):
    """The controller does not speak our protocol version (``FAILED_PRECONDITION``)."""


class ConnectionLost(Exception):
    """This connection ended; the session reconnects."""


def end_reason(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that ended a connection's task group."""
    leaves = list(_leaves(group))
    for exc in leaves:
        if isinstance(exc, SessionRejected):
            return exc
    if all(isinstance(exc, ConnectionLost) for exc in leaves):
        return leaves[0]
    return group  # a bug: keep every exception for the log


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
