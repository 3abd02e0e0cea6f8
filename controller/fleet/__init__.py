"""The fleet: live agent sessions over gRPC, and what the REST API asks of them."""

from controller.fleet.hub import AgentSession, Fleet
from controller.fleet.server import FleetServer

__all__ = ["AgentSession", "Fleet", "FleetServer"]
