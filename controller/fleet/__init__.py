"""The fleet: live agent sessions over gRPC, and what the REST API asks of them."""

from controller.fleet.hub import Fleet
from controller.fleet.lifecycle import serving_agents
from controller.fleet.session import AgentSession, LogFollow

__all__ = ["AgentSession", "Fleet", "LogFollow", "serving_agents"]
