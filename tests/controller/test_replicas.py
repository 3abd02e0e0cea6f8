"""Replicas through the real controller and real agent sessions (in-memory
runtime, simulated GPUs): spread placement, scaling (to 0 and back), stop and
start, rolling updates (and one that halts), rescheduling after a lost worker
and stopping the surplus when it returns, and bad PATCH bodies."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Controller
from tests.fleetutil import RunningAgent, run_agent, worker_view
from tests.runtime.memory_runtime import MemoryRuntime
from tests.waiting import eventually


@pytest.fixture
async def ctl(tmp_path: Path, database_url: str) -> AsyncIterator[Controller]:
    controller = Controller(
        data_dir=tmp_path / "data",
        database_url=database_url,
        overrides={
            "heartbeat_interval": 0.2,
            "agent_request_timeout": 1.0,
            "reconcile_interval": 0.2,
        },
    )
    await controller.start()
    yield controller
    await controller.close()


@contextlib.asynccontextmanager
async def agents(
    ctl: Controller, tmp_path: Path, runtimes: list[MemoryRuntime]
) -> AsyncIterator[list[RunningAgent]]:
    async with contextlib.AsyncExitStack() as stack:
        running = [
            await stack.enter_async_context(
                run_agent(ctl, runtime, tmp_path / f"agent-{i}", name=f"worker-{i}")
            )
            for i, runtime in enumerate(runtimes)
        ]
        yield running


async def view(ctl: Controller, deployment_id: str) -> dict[str, Any]:
    status, body = await ctl.admin("GET", f"/api/deployments/{deployment_id}")
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def settled(
    ctl: Controller, deployment_id: str, ready: int, *, spec_version: int | None = None
) -> dict[str, Any]:
    """Wait until exactly ``ready`` instances exist, all running (of ``spec_version``)."""

    def done(seen: dict[str, Any]) -> bool:
        instances = seen["instances"]
        return (
            seen["ready_replicas"] == ready
            and len(instances) == ready
            and all(i["status"] == "running" and not i["draining"] for i in instances)
            and (spec_version is None or all(i["spec_version"] == spec_version for i in instances))
            # The documented fields are the first running instance's.
            and (not instances or seen["worker_id"] == instances[0]["worker_id"])
        )

    return await eventually(
        lambda: view(ctl, deployment_id),
        done,
        message=lambda seen: f"not settled at {ready}: {seen['status']} {seen['instances']}",
    )


async def patch(ctl: Controller, deployment_id: str, **body: Any) -> tuple[int, Any]:
    return await ctl.admin("PATCH", f"/api/deployments/{deployment_id}", json=body)


async def test_replicas_spread_scale_and_roll(ctl: Controller, tmp_path: Path) -> None:
    runtimes = [MemoryRuntime() for _ in range(3)]
    async with agents(ctl, tmp_path, runtimes) as running:
        created = await ctl.create_deployment(name="llama", model="m", replicas=3)
        seen = await settled(ctl, created["id"], 3)
        # Spread: one instance per worker; the documented fields are the first's.
        workers = {i["worker_id"] for i in seen["instances"]}
        assert workers == {a.worker_id for a in running}
        assert seen["status"] == "running" and seen["replicas"] == 3
        assert seen["worker_id"] == seen["instances"][0]["worker_id"]
        assert seen["port"] == seen["instances"][0]["port"]
        for runtime in runtimes:
            assert len(runtime.specs) == 1

        # Scale down: two instances drain, stop and are removed.
        status, body = await patch(ctl, created["id"], replicas=1)
        assert status == 200 and body["replicas"] == 1, body
        seen = await settled(ctl, created["id"], 1)
        kept = seen["instances"][0]["id"]
        stopped = [r for r in runtimes if any(k == "stopped" for k, _ in r.events)]
        assert len(stopped) == 2

        # Scale to 0 frees every GPU; another deployment can have them; and back.
        status, body = await patch(ctl, created["id"], replicas=0)
        assert status == 200, body
        await eventually(
            lambda: view(ctl, created["id"]),
            lambda s: s["status"] == "stopped" and not s["instances"],
        )
        for agent in running:
            worker = await worker_view(ctl, agent.worker_id)
            assert all(d["reserved"] == 0 for d in worker["gpu_info"]["devices"])
        big = await ctl.create_deployment(
            name="big", model="m", worker_id=running[0].worker_id, config={"gpu_count": 2}
        )
        await settled(ctl, big["id"], 1)
        status, _ = await ctl.admin("DELETE", f"/api/deployments/{big['id']}")
        assert status == 204
        status, body = await patch(ctl, created["id"], replicas=2)
        assert status == 200, body
        seen = await settled(ctl, created["id"], 2)
        assert kept not in {i["id"] for i in seen["instances"]}

        # A config change rolls: every instance is replaced by one of spec 2.
        before = {i["id"] for i in seen["instances"]}
        status, body = await patch(ctl, created["id"], config={"max_model_len": 4096})
        assert status == 200 and body["spec_version"] == 2, body
        seen = await settled(ctl, created["id"], 2, spec_version=2)
        assert not before & {i["id"] for i in seen["instances"]}
        assert seen["config"] == {"max_model_len": 4096}
        assert seen["rollout_error"] == ""

        # A serving key alone changes no instance.
        ids = {i["id"] for i in seen["instances"]}
        status, body = await patch(
            ctl, created["id"], config={"max_model_len": 4096, "drain_timeout": 5}
        )
        assert status == 200 and body["spec_version"] == 2, body
        assert {i["id"] for i in body["instances"]} == ids


async def test_a_failing_new_instance_halts_the_rollout(ctl: Controller, tmp_path: Path) -> None:
    runtimes = [MemoryRuntime() for _ in range(2)]
    async with agents(ctl, tmp_path, runtimes):
        created = await ctl.create_deployment(
            name="roll", model="m", replicas=2, config={"restart_policy": "never"}
        )
        seen = await settled(ctl, created["id"], 2)
        old = {i["id"] for i in seen["instances"]}
        for runtime in runtimes:
            runtime.fail_next_deploy(created["id"], "engine exited with code 3")
        status, body = await patch(ctl, created["id"], model="broken/model")
        assert status == 200, body
        halted = await eventually(
            lambda: view(ctl, created["id"]),
            lambda s: bool(s["rollout_error"]) and len(s["instances"]) == 2,
        )
        assert "code 3" in halted["rollout_error"]
        assert {i["id"] for i in halted["instances"]} == old
        assert halted["status"] == "running" and halted["ready_replicas"] == 2
        assert "rolling update halted" in halted["status_message"]


async def test_stop_and_start_keep_the_deployment(ctl: Controller, tmp_path: Path) -> None:
    async with agents(ctl, tmp_path, [MemoryRuntime()]) as running:
        created = await ctl.create_deployment(name="s", model="m", replicas=2)
        await settled(ctl, created["id"], 2)
        status, body = await ctl.admin("POST", f"/api/deployments/{created['id']}/stop")
        assert status == 200 and body["stopped"] is True, body
        await eventually(
            lambda: view(ctl, created["id"]),
            lambda s: s["status"] == "stopped" and not s["instances"],
        )
        worker = await worker_view(ctl, running[0].worker_id)
        assert all(d["reserved"] == 0 for d in worker["gpu_info"]["devices"])
        status, body = await ctl.admin("POST", f"/api/deployments/{created['id']}/start")
        assert status == 200 and body["stopped"] is False, body
        seen = await settled(ctl, created["id"], 2)
        assert seen["replicas"] == 2


async def test_replicas_that_do_not_fit_are_refused_with_how_many_fit(
    ctl: Controller, tmp_path: Path
) -> None:
    async with agents(ctl, tmp_path, [MemoryRuntime()]):
        # One worker, two GPUs: 3 whole-GPU replicas do not fit, 2 would.
        status, body = await ctl.admin(
            "POST", "/api/deployments", json={"name": "n", "model": "m", "replicas": 3}
        )
        assert status == 409, body
        assert "2 of 3" in body["detail"]
        created = await ctl.create_deployment(name="n", model="m", replicas=1)
        status, body = await patch(ctl, created["id"], replicas=5)
        assert status == 409 and "of 4" in body["detail"], body
        seen = await view(ctl, created["id"])
        assert seen["replicas"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, None),
        ({"replicas": -1}, "replicas"),
        ({"replicas": "2"}, "replicas"),
        ({"config": {"no_such_key": 1}}, "no_such_key"),
        ({"model": ""}, "model"),
        ({"replicas": None}, None),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_patch_bodies_are_422_naming_the_field(
    ctl: Controller, tmp_path: Path, body: dict[str, Any], field: str | None
) -> None:
    async with agents(ctl, tmp_path, [MemoryRuntime()]):
        created = await ctl.create_deployment(name="p", model="m")
        status, answer = await patch(ctl, created["id"], **body)
        assert status == 422, answer
        if field is not None:
            assert field in str(answer["errors"]), answer
        status, answer = await ctl.admin(
            "PATCH", "/api/deployments/00000000-0000-0000-0000-000000000000", json={"replicas": 1}
        )
        assert status == 404, answer


async def test_a_lost_worker_is_replaced_and_its_surplus_stopped_on_return(
    ctl: Controller, tmp_path: Path
) -> None:
    stays, leaves = MemoryRuntime(), MemoryRuntime()
    async with run_agent(ctl, stays, tmp_path / "a", name="stays") as kept:
        async with run_agent(ctl, leaves, tmp_path / "b", name="leaves") as lost:
            created = await ctl.create_deployment(
                name="r", model="m", replicas=2, config={"reschedule_after": 1}
            )
            seen = await settled(ctl, created["id"], 2)
            on_lost = next(i for i in seen["instances"] if i["worker_id"] == lost.worker_id)
        # The worker is gone; after the grace its instance is placed on the other.
        seen = await eventually(
            lambda: view(ctl, created["id"]),
            lambda s: (
                s["ready_replicas"] == 2
                and len(s["instances"]) == 2
                and all(i["worker_id"] == kept.worker_id for i in s["instances"])
            ),
            timeout=30,
        )
        assert on_lost["id"] not in {i["id"] for i in seen["instances"]}
        # It returns: its instance is the surplus, stopped and removed.
        async with run_agent(ctl, leaves, tmp_path / "b", name="leaves"):
            await eventually(lambda: ("stopped", on_lost["id"]) in leaves.instance_events)
            seen = await settled(ctl, created["id"], 2)
            assert all(i["worker_id"] == kept.worker_id for i in seen["instances"])
