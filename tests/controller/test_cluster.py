"""Cluster ownership and engine port ranges through the real controller and the
real agent session (in-memory runtime): the cluster id is made once and kept,
reaches the agent and labels its containers; reconciliation removes only this
cluster's orphans and lists the rest as foreign; an agent's declared port range
is stored, shown and used for its deployments' ports."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from agent.types import DeploySpec
from controller import appkeys
from controller.fleet.ownership import ours
from shared.engines import EngineConfig
from shared.proto.lmstack.v1 import agent_pb2
from tests.conftest import AGENT_TOKEN, Controller
from tests.controller.rawagent import RawAgent, hello
from tests.controller.test_fleet import wait_status
from tests.fleetutil import run_agent, worker_view
from tests.runtime.memory_runtime import MemoryRuntime
from tests.waiting import eventually


@pytest.fixture
async def ctl(tmp_path: Path, database_url: str) -> Any:
    controller = Controller(
        data_dir=tmp_path / "data",
        database_url=database_url,
        overrides={"heartbeat_interval": 0.2, "agent_request_timeout": 1.0},
    )
    await controller.start()
    yield controller
    await controller.close()


def planted(name: str, cluster_id: str, deployment_id: str = "") -> DeploySpec:
    return DeploySpec(
        deployment_id=deployment_id or str(uuid.uuid4()),
        name=name,
        backend="vllm",
        image="img",
        model="m",
        config=EngineConfig.from_mapping({}),
        host_port=45000,
        cluster_id=cluster_id,
    )


async def test_the_cluster_id_is_made_once_and_sent_in_welcome(
    ctl: Controller, tmp_path: Path
) -> None:
    cluster_id = ctl.app[appkeys.CLUSTER_ID]
    assert uuid.UUID(cluster_id)
    raw = RawAgent(ctl.grpc_target, AGENT_TOKEN)
    raw.send(hello("raw"))
    assert (await raw.read()).welcome.cluster_id == cluster_id
    await raw.close()
    await ctl.restart()
    assert ctl.app[appkeys.CLUSTER_ID] == cluster_id


async def test_another_data_dir_is_another_cluster(ctl: Controller, tmp_path: Path) -> None:
    other = Controller(data_dir=tmp_path / "other")
    await other.start()
    try:
        assert other.app[appkeys.CLUSTER_ID] != ctl.app[appkeys.CLUSTER_ID]
    finally:
        await other.close()


async def test_reconcile_removes_only_this_clusters_orphans(
    ctl: Controller, tmp_path: Path
) -> None:
    cluster_id = ctl.app[appkeys.CLUSTER_ID]
    runtime = MemoryRuntime()
    theirs = runtime.plant(planted("theirs", f"other-{uuid.uuid4()}"))
    unlabelled = runtime.plant(planted("old-unknown", ""))
    orphan = runtime.plant(planted("orphan", cluster_id))
    async with run_agent(ctl, runtime, tmp_path / "agent") as agent:
        await eventually(lambda: ("stopped", orphan.deployment_id) in runtime.events)
        created = await ctl.create_deployment(name="mine", model="m", worker_id=agent.worker_id)
        await wait_status(ctl, created["id"], "running")
        assert runtime.specs[created["id"]].cluster_id == cluster_id
        status, body = await ctl.admin("GET", f"/api/workers/{agent.worker_id}/containers")
        assert status == 200
        # Names are lmstack-<deployment>-<short instance id>: keyed by the first part.
        listed = {c["name"].rsplit("-", 1)[0]: c for c in body["containers"]}
        assert set(listed) == {"lmstack-theirs", "lmstack-old-unknown", "lmstack-mine"}
        assert listed["lmstack-theirs"]["foreign"] is True
        assert listed["lmstack-theirs"]["cluster_id"] == theirs.cluster_id
        assert listed["lmstack-old-unknown"]["foreign"] is True
        assert listed["lmstack-old-unknown"]["cluster_id"] == ""
        assert (
            listed["lmstack-mine"] | {"foreign": False, "cluster_id": cluster_id}
            == (listed["lmstack-mine"])
        )
    stops = {d for kind, d in runtime.events if kind == "stop"}
    assert stops == {orphan.deployment_id}
    assert unlabelled.deployment_id not in stops and theirs.deployment_id not in stops


def test_unlabelled_containers_are_ours_when_their_deployment_is_known() -> None:
    known = agent_pb2.ContainerInfo(deployment_id="d-1")
    assert ours("c", known, {"d-1"})
    assert not ours("c", known, set())
    assert ours("c", agent_pb2.ContainerInfo(deployment_id="x", cluster_id="c"))
    assert not ours("c", agent_pb2.ContainerInfo(deployment_id="d-1", cluster_id="z"), {"d-1"})


async def test_the_agents_port_range_is_stored_shown_and_used(
    ctl: Controller, tmp_path: Path
) -> None:
    runtime = MemoryRuntime()
    async with (
        run_agent(ctl, runtime, tmp_path / "a", engine_port_range="41000-41001") as ranged,
        run_agent(ctl, MemoryRuntime(), tmp_path / "b", name="plain") as plain,
    ):
        worker = await worker_view(ctl, ranged.worker_id)
        assert worker["engine_ports"] == {"min": 41000, "max": 41001, "source": "agent"}
        default = ctl.app[appkeys.SCHEDULER].ports
        assert (await worker_view(ctl, plain.worker_id))["engine_ports"] == {
            "min": default.low, "max": default.high, "source": "controller"
        }  # fmt: skip
        ports = []
        for name in ("one", "two"):
            made = await ctl.create_deployment(name=name, model="m", worker_id=ranged.worker_id)
            ports.append((await wait_status(ctl, made["id"], "running"))["port"])
        assert ports == [41000, 41001]
        status, body = await ctl.admin(
            "POST",
            "/api/deployments",
            json={"name": "three", "model": "m", "worker_id": ranged.worker_id},
        )
        assert status == 409
        assert "no free host port in 41000-41001" in body["detail"]
        _, listing = await ctl.admin("GET", "/api/workers")
        shown = {w["name"]: w["engine_ports"] for w in listing["items"]}
        assert shown["gpu-worker-01"]["min"] == 41000


@pytest.mark.parametrize(("low", "high"), [(5, 3), (0, 40000), (40000, 70000)])
async def test_a_hello_with_a_bad_port_range_is_refused(
    ctl: Controller, low: int, high: int
) -> None:
    raw = RawAgent(ctl.grpc_target, AGENT_TOKEN)
    raw.send(hello("ranged", engine_port_min=low, engine_port_max=high))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{low}-{high}" in str(info.value.details())
    await raw.close()
    _, workers = await ctl.admin("GET", "/api/workers")
    assert workers["items"] == []
