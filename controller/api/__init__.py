"""REST handlers, one module per resource; each exports ``ENDPOINTS``."""

from controller.api import (
    api_keys,
    auth,
    deployments,
    gateway_docs,
    health,
    openapi,
    usage,
    users,
    workers,
)
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

# Served by the gateway sub-application; listed here for the OpenAPI document.
DOCUMENTED_ONLY: list[Endpoint] = gateway_docs.ENDPOINTS

__all__ = ["DOCUMENTED_ONLY", "ENDPOINTS"]
