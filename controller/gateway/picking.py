"""Which instance takes a request: the gateway's routing policies.

A policy is a ``Picker``: from the usable instances of one deployment (at
least one, oldest first) and the request's headers and body it chooses one.
``POLICIES`` is the registry, a policy's name to the factory of its pickers
(given the gateway's in-flight counts, for load-aware ones); ``Pickers`` keeps
one picker per deployment and policy, so a policy's state (a round-robin
position, a hash ring) is per deployment. A new policy is a class and a line
in ``POLICIES``.

Guarantees:
* ``Pickers.pick`` returns one of the candidates it was given; with a single
  candidate it returns that one without asking the policy.
* ``round_robin`` takes the candidates in turn; when the set changes between
  requests (an instance added, drained, its worker offline) it goes on from
  its position in the new set.

Concurrency: event loop only; a pick is synchronous, so nothing happens
between choosing an instance and counting the request at it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from controller.gateway.inflight import InFlight
from controller.gateway.routes import Route, Upstream

__all__ = ["DEFAULT_POLICY", "POLICIES", "Picker", "Pickers", "RoundRobin"]


class Picker(Protocol):
    def pick(
        self, candidates: Sequence[Upstream], headers: Mapping[str, str], body: Mapping[str, Any]
    ) -> Upstream:
        """One of ``candidates`` (never empty) for the request."""
        ...


class RoundRobin:
    """Each candidate in turn."""

    def __init__(self) -> None:
        self._next = 0

    def pick(
        self, candidates: Sequence[Upstream], headers: Mapping[str, str], body: Mapping[str, Any]
    ) -> Upstream:
        chosen = candidates[self._next % len(candidates)]
        self._next += 1
        return chosen


POLICIES: Mapping[str, Callable[[InFlight], Picker]] = {
    "round_robin": lambda _in_flight: RoundRobin(),
}
DEFAULT_POLICY = "round_robin"


def policy_of(route: Route) -> str:
    """The policy a deployment routes by (the default until its config names one)."""
    return DEFAULT_POLICY


class Pickers:
    """The pickers of every deployment, made on first use."""

    def __init__(
        self, in_flight: InFlight, policies: Mapping[str, Callable[[InFlight], Picker]] = POLICIES
    ) -> None:
        self._in_flight = in_flight
        self._policies = policies
        self._pickers: dict[tuple[str, str], Picker] = {}

    def pick(
        self,
        route: Route,
        candidates: Sequence[Upstream],
        headers: Mapping[str, str],
        body: Mapping[str, Any],
    ) -> Upstream:
        if len(candidates) == 1:
            return candidates[0]
        key = (route.deployment_id, policy_of(route))
        picker = self._pickers.get(key)
        if picker is None:
            picker = self._pickers[key] = self._policies[key[1]](self._in_flight)
        return picker.pick(candidates, headers, body)
