"""Instances and the restart policy on the real Docker engine, with the stand-in
engine image: container names and labels per instance, a container of the agent
before instances adopted as it is, and ``Supervisors`` bringing back an engine
whose container was killed (the back-off in miniature)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import docker
import docker.errors
import pytest

from agent.backends.container import plan_container
from agent.restarts import RestartTimings
from agent.runtime import DockerRuntime
from agent.supervisor import Supervisors
from agent.types import (
    ERROR,
    LABEL_INSTANCE_ID,
    LABEL_RESTARTS,
    LABEL_SPEC_HASH,
    PENDING,
    RUNNING,
    STARTING,
    DeploySpec,
    legacy_spec_hash,
)
from tests.runtime.conftest import Recorder
from tests.waiting import eventually

SpecFactory = Callable[..., DeploySpec]
FAST = RestartTimings(
    backoff_initial=0.2, backoff_max=1.0, reset_after=600.0, health_check_interval=0.1
)


async def _healthy(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(f"http://127.0.0.1:{port}/health") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def test_a_new_instance_is_named_and_labelled_after_its_id(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
) -> None:
    instance_id = str(uuid.uuid4())
    spec = make_spec(instance_id=instance_id, restarts=2)
    await runtime.deploy(spec, recorder)
    assert recorder.statuses == [PENDING, STARTING, RUNNING], recorder.updates

    container = docker_client.containers.get(recorder.last.container_id)
    assert container.name == f"lmstack-{spec.name}-{instance_id[:8]}"
    assert container.labels[LABEL_INSTANCE_ID] == instance_id
    assert container.labels[LABEL_RESTARTS] == "2"
    assert {(u.instance_id, u.deployment_id, u.restarts) for u in recorder.updates} == {
        (instance_id, spec.deployment_id, 2)
    }
    [listed] = [c for c in await runtime.list_containers() if c.instance_id == instance_id]
    assert (listed.name, listed.restarts) == (container.name, 2)


async def test_a_container_of_the_agent_before_instances_is_adopted_as_it_is(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """What the old agent made: named ``lmstack-<name>``, no instance label, its own
    hash (with an admission key, which that hash still covered)."""
    spec = make_spec(
        config={"startup_timeout": 20, "max_parallel": 4, "env": {"STANDIN_START_DELAY": "0.3"}}
    )
    plan = plan_container(spec, hf_cache_dir=tmp_path, hf_token=None, simulate_gpus=False)
    labels = {k: v for k, v in plan.labels.items() if k not in (LABEL_INSTANCE_ID, LABEL_RESTARTS)}
    labels[LABEL_SPEC_HASH] = legacy_spec_hash(spec)
    old = docker_client.containers.run(
        plan.image,
        command=plan.command,
        entrypoint=plan.entrypoint,
        name=f"lmstack-{spec.name}",
        labels=labels,
        environment=plan.env,
        ports={f"{plan.engine_port}/tcp": ("0.0.0.0", plan.host_port)},
        detach=True,
    )
    await eventually(lambda: _healthy(plan.host_port), timeout=20)
    old.reload()
    started = old.attrs["State"]["StartedAt"]

    [listed] = [c for c in await runtime.list_containers() if c.container_id == old.id]
    assert (listed.instance_id, listed.restarts) == (spec.deployment_id, 0)

    # The controller's Deploy after the upgrade: the instance of the deployment's id.
    adopted = Recorder()
    await runtime.deploy(dataclasses.replace(spec, instance_id=spec.deployment_id), adopted)
    assert adopted.statuses == [PENDING, RUNNING], adopted.updates
    assert adopted.last.container_id == old.id
    old.reload()
    assert (old.name, old.status) == (f"lmstack-{spec.name}", "running")
    assert old.attrs["State"]["StartedAt"] == started  # not restarted
    assert (await runtime.probe(spec.deployment_id)).healthy
    assert "standin: starting engine" in await runtime.logs(spec.deployment_id, 50)


async def test_a_killed_engine_comes_back_after_the_backoff(
    runtime: DockerRuntime, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    spec = make_spec(instance_id=f"{uuid.uuid4()}")
    reports = Recorder()
    async with Supervisors(runtime, FAST) as supervisors:
        supervisors.attach(reports)
        await supervisors.deploy(spec)
        assert reports.statuses == [PENDING, STARTING, RUNNING], reports.updates
        first = reports.last
        docker_client.containers.get(first.container_id).kill()

        again = await eventually(
            lambda: [u for u in reports.updates if u.status == RUNNING],
            lambda running: len(running) == 2,
            timeout=30,
        )
    [error] = [u for u in reports.updates if u.status == ERROR]
    assert error.exit_code == 137 and not error.final
    assert error.message.startswith("engine exited with code 137; restart 1 in 0.2 s")
    assert again[-1].restarts == 1
    assert again[-1].container_id != first.container_id
    assert reports.statuses[-3:] == [PENDING, STARTING, RUNNING]
    container = docker_client.containers.get(again[-1].container_id)
    assert container.status == "running"
    assert container.labels[LABEL_RESTARTS] == "1"
    assert container.name == f"lmstack-{spec.name}-{spec.instance[:8]}"
    [listed] = [c for c in await runtime.list_containers() if c.instance_id == spec.instance]
    assert (listed.container_id, listed.restarts) == (container.id, 1)
    assert listed.started_at and listed.started_at == again[-1].started_at


async def test_a_paused_engine_fails_its_health_checks_and_is_restarted(
    runtime: DockerRuntime, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    spec = make_spec()
    reports = Recorder()
    async with Supervisors(runtime, FAST) as supervisors:
        supervisors.attach(reports)
        await supervisors.deploy(spec)
        first = reports.last
        assert first.status == RUNNING, reports.updates
        docker_client.containers.get(first.container_id).pause()
        again = await eventually(
            lambda: [u for u in reports.updates if u.status == RUNNING],
            lambda running: len(running) == 2,
            timeout=60,
        )
    [error] = [u for u in reports.updates if u.status == ERROR]
    assert "failed its health check 3 times in a row; restart 1 in 0.2 s" in error.message
    assert again[-1].restarts == 1
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(first.container_id)  # replaced
