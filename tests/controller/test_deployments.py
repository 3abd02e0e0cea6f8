"""``/api/deployments`` over the real server: shapes, filters, validation.

Creating a deployment places it, so the tests that create one connect a worker
with two GPUs for it to land on (a raw agent that reports nothing, so statuses
stay put). Placement itself is tested in ``tests/scheduler``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller import appkeys
from controller.store import Deployment, Instance, Worker
from controller.store.models import new_id
from tests.conftest import Controller
from tests.scheduler.workers import raw_worker

MISSING = "00000000-0000-0000-0000-000000000000"
DEPLOYMENT_KEYS = {
    "id", "name", "backend", "model", "status", "status_message", "worker_id",
    "container_id", "port", "gpu_indices", "created_at", "updated_at", "config",
    # Replicas (issue 13): the desired count, its state and the instances.
    "replicas", "ready_replicas", "stopped", "spec_version", "rollout_error", "instances",
}  # fmt: skip


async def add_worker(ctl: Controller, name: str = "gpu-1", status: str = "online") -> str:
    async with ctl.app[appkeys.DATABASE].session() as session:
        worker = Worker(name=name, status=status)
        session.add(worker)
        await session.commit()
        return worker.id


async def add_deployment(ctl: Controller, name: str, worker_id: str | None) -> str:
    """A deployment row placed on ``worker_id`` as if its agent had gone away
    (with its one instance, of its own id, as the upgrade to replicas makes it)."""
    async with ctl.app[appkeys.DATABASE].session() as session:
        row = Deployment(name=name, backend="vllm", model="m", worker_id=worker_id, port=40000)
        row.id = new_id()
        session.add(row)
        if worker_id is not None:
            await session.flush()
            session.add(Instance(id=row.id, deployment_id=row.id, worker_id=worker_id,
                                 port=40000, model="m", config={}))  # fmt: skip
        await session.commit()
        return row.id


@pytest.fixture
async def agent_worker(controller: Controller) -> AsyncIterator[str]:
    """The id of an online worker with two GPUs."""
    async with raw_worker(controller, "gpu-worker-01", gpus=2) as worker:
        yield worker.id


async def create(ctl: Controller, **body: Any) -> dict[str, Any]:
    payload = {"name": "llama2-7b", "model": "meta-llama/Llama-2-7b-chat-hf", **body}
    status, created = await ctl.admin("POST", "/api/deployments", json=payload)
    assert status == 201, created
    assert isinstance(created, dict)
    return created


async def test_create_get_list_delete(controller: Controller, agent_worker: str) -> None:
    config = {"gpu_memory_utilization": 0.9, "max_model_len": 4096}
    created = await create(controller, backend="vllm", config=config)
    assert set(created) == {"id", "name", "status"}
    assert created["name"] == "llama2-7b" and created["status"] == "pending"

    status, one = await controller.admin("GET", f"/api/deployments/{created['id']}")
    assert status == 200
    assert set(one) == DEPLOYMENT_KEYS
    assert one["config"] == config
    assert one["backend"] == "vllm"
    # Placed by the scheduler: the only online worker, a GPU and a port.
    assert one["worker_id"] == agent_worker
    assert one["gpu_indices"] == [0] and one["port"] == 40000
    assert one["created_at"].endswith("Z") and one["updated_at"].endswith("Z")

    status, listing = await controller.admin("GET", "/api/deployments")
    assert status == 200
    assert listing["total"] == 1 and listing["items"] == [one]

    status, body = await controller.admin("DELETE", f"/api/deployments/{created['id']}")
    assert (status, body) == (204, None)
    status, _ = await controller.admin("GET", f"/api/deployments/{created['id']}")
    assert status == 404


async def test_list_pagination_and_filters(controller: Controller) -> None:
    worker_id = await add_worker(controller)
    # Rows straight into the store: no agent changes their status meanwhile.
    ids = [await add_deployment(controller, f"model-{i:02d}", None) for i in range(12)]
    async with controller.app[appkeys.DATABASE].session() as session:
        for deployment_id in ids[:3]:
            row = await session.get(Deployment, deployment_id)
            assert row is not None
            row.status = "running"
            row.worker_id = worker_id
        await session.commit()

    status, page = await controller.admin(
        "GET", "/api/deployments", params={"skip": "5", "limit": "4"}
    )
    assert status == 200
    assert page["total"] == 12
    assert [item["id"] for item in page["items"]] == ids[5:9]

    status, running = await controller.admin(
        "GET", "/api/deployments", params={"status": "running"}
    )
    assert running["total"] == 3 and {i["id"] for i in running["items"]} == set(ids[:3])

    params = {"worker_id": worker_id, "status": "pending"}
    status, none = await controller.admin("GET", "/api/deployments", params=params)
    assert status == 200 and none == {"items": [], "total": 0}

    status, by_worker = await controller.admin(
        "GET", "/api/deployments", params={"worker_id": worker_id}
    )
    assert by_worker["total"] == 3


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"skip": "-1"}, "skip"),
        ({"skip": "abc"}, "skip"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"status": "sleeping"}, "status"),
    ],
)
async def test_bad_query_is_422(controller: Controller, params: dict[str, str], field: str) -> None:
    status, body = await controller.admin("GET", "/api/deployments", params=params)
    assert status == 422
    assert body["status_code"] == 422
    assert ["query", field] in [err["loc"] for err in body["errors"]]
    assert field in body["detail"]


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"model": "m"}, ["name"]),
        ({"name": "x"}, ["model"]),
        ({"name": 5, "model": "m"}, ["name"]),
        ({"name": "Bad Name!", "model": "m"}, ["name"]),
        ({"name": "x", "model": "m", "backend": "tgi"}, ["backend"]),
        (
            {"name": "x", "model": "m", "config": {"gpu_memory_utilization": 0}},
            ["config", "gpu_memory_utilization"],
        ),
        (
            {"name": "x", "model": "m", "config": {"gpu_memory_utilization": 1.5}},
            ["config", "gpu_memory_utilization"],
        ),
        ({"name": "x", "model": "m", "config": {"max_model_len": 0}}, ["config", "max_model_len"]),
        ({"name": "x", "model": "m", "config": {"max_model_len": -5}}, ["config", "max_model_len"]),
        (
            {"name": "x", "model": "m", "config": {"tensor_parallel_size": "two"}},
            ["config", "tensor_parallel_size"],
        ),
        ({"name": "x", "model": "m", "config": {"dtype": "int3"}}, ["config", "dtype"]),
        ({"name": "x", "model": "m", "config": {"extra_args": "--x"}}, ["config", "extra_args"]),
        (
            {"name": "x", "model": "m", "config": {"env": {"1BAD": "v"}}},
            ["config", "env", "1BAD", "[key]"],
        ),
        ({"name": "x", "model": "m", "config": {"max_batch": 8}}, ["config", "max_batch"]),
        ({"name": "x", "model": "m", "colour": "red"}, ["colour"]),
        ({"name": "x", "model": "m", "config": {"gpu_ids": [0, 0]}}, ["config", "gpu_ids"]),
        ({"name": "x", "model": "m", "config": {"gpu_ids": []}}, ["config", "gpu_ids"]),
        ({"name": "x", "model": "m", "config": {"gpu_ids": [-1]}}, ["config", "gpu_ids", 0]),
        (
            {"name": "x", "model": "m", "config": {"gpu_ids": [0, 1], "gpu_count": 1}},
            ["config", "gpu_ids"],
        ),
        (
            {
                "name": "x",
                "model": "m",
                "config": {"gpu_ids": [0, 1, 2], "tensor_parallel_size": 2},
            },
            ["config", "gpu_ids"],
        ),
        (
            {"name": "x", "model": "m", "config": {"gpu_count": 0, "tensor_parallel_size": 2}},
            ["config", "gpu_count"],
        ),
        (
            {"name": "x", "model": "m", "config": {"gpu_count": 3, "tensor_parallel_size": 2}},
            ["config", "gpu_count"],
        ),
        ({"name": "x", "model": "m", "config": {"gpu_count": -1}}, ["config", "gpu_count"]),
        ({"name": "x", "model": "m", "config": {"gpu_count": True}}, ["config", "gpu_count"]),
        ({"name": "x", "model": "m", "worker_id": 7}, ["worker_id"]),
    ],
)
async def test_invalid_body_is_422_naming_the_field(
    controller: Controller, payload: dict[str, Any], loc: list[str | int]
) -> None:
    status, body = await controller.admin("POST", "/api/deployments", json=payload)
    assert status == 422, body
    assert loc in [err["loc"] for err in body["errors"]]
    assert str(loc[-1] if loc[-1] != "[key]" else loc[-2]) in body["detail"]


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"', "", "\xff"])
async def test_malformed_body_is_422(controller: Controller, raw: str) -> None:
    status, body = await controller.admin("POST", "/api/deployments", data=raw.encode("latin-1"))
    assert status == 422
    assert body["status_code"] == 422 and body["detail"]


async def test_full_config_is_accepted(controller: Controller, agent_worker: str) -> None:
    config = {
        "gpu_memory_utilization": 0.45,
        "max_model_len": 8192,
        "tensor_parallel_size": 2,
        "dtype": "bfloat16",
        "quantization": "awq",
        "image": "vllm/vllm-openai:v0.6.0",
        "env": {"VLLM_LOGGING_LEVEL": "DEBUG"},
        "extra_args": ["--enable-prefix-caching"],
        "served_model_name": "llama",
        "max_num_seqs": 64,
        "trust_remote_code": True,
        "enforce_eager": False,
        "revision": "main",
        "startup_timeout": 600,
    }
    created = await create(controller, config=config)
    _, one = await controller.admin("GET", f"/api/deployments/{created['id']}")
    assert one["config"] == config


async def test_duplicate_name_is_409(controller: Controller, agent_worker: str) -> None:
    await create(controller, name="dup", config={"gpu_count": 0})
    status, body = await controller.admin(
        "POST", "/api/deployments", json={"name": "dup", "model": "m"}
    )
    assert status == 409
    assert "dup" in body["detail"]


@pytest.mark.parametrize("deployment_id", [MISSING, "not-a-uuid", "1"])
@pytest.mark.parametrize("suffix", ["", "/logs"])
async def test_unknown_or_malformed_id_is_404(
    controller: Controller, deployment_id: str, suffix: str
) -> None:
    status, body = await controller.admin("GET", f"/api/deployments/{deployment_id}{suffix}")
    assert status == 404
    assert deployment_id in body["detail"]
    if not suffix:
        status, _ = await controller.admin("DELETE", f"/api/deployments/{deployment_id}")
        assert status == 404


async def test_worker_must_exist_and_be_online(controller: Controller) -> None:
    status, body = await controller.admin(
        "POST", "/api/deployments", json={"name": "a", "model": "m", "worker_id": MISSING}
    )
    assert status == 404 and MISSING in body["detail"]
    offline = await add_worker(controller, "gpu-off", status="offline")
    status, body = await controller.admin(
        "POST", "/api/deployments", json={"name": "a", "model": "m", "worker_id": offline}
    )
    assert status == 503 and "offline" in body["detail"]
    status, listing = await controller.admin("GET", "/api/deployments")
    assert listing["total"] == 0


async def test_logs_without_agent_is_503(controller: Controller) -> None:
    unplaced = await add_deployment(controller, "unplaced", None)
    status, body = await controller.admin("GET", f"/api/deployments/{unplaced}/logs")
    assert status == 503 and "not placed" in body["detail"]
    worker_id = await add_worker(controller)
    # A worker row without a connected agent cannot take new deployments...
    status, body = await controller.admin(
        "POST", "/api/deployments", json={"name": "p", "model": "m", "worker_id": worker_id}
    )
    assert status == 503 and "offline" in body["detail"]
    # ...and cannot serve the logs of the ones it has.
    placed = await add_deployment(controller, "placed", worker_id)
    status, body = await controller.admin(
        "GET", f"/api/deployments/{placed}/logs", params={"lines": "10"}
    )
    assert status == 503 and "agent" in body["detail"]
    status, body = await controller.admin(
        "GET", f"/api/deployments/{placed}/logs", params={"lines": "0"}
    )
    assert status == 422
