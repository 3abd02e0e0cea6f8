"""Deployments: every transaction that creates, changes or removes one.

``DeploymentService`` owns the placement lock and each whole transaction; the
REST handlers (``controller.api.deployments``) only parse and serialise.
"""

from controller.deployments.service import DeploymentService

__all__ = ["DeploymentService"]
