"""The OpenAI-compatible gateway: ``/v1`` routes proxied to running engines."""

from controller.gateway.handlers import PREFIX, create_gateway_app
from controller.gateway.state import GATEWAY, Gateway

__all__ = ["GATEWAY", "PREFIX", "Gateway", "create_gateway_app"]
