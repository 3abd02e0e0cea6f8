"""Cluster ownership on the real Docker engine: a fresh controller (new data
directory, so a new cluster id) and its agent joining a host where another
cluster's engine runs leave that engine running and list it as foreign, still
remove their own orphans, and a delete followed at once by a create of the same
name succeeds. Real controllers, real agent processes, stand-in engine image."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import pytest

from controller import appkeys
from tests.conftest import Controller
from tests.e2e.conftest import AgentProcess, running_controller
from tests.e2e.test_deployments_on_docker import (
    container_of,
    create,
    started,
    wait_gone,
    wait_status,
)


@pytest.fixture
async def fresh_controller(tmp_path: Path) -> AsyncIterator[Controller]:
    """A second controller on this host: its own data directory and ports."""
    async with running_controller(tmp_path / "fresh-data") as ctl:
        yield ctl


@pytest.fixture
async def fresh_agents(fresh_controller: Controller, tmp_path: Path) -> AsyncIterator[Any]:
    made: list[AgentProcess] = []

    def make(state: str = "fresh-agent") -> AgentProcess:
        agent = AgentProcess(fresh_controller, tmp_path / state, "fresh-worker")
        made.append(agent)
        return agent

    yield make
    for agent in made:
        await agent.kill()


async def containers(ctl: Controller, worker_id: str) -> list[dict[str, Any]]:
    status, listing = await ctl.admin("GET", f"/api/workers/{worker_id}/containers")
    assert status == 200, listing
    found: list[dict[str, Any]] = listing["containers"]
    return found


async def test_a_fresh_controller_leaves_another_clusters_engine_running(
    e2e_controller: Controller, agents: Any, fresh_controller: Controller, fresh_agents: Any,
    docker_client: docker.DockerClient, engine_image: str, prefix: str,
) -> None:  # fmt: skip
    first, fresh = e2e_controller, fresh_controller
    assert first.app[appkeys.CLUSTER_ID] != fresh.app[appkeys.CLUSTER_ID]
    # The first cluster's engine, then its agent goes away (engines keep running).
    agent, worker_id = await started(agents)
    theirs = await create(first, worker_id, f"{prefix}-theirs", engine_image)
    await wait_status(first, theirs["id"], "running")
    engine = container_of(docker_client, f"{prefix}-theirs")
    assert await agent.stop(signal.SIGTERM) == 0

    # The fresh controller's agent joins the same host and runs an engine of its own.
    mine_agent: AgentProcess = fresh_agents()
    await mine_agent.start()
    fresh_worker = await mine_agent.wait_online()
    mine = await create(fresh, fresh_worker, f"{prefix}-mine", engine_image)
    await wait_status(fresh, mine["id"], "running")
    # Names are lmstack-<deployment>-<short instance id>: keyed by the first part.
    listed = {c["name"].rsplit("-", 1)[0]: c for c in await containers(fresh, fresh_worker)}
    assert listed[f"lmstack-{prefix}-theirs"]["foreign"] is True
    assert listed[f"lmstack-{prefix}-theirs"]["cluster_id"] == first.app[appkeys.CLUSTER_ID]
    assert listed[f"lmstack-{prefix}-mine"]["foreign"] is False

    # Its own orphan (deleted while its agent was away) is removed on the next Hello;
    # the other cluster's engine is not touched.
    assert await mine_agent.stop(signal.SIGTERM) == 0
    status, _ = await fresh.admin("DELETE", f"/api/deployments/{mine['id']}")
    assert status == 204
    again: AgentProcess = fresh_agents()
    again.state_dir = mine_agent.state_dir
    await again.start()
    assert await again.wait_online() == fresh_worker
    await wait_gone(docker_client, f"{prefix}-mine")
    still = container_of(docker_client, f"{prefix}-theirs")
    assert (still.id, still.status) == (engine.id, "running")
    assert still.attrs["State"]["StartedAt"] == engine.attrs["State"]["StartedAt"]
    # Names are lmstack-<deployment>-<short instance id>: keyed by the first part.
    listed = {c["name"].rsplit("-", 1)[0]: c for c in await containers(fresh, fresh_worker)}
    assert listed[f"lmstack-{prefix}-theirs"]["foreign"] is True


async def test_delete_then_create_of_the_same_name_succeeds(
    e2e_controller: Controller, agents: Any, docker_client: docker.DockerClient,
    engine_image: str, prefix: str,
) -> None:  # fmt: skip
    ctl = e2e_controller
    _, worker_id = await started(agents)
    name = f"{prefix}-again"
    created = await create(ctl, worker_id, name, engine_image)
    await wait_status(ctl, created["id"], "running")
    for _ in range(3):
        status, _ = await ctl.admin("DELETE", f"/api/deployments/{created['id']}")
        assert status == 204
        created = await create(ctl, worker_id, name, engine_image)
        running = await wait_status(ctl, created["id"], "running")
        container = container_of(docker_client, name)
        assert container.labels["lmstack.deployment_id"] == created["id"]
        assert running["container_id"] == container.id
