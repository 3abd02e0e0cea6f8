"""``Supervisors`` on their own, over MemoryRuntime: what the session builds on."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from agent.restarts import RestartTimings
from agent.supervisor import Phase, Supervisors
from agent.types import ERROR, RUNNING, DeploySpec, StatusUpdate
from shared.engines import EngineConfig
from tests.agent.controller_stub import wait_until
from tests.clock import ManualClock
from tests.runtime.memory_runtime import MemoryRuntime

FAST = RestartTimings(
    backoff_initial=0.05, backoff_max=1.0, reset_after=600.0, health_check_interval=0.01
)
SPEC = DeploySpec(
    deployment_id="d1",
    instance_id="i1",
    name="qwen",
    backend="vllm",
    image="img",
    model="m",
    config=EngineConfig(),
    host_port=41000,
)


class Reports(list[StatusUpdate]):
    async def __call__(self, update: StatusUpdate) -> None:
        self.append(update)

    def of(self, status: str) -> list[StatusUpdate]:
        return [u for u in self if u.status == status]


async def test_a_healthy_run_of_reset_after_starts_the_backoff_over() -> None:
    runtime, reports, clock = MemoryRuntime(), Reports(), ManualClock()
    async with Supervisors(runtime, FAST, clock=clock) as supervisors:
        supervisors.attach(reports)
        await supervisors.deploy(SPEC)
        for n in (1, 2):
            runtime.exit_container("i1", 3)
            await wait_until(lambda: len(reports.of(RUNNING)) == n + 1)  # noqa: B023
        # Two quick crashes: 0.05 s, then 0.1 s. A crash after ten healthy
        # minutes waits 0.05 s again, not 0.2 s.
        clock.advance(600)
        runtime.exit_container("i1", 3)
        await wait_until(lambda: len(reports.of(ERROR)) == 3)
    assert [e.message.split(";")[1] for e in reports.of(ERROR)] == [
        " restart 1 in 0.05 s",
        " restart 2 in 0.1 s",
        " restart 3 in 0.05 s",
    ]


async def test_leaving_the_context_cancels_supervisors_and_leaves_engines_running() -> None:
    runtime, reports = MemoryRuntime(), Reports()
    slow = replace(FAST, backoff_initial=60.0, backoff_max=60.0)
    async with Supervisors(runtime, slow) as supervisors:
        supervisors.attach(reports)
        await supervisors.deploy(SPEC)
        await supervisors.deploy(replace(SPEC, instance_id="i2", host_port=41001))
        runtime.exit_container("i2", 3)
        await wait_until(lambda: supervisors.phase("i2") is Phase.BACKING_OFF)
    # Nothing was stopped, and the pending restart was not made.
    states = {c.instance_id: c.state for c in await runtime.list_containers()}
    assert states == {"i1": "running", "i2": "exited"}
    assert ("stop", "i1") not in runtime.instance_events
    assert runtime.deploys("i2") == 1


async def test_reports_without_a_reporter_are_dropped_and_restarts_go_on() -> None:
    runtime, reports = MemoryRuntime(), Reports()
    async with Supervisors(runtime, FAST) as supervisors:
        supervisors.attach(reports)
        await supervisors.deploy(SPEC)
        supervisors.detach(reports)
        runtime.exit_container("i1", 3)
        await wait_until(lambda: runtime.deploys("i1") == 2)
        assert supervisors.restarts("i1") == 1
        [listed] = supervisors.overlay(await runtime.list_containers())
        assert listed.restarts == 1
    assert [u.status for u in reports] == ["pending", "starting", "running"]


async def test_a_deploy_of_the_same_spec_joins_the_attempt_in_flight() -> None:
    runtime, reports = MemoryRuntime(), Reports()
    async with Supervisors(runtime, FAST) as supervisors:
        supervisors.attach(reports)
        release = runtime.gate("i1")
        first = asyncio.ensure_future(supervisors.deploy(SPEC))
        await wait_until(lambda: [u.status for u in reports] == ["pending"])
        second = asyncio.ensure_future(supervisors.deploy(SPEC))
        await asyncio.sleep(0)
        assert not first.done() and not second.done()
        release.set()
        await asyncio.gather(first, second)
    assert runtime.instance_events.count(("deploy", "i1")) == 1
    assert [u.status for u in reports] == ["pending", "starting", "running"]


async def test_a_new_spec_replaces_the_supervised_one_and_counts_on() -> None:
    runtime, reports = MemoryRuntime(), Reports()
    async with Supervisors(runtime, FAST) as supervisors:
        supervisors.attach(reports)
        await supervisors.deploy(SPEC)
        runtime.exit_container("i1", 3)
        await wait_until(lambda: len(reports.of(RUNNING)) == 2)
        await supervisors.deploy(replace(SPEC, model="m2"))
    assert runtime.instance_specs["i1"].model == "m2"
    assert reports[-1].status == RUNNING and reports[-1].restarts == 1
    [container] = await runtime.list_containers()
    assert container.restarts == 1  # the new container's label carries the count
