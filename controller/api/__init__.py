"""REST handlers, one module per resource; each exports ``ENDPOINTS``."""

from controller.api import (
    api_keys,
    auth,
    deployments,
    health,
    openapi,
    usage,
    users,
    workers,
)
from controller.gateway.handlers import ENDPOINTS as GATEWAY_ENDPOINTS
from controller.http import Endpoint

ENDPOINTS: list[Endpoint] = [
    *health.ENDPOINTS,
    *auth.ENDPOINTS,
    *deployments.ENDPOINTS,
    *workers.ENDPOINTS,
    *api_keys.ENDPOINTS,
    *users.ENDPOINTS,
    *usage.ENDPOINTS,
    *openapi.ENDPOINTS,
]

# Routed by the gateway sub-application from the same table; listed here for
# the OpenAPI document.
DOCUMENTED_ONLY: list[Endpoint] = GATEWAY_ENDPOINTS

__all__ = ["DOCUMENTED_ONLY", "ENDPOINTS"]
