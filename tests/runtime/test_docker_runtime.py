"""DockerRuntime against the real Docker engine, with the stand-in engine image."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp
import docker
import docker.errors
import pytest

from agent.runtime import DockerRuntime
from agent.runtime._containers import iso_z
from agent.types import (
    DOWNLOADING,
    ERROR,
    LABEL_BACKEND,
    LABEL_DEPLOYMENT_ID,
    LABEL_DEPLOYMENT_NAME,
    LABEL_HOST_PORT,
    LABEL_INSTANCE_ID,
    LABEL_MANAGED,
    LABEL_RESTARTS,
    LABEL_SPEC_HASH,
    PENDING,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    DeploySpec,
)
from shared.engines import EngineConfig
from shared.errors import ContainerError, RuntimeUnavailable
from tests.dockerutil import TEST_LABEL, has_nvidia_runtime
from tests.runtime.conftest import Recorder

SpecFactory = Callable[..., DeploySpec]


def containers_of(client: docker.DockerClient, deployment_id: str) -> list[Any]:
    return client.containers.list(
        all=True, filters={"label": f"{LABEL_DEPLOYMENT_ID}={deployment_id}"}
    )


async def get_json(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        if body is None:
            async with http.get(url) as response:
                return response.status, await response.json()
        async with http.post(url, json=body) as response:
            return response.status, await response.json()


async def test_lifecycle_deploy_serve_redeploy_stop(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
) -> None:
    spec = make_spec()
    await runtime.deploy(spec, recorder)

    assert recorder.statuses == [PENDING, STARTING, RUNNING], recorder.updates
    running = recorder.last
    assert running.container_id and running.port == spec.host_port
    assert recorder.updates[1].container_id == running.container_id

    base = f"http://127.0.0.1:{spec.host_port}"
    status, body = await get_json(f"{base}/health")
    assert status == 200
    status, body = await get_json(
        f"{base}/v1/chat/completions",
        {"model": spec.name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    )
    assert status == 200
    assert body["model"] == spec.name
    assert body["usage"]["completion_tokens"] == 3

    logs = await runtime.logs(spec.deployment_id, 50)
    assert "standin: starting engine" in logs
    assert f"--served-model-name {spec.name}" in logs
    assert "POST /v1/chat/completions -> 200" in logs

    [state] = [c for c in await runtime.list_containers() if c.deployment_id == spec.deployment_id]
    assert state.container_id == running.container_id
    assert state.name == f"lmstack-{spec.name}-{spec.instance[:8]}"
    assert state.state == "running"
    assert state.host_port == spec.host_port
    assert state.image == spec.image
    assert state.started_at

    container = docker_client.containers.get(running.container_id)
    labels = container.labels
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_DEPLOYMENT_NAME] == spec.name
    assert labels[LABEL_HOST_PORT] == str(spec.host_port)
    assert labels[LABEL_BACKEND] == "vllm"
    assert labels[LABEL_SPEC_HASH] == state.spec_hash
    assert labels[LABEL_INSTANCE_ID] == spec.instance
    assert labels[LABEL_RESTARTS] == "0"
    host_config = container.attrs["HostConfig"]
    assert host_config["IpcMode"] == "host"
    assert host_config["RestartPolicy"]["Name"] in ("", "no")
    assert not host_config.get("DeviceRequests")
    assert any(b.endswith(":/root/.cache/huggingface:rw") for b in host_config["Binds"])
    assert "HF_TOKEN=hf_test_token" in container.attrs["Config"]["Env"]

    # Same spec again: the running container is adopted, not restarted.
    started = container.attrs["State"]["StartedAt"]
    assert iso_z(started) == state.started_at == running.started_at
    again = Recorder()
    await runtime.deploy(spec, again)
    assert again.statuses == [PENDING, RUNNING]
    assert again.last.container_id == running.container_id
    container.reload()
    assert container.attrs["State"]["StartedAt"] == started

    stopped = Recorder()
    await runtime.stop(spec.deployment_id, True, stopped)
    assert stopped.statuses == [STOPPING, STOPPED]
    assert stopped.last.container_id == running.container_id
    assert stopped.last.exit_code == 0  # the stand-in exits cleanly on SIGTERM
    assert containers_of(docker_client, spec.deployment_id) == []
    assert all(c.deployment_id != spec.deployment_id for c in await runtime.list_containers())

    # Stopping what is not there is not an error.
    gone = Recorder()
    await runtime.stop(spec.deployment_id, True, gone)
    assert gone.statuses == [STOPPED]


async def test_changed_spec_replaces_container(
    runtime: DockerRuntime, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    spec = make_spec()
    first = Recorder()
    await runtime.deploy(spec, first)
    assert first.last.status == RUNNING

    config = EngineConfig.from_mapping({**spec.config.to_mapping(), "max_model_len": 2048})
    changed = DeploySpec(**{**spec.__dict__, "config": config})
    second = Recorder()
    await runtime.deploy(changed, second)
    assert second.statuses == [PENDING, STARTING, RUNNING]
    assert second.last.container_id != first.last.container_id
    [container] = containers_of(docker_client, spec.deployment_id)
    assert container.id == second.last.container_id
    assert "--max-model-len 2048" in await runtime.logs(spec.deployment_id, 5)


async def test_stopped_container_is_recreated(
    runtime: DockerRuntime, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    spec = make_spec()
    first = Recorder()
    await runtime.deploy(spec, first)
    stopped = Recorder()
    await runtime.stop(spec.deployment_id, False, stopped)
    assert stopped.statuses == [STOPPING, STOPPED]
    [exited] = [c for c in await runtime.list_containers() if c.deployment_id == spec.deployment_id]
    assert exited.state == "exited"

    second = Recorder()
    await runtime.deploy(spec, second)
    assert second.statuses == [PENDING, STARTING, RUNNING]
    [container] = containers_of(docker_client, spec.deployment_id)
    assert container.id == second.last.container_id != first.last.container_id


async def test_crash_reports_exit_code_and_logs(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
) -> None:
    spec = make_spec(env={"STANDIN_START_DELAY": "30", "STANDIN_CRASH_AFTER": "0.3"})
    await runtime.deploy(spec, recorder)

    assert recorder.statuses == [PENDING, STARTING, ERROR]
    error = recorder.last
    assert error.exit_code == 3
    assert "exited with code 3" in error.message
    assert "simulated engine crash" in error.message
    assert "simulated CUDA failure" in error.message  # stderr is included too
    assert containers_of(docker_client, spec.deployment_id) == []


async def test_startup_timeout_is_an_error(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
) -> None:
    spec = make_spec(env={"STANDIN_START_DELAY": "60"}, config={"startup_timeout": 1})
    await runtime.deploy(spec, recorder)

    assert recorder.statuses == [PENDING, STARTING, ERROR]
    assert "within 1s" in recorder.last.message
    assert "standin: starting engine" in recorder.last.message
    assert containers_of(docker_client, spec.deployment_id) == []


async def test_gpu_request_without_nvidia_runtime_fails_cleanly(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
) -> None:
    if has_nvidia_runtime(docker_client):
        pytest.skip("this host has the NVIDIA runtime; a GPU request would succeed")
    spec = make_spec(gpu_indices=(0,))
    await runtime.deploy(spec, recorder)

    assert recorder.statuses == [PENDING, ERROR]
    assert "cannot give GPUs 0" in recorder.last.message
    assert containers_of(docker_client, spec.deployment_id) == []


async def test_simulated_gpus_pass_indices_as_env(
    make_runtime: Callable[..., DockerRuntime],
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
) -> None:
    runtime = make_runtime(simulate_gpus=True)
    spec = make_spec(gpu_indices=(0, 1))
    await runtime.deploy(spec, recorder)

    assert recorder.last.status == RUNNING, recorder.updates
    container = docker_client.containers.get(recorder.last.container_id)
    assert not container.attrs["HostConfig"].get("DeviceRequests")
    assert "CUDA_VISIBLE_DEVICES=0,1" in container.attrs["Config"]["Env"]


async def test_host_port_in_use_is_an_error(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("0.0.0.0", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        spec = make_spec(host_port=port)
        await runtime.deploy(spec, recorder)

    assert recorder.statuses == [PENDING, ERROR]
    assert f"host port {port} cannot be bound" in recorder.last.message
    assert containers_of(docker_client, spec.deployment_id) == []


async def test_pull_failure_is_an_error(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
) -> None:
    # Nothing listens on port 1: the pull fails at once, without any registry.
    image = "127.0.0.1:1/lmstack/missing:latest"
    spec = make_spec(image=image)
    await runtime.deploy(spec, recorder)

    assert recorder.statuses == [PENDING, DOWNLOADING, ERROR]
    assert image in recorder.updates[1].message
    assert f"pulling image {image} failed" in recorder.last.message
    assert containers_of(docker_client, spec.deployment_id) == []


async def test_name_taken_by_foreign_container_is_an_error(
    runtime: DockerRuntime,
    make_spec: SpecFactory,
    recorder: Recorder,
    docker_client: docker.DockerClient,
    session_prefix: str,
    engine_image: str,
) -> None:
    spec = make_spec()
    foreign = docker_client.containers.create(
        engine_image,
        name=f"lmstack-{spec.name}-{spec.instance[:8]}",
        labels={TEST_LABEL: session_prefix},
    )
    try:
        await runtime.deploy(spec, recorder)
        assert recorder.statuses == [PENDING, ERROR]
        assert "not managed by LMStack" in recorder.last.message
        foreign.reload()  # still there: LMStack never removes what is not its own
    finally:
        foreign.remove(force=True)


async def test_follow_logs_streams_new_lines_and_ends_with_the_container(
    runtime: DockerRuntime, make_spec: SpecFactory, recorder: Recorder
) -> None:
    spec = make_spec()
    await runtime.deploy(spec, recorder)
    assert recorder.statuses[-1] == RUNNING
    follow = runtime.follow_logs(spec.deployment_id, 5)
    seen = ""
    async with asyncio.timeout(20):
        while "standin: starting engine" not in seen:
            seen += await anext(follow)
        status, _ = await get_json(f"http://127.0.0.1:{spec.host_port}/health")
        assert status == 200
        while "GET /health -> 200" not in seen:
            seen += await anext(follow)
        await runtime.stop(spec.deployment_id, False, recorder)
        # The container stopped: the follow drains what is left, then ends.
        async for chunk in follow:
            seen += chunk
    assert "standin: stopped" in seen


async def test_follow_logs_can_be_left_early(
    runtime: DockerRuntime, make_spec: SpecFactory, recorder: Recorder
) -> None:
    spec = make_spec()
    await runtime.deploy(spec, recorder)
    follow = runtime.follow_logs(spec.deployment_id, 5)
    async with asyncio.timeout(20):
        assert await anext(follow)
        assert isinstance(follow, AsyncGenerator)
        await follow.aclose()  # the reader thread ends; nothing lingers


async def test_follow_logs_of_unknown_deployment(runtime: DockerRuntime) -> None:
    with pytest.raises(ContainerError):
        await anext(runtime.follow_logs("no-such-deployment", 10))


async def test_logs_of_unknown_deployment(runtime: DockerRuntime) -> None:
    with pytest.raises(ContainerError):
        await runtime.logs("no-such-deployment", 10)


async def test_info_reports_engine(runtime: DockerRuntime) -> None:
    info = await runtime.info()
    assert info.available
    assert info.version


async def test_unreachable_engine(
    make_runtime: Callable[..., DockerRuntime], make_spec: SpecFactory, recorder: Recorder
) -> None:
    runtime = make_runtime(docker_host="tcp://127.0.0.1:1")

    info = await runtime.info()
    assert not info.available
    assert "127.0.0.1:1" in info.error

    with pytest.raises(RuntimeUnavailable):
        await runtime.list_containers()

    spec = make_spec()
    await runtime.deploy(spec, recorder)
    assert recorder.statuses == [PENDING, ERROR]
    assert "not reachable" in recorder.last.message
