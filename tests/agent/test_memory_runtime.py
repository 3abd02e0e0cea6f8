"""MemoryRuntime keeps the Runtime contract the session relies on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

import pytest

from agent.types import DeploySpec, StatusUpdate, spec_hash
from shared.engines import EngineConfig
from shared.errors import ContainerError
from tests.runtime.memory_runtime import MemoryRuntime

_BASE = DeploySpec(
    deployment_id="d1",
    name="qwen",
    backend="vllm",
    image="vllm/vllm-openai:latest",
    model="Qwen/Qwen2.5-0.5B-Instruct",
    config=EngineConfig(max_model_len=4096),
    host_port=40001,
)


def _spec(deployment_id: str = "d1", **changes: Any) -> DeploySpec:
    return replace(_BASE, deployment_id=deployment_id, **changes)


class _Reports:
    def __init__(self) -> None:
        self.updates: list[StatusUpdate] = []

    async def __call__(self, update: StatusUpdate) -> None:
        self.updates.append(update)

    @property
    def names(self) -> list[str]:
        return [u.status for u in self.updates]


async def test_deploy_same_spec_twice_keeps_the_container() -> None:
    runtime, reports = MemoryRuntime(), _Reports()
    await runtime.deploy(_spec(), reports)
    await runtime.deploy(_spec(), reports)

    assert reports.names == ["pending", "starting", "running", "running"]
    assert reports.updates[2].started_at.endswith("Z")
    assert reports.updates[2].container_id == reports.updates[3].container_id
    [container] = await runtime.list_containers()
    assert (container.state, container.spec_hash) == ("running", spec_hash(_spec()))


async def test_deploy_of_another_spec_replaces_the_container() -> None:
    runtime, reports = MemoryRuntime(), _Reports()
    await runtime.deploy(_spec(), reports)
    await runtime.deploy(_spec(config=EngineConfig(max_model_len=8192)), reports)

    assert reports.names == ["pending", "starting", "running"] * 2
    assert reports.updates[2].container_id != reports.updates[5].container_id
    assert len(await runtime.list_containers()) == 1


async def test_failed_deploy_reports_error_and_leaves_nothing() -> None:
    runtime, reports = MemoryRuntime(), _Reports()
    runtime.fail_next_deploy("d1", "image not found")
    await runtime.deploy(_spec(), reports)

    assert reports.names == ["pending", "error"]
    assert reports.updates[-1].message == "image not found"
    assert await runtime.list_containers() == []


async def test_stop_keeps_or_removes_the_container() -> None:
    runtime, reports = MemoryRuntime(), _Reports()
    await runtime.deploy(_spec("d1"), reports)
    await runtime.deploy(_spec("d2", name="other"), reports)
    await runtime.stop("d1", False, reports)
    await runtime.stop("d2", True, reports)
    await runtime.stop("unknown", True, reports)

    assert reports.names[-5:] == ["stopping", "stopped", "stopping", "stopped", "stopped"]
    assert [(c.deployment_id, c.state) for c in await runtime.list_containers()] == [
        ("d1", "exited")
    ]


async def test_exit_container_sets_exit_code_and_logs() -> None:
    runtime, reports = MemoryRuntime(), _Reports()
    await runtime.deploy(_spec(), reports)
    runtime.exit_container("d1", 1, "Traceback (most recent call last):", "ValueError: boom")

    [container] = await runtime.list_containers()
    assert (container.state, container.exit_code) == ("exited", 1)
    assert await runtime.logs("d1", 1) == "ValueError: boom"
    assert (await runtime.logs("d1", 100)).count("\n") == 2


async def test_logs_of_unknown_deployment_raise_container_error() -> None:
    with pytest.raises(ContainerError, match="d9"):
        await MemoryRuntime().logs("d9", 10)


async def test_unavailable_runtime_says_why() -> None:
    info = await MemoryRuntime(available=False, error="no socket").info()
    assert (info.available, info.error) == (False, "no socket")


async def test_follow_logs_sends_the_tail_then_new_lines_until_the_container_stops() -> None:
    runtime = MemoryRuntime()
    await runtime.deploy(_spec(), _Reports())
    runtime.append_log("d1", "line 2", "line 3")
    follow = runtime.follow_logs("d1", 2)
    assert await anext(follow) == "line 2\nline 3\n"
    waiting = asyncio.ensure_future(anext(follow))
    await asyncio.sleep(0)
    assert runtime.followers("d1") == 1
    runtime.append_log("d1", "line 4")
    assert await waiting == "line 4\n"
    await runtime.stop("d1", False, _Reports())
    with pytest.raises(StopAsyncIteration):
        await anext(follow)
    assert runtime.followers("d1") == 0


async def test_follow_logs_with_zero_tail_skips_old_lines_and_closing_frees_it() -> None:
    runtime = MemoryRuntime()
    await runtime.deploy(_spec(), _Reports())
    follow = runtime.follow_logs("d1", 0)
    waiting = asyncio.ensure_future(anext(follow))
    await asyncio.sleep(0)
    runtime.append_log("d1", "fresh")
    assert await waiting == "fresh\n"
    waiting = asyncio.ensure_future(anext(follow))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert isinstance(follow, AsyncGenerator)
    await follow.aclose()
    assert runtime.followers("d1") == 0


async def test_follow_logs_of_unknown_deployment_raise_container_error() -> None:
    with pytest.raises(ContainerError):
        await anext(MemoryRuntime().follow_logs("nope", 10))


async def test_instances_of_one_deployment_are_separate_containers() -> None:
    runtime, reports = MemoryRuntime(), _Reports()
    await runtime.deploy(_spec(instance_id="i-one"), reports)
    await runtime.deploy(_spec(instance_id="i-two", host_port=40002, restarts=3), reports)

    listed = {c.instance_id: c for c in await runtime.list_containers()}
    assert set(listed) == {"i-one", "i-two"}
    assert listed["i-one"].name == "lmstack-qwen-i-one"
    assert (listed["i-two"].deployment_id, listed["i-two"].restarts) == ("d1", 3)
    assert {(u.instance_id, u.deployment_id) for u in reports.updates} == {
        ("i-one", "d1"),
        ("i-two", "d1"),
    }
    await runtime.stop("i-one", True, reports)
    assert [c.instance_id for c in await runtime.list_containers()] == ["i-two"]
    # Hooks take a deployment id too (its first instance), for tests before instances.
    runtime.exit_container("d1", 4)
    assert (await runtime.probe("i-two")).exit_code == 4


async def test_a_legacy_container_is_the_instance_of_its_deployments_id() -> None:
    runtime, reports = MemoryRuntime(), _Reports()
    spec = _spec(config=EngineConfig(max_model_len=4096, max_parallel=2))
    planted = runtime.plant(spec, legacy=True)
    assert (planted.name, planted.instance_id) == ("lmstack-qwen", "d1")

    await runtime.deploy(replace(spec, instance_id="d1"), reports)
    assert reports.names == ["running"]
    assert reports.updates[0].container_id == planted.container_id


async def test_probe_reports_state_and_health() -> None:
    runtime = MemoryRuntime()
    assert (await runtime.probe("d1")).state == ""
    await runtime.deploy(_spec(), _Reports())
    assert (await runtime.probe("d1")).healthy
    runtime.set_healthy("d1", False)
    probe = await runtime.probe("d1")
    assert (probe.state, probe.healthy) == ("running", False)
    runtime.exit_container("d1", 3)
    probe = await runtime.probe("d1")
    assert (probe.state, probe.exit_code, probe.healthy) == ("exited", 3, False)


async def test_crash_next_deploy_exits_before_ready_and_leaves_nothing() -> None:
    runtime, reports = MemoryRuntime(), _Reports()
    runtime.crash_next_deploy("d1", 3, "boom")
    await runtime.deploy(_spec(), reports)
    assert reports.names == ["pending", "starting", "error"]
    assert reports.updates[-1].exit_code == 3
    assert "before it was ready" in reports.updates[-1].message
    assert "boom" in reports.updates[-1].message
    assert await runtime.list_containers() == []
