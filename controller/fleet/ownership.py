"""Which engine containers belong to this controller's cluster (DESIGN.md section 3).

Every container an agent creates carries the ``lmstack.cluster_id`` label of
the controller that asked for it. A controller stops and removes only its own:

* a labelled container is ours exactly when its label is our cluster id;
* an unlabelled one (created before containers were labelled) is ours exactly
  when its deployment id is a deployment of this database: deployment ids are
  UUIDs, so only our own history can know them, while a container of another
  cluster, or one left by an old install, is unknown and left alone.

Everything else is *foreign*: listed (``GET /api/workers/{id}/containers``
says ``"foreign": true``) and left running. Pure; the caller finds which
unlabelled deployment ids are known.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from shared.proto.lmstack.v1 import agent_pb2


def ours(cluster_id: str, container: agent_pb2.ContainerInfo, known: Container[str] = ()) -> bool:
    """Whether ``container`` belongs to cluster ``cluster_id``; ``known`` holds
    the deployment ids of this database (consulted for unlabelled containers)."""
    if container.cluster_id:
        return container.cluster_id == cluster_id
    return container.deployment_id in known


def unlabelled_ids(containers: Iterable[agent_pb2.ContainerInfo]) -> set[str]:
    """The deployment ids of the unlabelled containers: the ones to look up."""
    return {c.deployment_id for c in containers if not c.cluster_id and c.deployment_id}
