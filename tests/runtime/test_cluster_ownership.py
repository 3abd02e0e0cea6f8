"""DockerRuntime and cluster ownership, on the real Docker engine: containers carry
the cluster id, another cluster's container is never stopped or removed, and an
orphan's removal and a new deployment of the same name never conflict."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import docker
import pytest

from agent.runtime import DockerRuntime
from agent.types import (
    ERROR,
    LABEL_CLUSTER_ID,
    RUNNING,
    STOPPED,
    STOPPING,
    DeploySpec,
    StatusUpdate,
)
from tests.runtime.conftest import Recorder

SpecFactory = Callable[..., DeploySpec]
OURS = f"cluster-{uuid.uuid4()}"
THEIRS = f"cluster-{uuid.uuid4()}"


async def test_containers_carry_the_cluster_id(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
) -> None:
    spec = make_spec(cluster_id=OURS)
    await runtime.deploy(spec, recorder)
    assert recorder.last.status == RUNNING, recorder.updates
    container = docker_client.containers.get(recorder.last.container_id)
    assert container.labels[LABEL_CLUSTER_ID] == OURS
    [listed] = [c for c in await runtime.list_containers() if c.deployment_id == spec.deployment_id]
    assert listed.cluster_id == OURS


async def test_a_stop_for_another_clusters_container_is_refused(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
) -> None:
    spec = make_spec(cluster_id=THEIRS)
    await runtime.deploy(spec, recorder)
    container_id = recorder.last.container_id

    refused = Recorder()
    await runtime.stop(spec.deployment_id, True, refused, cluster_id=OURS)
    assert refused.statuses == [ERROR]
    assert "refused" in refused.last.message and THEIRS in refused.last.message
    assert docker_client.containers.get(container_id).status == "running"

    stopped = Recorder()
    await runtime.stop(spec.deployment_id, True, stopped, cluster_id=THEIRS)
    assert stopped.last.status == STOPPED


async def test_another_clusters_container_keeps_its_name(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
) -> None:
    # Two instances whose ids begin alike: their containers want one name.
    prefix = uuid.uuid4().hex[:8]
    theirs = make_spec(cluster_id=THEIRS, instance_id=f"{prefix}-theirs")
    await runtime.deploy(theirs, recorder)
    holder = recorder.last.container_id

    ours = make_spec(name=theirs.name, cluster_id=OURS, instance_id=f"{prefix}-ours")
    mine = Recorder()
    await runtime.deploy(ours, mine)
    assert mine.last.status == ERROR
    assert THEIRS in mine.last.message and "left running" in mine.last.message
    assert docker_client.containers.get(holder).status == "running"


@pytest.mark.parametrize("round_", range(3))
async def test_an_orphans_removal_and_a_new_deployment_of_its_name_do_not_conflict(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
    round_: int,
) -> None:
    """The orphan's Stop and the new Deploy arrive together, as after a delete and
    an immediate create of the same name (two session lanes, one name: instance
    ids that begin alike)."""
    prefix = uuid.uuid4().hex[:8]
    old = make_spec(cluster_id=OURS, instance_id=f"{prefix}-old")
    await runtime.deploy(old, recorder)
    assert recorder.last.status == RUNNING, recorder.updates

    new = make_spec(name=old.name, cluster_id=OURS, instance_id=f"{prefix}-new")
    deployed = Recorder()
    deploying: list[asyncio.Task[None]] = []

    class StartsTheNewOne(Recorder):
        """Starts the new deployment the moment the orphan's stop begins."""

        async def __call__(self, update: StatusUpdate) -> None:
            await super().__call__(update)
            if update.status == STOPPING and not deploying:
                deploying.append(asyncio.create_task(runtime.deploy(new, deployed)))

    stopped = StartsTheNewOne()
    await runtime.stop(old.instance, True, stopped, cluster_id=OURS)
    await asyncio.gather(*deploying)
    assert deployed.last.status == RUNNING, deployed.updates
    assert stopped.last.status == STOPPED, stopped.updates
    container = docker_client.containers.get(deployed.last.container_id)
    assert container.name == f"lmstack-{old.name}-{prefix}"
    assert container.labels["lmstack.deployment_id"] == new.deployment_id
    assert container.labels["lmstack.instance_id"] == new.instance
