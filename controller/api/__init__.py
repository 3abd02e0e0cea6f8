"""REST handlers, one module per resource; each exports ``ENDPOINTS``."""

from controller.api import api_keys, auth, deployments, health, openapi, users, workers
from controller.http import Endpoint

ENDPOINTS: list[Endpoint] = [
    *health.ENDPOINTS,
    *auth.ENDPOINTS,
    *deployments.ENDPOINTS,
    *workers.ENDPOINTS,
    *api_keys.ENDPOINTS,
    *users.ENDPOINTS,
    *openapi.ENDPOINTS,
]

__all__ = ["ENDPOINTS"]
