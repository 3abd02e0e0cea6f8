"""Deployments: every transaction that creates, changes or removes one, and
the reconciliation loop that keeps each deployment's instances as desired.

``DeploymentService`` owns the placement lock and each whole transaction; the
REST handlers (``controller.api.deployments``) only parse and serialise.
``reconciler`` is the loop that keeps each deployment's instances as desired,
``plan`` what one pass does to one deployment, ``placer`` the placement lock
and the one path new instances take, ``drainer`` how instances go.
"""

from controller.deployments.drainer import InFlight
from controller.deployments.service import DeploymentService, DeploymentView

__all__ = ["DeploymentService", "DeploymentView", "InFlight"]
