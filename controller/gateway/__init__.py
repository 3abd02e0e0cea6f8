"""The OpenAI-compatible gateway: ``/v1`` routes proxied to running engines."""

from controller.gateway.handlers import create_gateway_app
from controller.gateway.state import GATEWAY, Gateway

__all__ = ["GATEWAY", "Gateway", "create_gateway_app"]
