"""Deployments: every transaction that creates, changes or removes one, and
the reconciliation loop that keeps each deployment's instances as desired.

``DeploymentService`` owns the placement lock and each whole transaction; the
REST handlers (``controller.api.deployments``) only parse and serialise.
``plan`` decides what one reconciliation pass does to one deployment.
"""

from controller.deployments.service import DeploymentService, DeploymentView, Drains

__all__ = ["DeploymentService", "DeploymentView", "Drains"]
