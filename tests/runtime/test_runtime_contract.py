"""One contract, two runtimes: ``MemoryRuntime`` behaves as the real ``DockerRuntime``.

Every test runs against both: the in-memory double the session and controller tests
rely on, and ``DockerRuntime`` on the real Docker engine with the stand-in engine
image. What is checked is what ``agent.types.Runtime`` promises and the session
reads: the status sequence of a deploy and a stop, idempotent deploys, replacement on
a new spec, what ``list_containers`` says (ids, names, ports, spec hashes, states,
exit codes, instance ids, restarts), instances of one deployment kept apart, what
``probe`` sees, failed deploys that leave nothing behind, logs and followed logs,
and errors for instances that have no container. Only how a test makes an engine crash
or a deploy fail differs (``Subject``); the assertions are shared.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from agent.runtime import DockerRuntime
from agent.types import (
    ERROR,
    PENDING,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    ContainerState,
    DeploySpec,
    Runtime,
    spec_hash,
)
from shared.engines import EngineConfig
from shared.errors import ContainerError
from tests.dockerutil import free_port
from tests.runtime.conftest import Recorder
from tests.runtime.memory_runtime import MemoryRuntime
from tests.waiting import eventually

SpecFactory = Callable[..., DeploySpec]
_counter = itertools.count()


class ClosableRuntime(Runtime, Protocol):
    async def close(self) -> None: ...


@dataclass
class Subject:
    """A runtime under test and the two things only it knows how to stage."""

    runtime: ClosableRuntime
    make_spec: SpecFactory
    # A spec whose engine becomes ready, then exits with code 3 on its own after
    # ``crash`` (a no-op where the engine crashes by itself).
    crashing_spec: Callable[[], DeploySpec]
    crash: Callable[[DeploySpec], None]
    # A spec whose deploy fails after ``pending`` (the engine never gets ready).
    failing_spec: Callable[[], DeploySpec]


@pytest.fixture
def memory_subject() -> Subject:
    runtime = MemoryRuntime()

    def make_spec(**fields: Any) -> DeploySpec:
        n = next(_counter)
        values: dict[str, Any] = {
            "deployment_id": f"mem-{uuid.uuid4().hex[:12]}",
            "name": f"mem-d{n}",
            "backend": "vllm",
            "image": "lmstack-standin-engine:test",
            "model": "standin/test-model",
            "config": EngineConfig(),
            "host_port": free_port(),
        }
        values.update(fields)
        return DeploySpec(**values)

    def crash(spec: DeploySpec) -> None:
        runtime.exit_container(spec.deployment_id, 3, "simulated engine crash")

    def failing_spec() -> DeploySpec:
        spec = make_spec()
        runtime.fail_next_deploy(spec.deployment_id, "engine did not become ready")
        return spec

    return Subject(runtime, make_spec, make_spec, crash, failing_spec)


@pytest.fixture
def docker_subject(make_runtime: Callable[..., DockerRuntime], make_spec: SpecFactory) -> Subject:
    """The real runtime (``make_runtime`` closes it) on the stand-in engine image."""

    def crashing_spec() -> DeploySpec:
        return make_spec(env={"STANDIN_CRASH_AFTER": "1.5"})

    def failing_spec() -> DeploySpec:
        # The engine exits before it is ready.
        return make_spec(env={"STANDIN_START_DELAY": "30", "STANDIN_CRASH_AFTER": "0.3"})

    return Subject(make_runtime(), make_spec, crashing_spec, lambda _: None, failing_spec)


@pytest.fixture(params=["memory", "docker"])
def subject(request: pytest.FixtureRequest) -> Subject:
    # Looked up by name, so the memory runs need no Docker engine.
    made: Subject = request.getfixturevalue(f"{request.param}_subject")
    return made


async def _listed(runtime: Runtime, deployment_id: str) -> ContainerState | None:
    found = [c for c in await runtime.list_containers() if c.deployment_id == deployment_id]
    assert len(found) <= 1, found
    return found[0] if found else None


async def _deployed(subject: Subject, spec: DeploySpec) -> Recorder:
    recorder = Recorder()
    await subject.runtime.deploy(spec, recorder)
    assert recorder.statuses == [PENDING, STARTING, RUNNING], recorder.updates
    return recorder


async def _drain(follow: AsyncIterator[str]) -> str:
    return "".join([chunk async for chunk in follow])


async def test_info_says_the_runtime_is_available(subject: Subject) -> None:
    info = await subject.runtime.info()
    assert info.available
    assert info.version
    assert info.error == ""


async def test_deploy_reports_each_transition_and_lists_the_container(subject: Subject) -> None:
    spec = subject.make_spec()
    recorder = await _deployed(subject, spec)

    running = recorder.last
    assert len(running.container_id) == 64
    assert all(u.port == spec.host_port for u in recorder.updates)
    assert recorder.updates[1].container_id == running.container_id
    listed = await _listed(subject.runtime, spec.deployment_id)
    assert listed is not None
    assert (listed.container_id, listed.state, listed.host_port) == (
        running.container_id,
        "running",
        spec.host_port,
    )
    assert listed.name == f"lmstack-{spec.name}-{spec.instance[:8]}"
    assert listed.image == spec.image
    assert listed.spec_hash == spec_hash(spec)
    assert listed.started_at.endswith("Z")
    assert (listed.instance_id, listed.restarts) == (spec.instance, 0)
    assert running.started_at == listed.started_at
    assert all(
        (u.instance_id, u.deployment_id) == (spec.instance, spec.deployment_id)
        for u in recorder.updates
    )


async def test_deploying_the_same_spec_again_keeps_the_container(subject: Subject) -> None:
    spec = subject.make_spec()
    first = await _deployed(subject, spec)

    again = Recorder()
    await subject.runtime.deploy(spec, again)
    # Adopted, not restarted: no ``starting``, the same container. (DockerRuntime says
    # ``pending`` first while it looks; MemoryRuntime answers ``running`` at once.)
    assert again.statuses[-1] == RUNNING
    assert set(again.statuses) <= {PENDING, RUNNING}, again.statuses
    assert again.last.container_id == first.last.container_id
    listed = await _listed(subject.runtime, spec.deployment_id)
    assert listed is not None
    assert listed.container_id == first.last.container_id


async def test_deploying_another_spec_replaces_the_container(subject: Subject) -> None:
    spec = subject.make_spec()
    first = await _deployed(subject, spec)

    changed = dataclasses.replace(spec, model="standin/other-model")
    second = await _deployed(subject, changed)
    assert second.last.container_id != first.last.container_id
    listed = await _listed(subject.runtime, spec.deployment_id)
    assert listed is not None
    assert listed.container_id == second.last.container_id
    assert listed.spec_hash == spec_hash(changed) != spec_hash(spec)


async def test_stop_keeps_the_exited_container_and_stop_remove_deletes_it(
    subject: Subject,
) -> None:
    spec = subject.make_spec()
    container_id = (await _deployed(subject, spec)).last.container_id

    stopping = Recorder()
    await subject.runtime.stop(spec.deployment_id, False, stopping)
    assert stopping.statuses == [STOPPING, STOPPED]
    assert {u.container_id for u in stopping.updates} == {container_id}
    listed = await _listed(subject.runtime, spec.deployment_id)
    assert listed is not None
    assert (listed.container_id, listed.state) == (container_id, "exited")

    removing = Recorder()
    await subject.runtime.stop(spec.deployment_id, True, removing)
    assert removing.statuses == [STOPPING, STOPPED]
    assert await _listed(subject.runtime, spec.deployment_id) is None


async def test_stopping_an_unknown_deployment_just_reports_stopped(subject: Subject) -> None:
    recorder = Recorder()
    await subject.runtime.stop(f"unknown-{uuid.uuid4().hex[:8]}", True, recorder)
    assert recorder.statuses == [STOPPED]
    assert recorder.last.container_id == ""


async def test_a_failed_deploy_reports_error_and_leaves_nothing(subject: Subject) -> None:
    spec = subject.failing_spec()
    recorder = Recorder()
    await subject.runtime.deploy(spec, recorder)

    assert recorder.statuses[0] == PENDING
    assert recorder.statuses[-1] == ERROR
    assert recorder.last.message
    assert await _listed(subject.runtime, spec.deployment_id) is None


async def test_an_engine_that_exits_is_listed_with_its_exit_code_and_logs(
    subject: Subject,
) -> None:
    spec = subject.crashing_spec()
    container_id = (await _deployed(subject, spec)).last.container_id
    subject.crash(spec)

    listed = await eventually(
        lambda: _listed(subject.runtime, spec.deployment_id),
        lambda c: c is not None and c.state == "exited",
        timeout=20,
    )
    assert listed is not None
    assert (listed.container_id, listed.exit_code) == (container_id, 3)
    assert "simulated engine crash" in await subject.runtime.logs(spec.deployment_id, 50)


async def test_logs_and_followed_logs_of_a_running_engine(subject: Subject) -> None:
    spec = subject.make_spec()
    await _deployed(subject, spec)

    logs = await subject.runtime.logs(spec.deployment_id, 50)
    assert logs.strip()
    assert (await subject.runtime.logs(spec.deployment_id, 1)).strip().count("\n") == 0

    follow = subject.runtime.follow_logs(spec.deployment_id, 50)
    async with asyncio.timeout(20):
        assert await anext(follow)
        await subject.runtime.stop(spec.deployment_id, False, Recorder())
        await _drain(follow)  # ends with the container


async def test_unknown_deployments_have_no_logs(subject: Subject) -> None:
    unknown = f"unknown-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ContainerError):
        await subject.runtime.logs(unknown, 10)
    with pytest.raises(ContainerError):
        await anext(subject.runtime.follow_logs(unknown, 10))


async def test_instances_of_one_deployment_are_separate_containers(subject: Subject) -> None:
    one = subject.make_spec()
    two = dataclasses.replace(
        one, instance_id=f"{uuid.uuid4().hex[:8]}-two", host_port=free_port(), restarts=2
    )
    first, second = await _deployed(subject, one), await _deployed(subject, two)
    assert first.last.container_id != second.last.container_id
    assert {u.restarts for u in second.updates} == {2}

    listed = {
        c.instance_id: c
        for c in await subject.runtime.list_containers()
        if c.deployment_id == one.deployment_id
    }
    assert set(listed) == {one.instance, two.instance}
    assert listed[two.instance].name == f"lmstack-{one.name}-{two.instance[:8]}"
    assert listed[two.instance].restarts == 2

    await subject.runtime.stop(two.instance, True, Recorder())
    assert (await subject.runtime.probe(two.instance)).state == ""
    probe = await subject.runtime.probe(one.instance)
    assert (probe.state, probe.container_id) == ("running", first.last.container_id)


async def test_adopting_a_container_reports_its_restarts(subject: Subject) -> None:
    spec = dataclasses.replace(subject.make_spec(), restarts=3)
    container_id = (await _deployed(subject, spec)).last.container_id
    # The controller lost count (say, a fresh database): the container's label wins.
    again = Recorder()
    await subject.runtime.deploy(dataclasses.replace(spec, restarts=0), again)
    assert (again.last.status, again.last.container_id) == (RUNNING, container_id)
    assert again.last.restarts == 3


async def test_probe_tells_a_running_engine_from_an_exited_one(subject: Subject) -> None:
    spec = subject.crashing_spec()
    container_id = (await _deployed(subject, spec)).last.container_id
    probe = await eventually(lambda: subject.runtime.probe(spec.instance), lambda p: p.healthy)
    assert (probe.state, probe.container_id) == ("running", container_id)

    subject.crash(spec)
    probe = await eventually(
        lambda: subject.runtime.probe(spec.instance), lambda p: p.state == "exited", timeout=20
    )
    assert (probe.exit_code, probe.healthy) == (3, False)
    assert (await subject.runtime.probe(f"unknown-{uuid.uuid4().hex[:8]}")).state == ""
