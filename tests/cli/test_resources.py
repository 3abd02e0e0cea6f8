"""Deployments, workers, keys and users through the CLI: tables, --json, errors."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cli._commands import new_lines
from controller.schemas import DEPLOYMENT_STATUSES
from tests.cli.conftest import Cli
from tests.conftest import Controller
from tests.fleetutil import RunningAgent, run_agent, wait_until
from tests.runtime.memory_runtime import MemoryRuntime


def header(table: str) -> list[str]:
    return table.splitlines()[0].split()


@pytest.fixture
async def agent(controller: Controller, tmp_path: Path) -> AsyncIterator[RunningAgent]:
    """A live agent named ``gpu-cli`` on an in-memory runtime, so deployments place."""
    async with run_agent(controller, MemoryRuntime(), tmp_path / "agent", name="gpu-cli") as run:
        yield run


async def test_deployment_create_get_list_delete(admin_cli: Cli, agent: RunningAgent) -> None:
    created = await admin_cli.ok(
        "deployments", "create", "qwen-small", "--model", "Qwen/Qwen2.5-0.5B-Instruct",
        "--config-json", '{"max_model_len": 2048, "enforce_eager": false}',
        "--config", "gpu_memory_utilization=0.45", "--config", "max_model_len=4096",
        "--config", "dtype=half", "--json",
    )  # fmt: skip
    body = created.json()
    assert body["name"] == "qwen-small"
    assert body["status"] in DEPLOYMENT_STATUSES

    got = (await admin_cli.ok("deployments", "get", "qwen-small", "--json")).json()
    assert got["id"] == body["id"]
    assert got["backend"] == "vllm"
    assert got["worker_id"] == agent.worker_id
    assert got["config"] == {
        "gpu_memory_utilization": 0.45,
        "max_model_len": 4096,
        "enforce_eager": False,
        "dtype": "half",
    }

    table = (await admin_cli.ok("deployments", "list")).out
    assert header(table) == [
        "ID",
        "NAME",
        "MODEL",
        "BACKEND",
        "STATUS",
        "REPLICAS",
        "WORKER",
        "PORT",
        "CREATED",
    ]
    row = table.splitlines()[1].split()
    assert row[:4] == [body["id"], "qwen-small", "Qwen/Qwen2.5-0.5B-Instruct", "vllm"]
    assert row[4] in DEPLOYMENT_STATUSES
    assert row[5] in ("0/1", "1/1")
    assert row[6] == "gpu-cli"

    listed = (await admin_cli.ok("--json", "deployments", "list")).json()
    assert [d["name"] for d in listed["items"]] == ["qwen-small"]
    assert listed["total"] == 1

    deleted = await admin_cli.ok("deployments", "delete", body["id"])
    assert "deleted" in deleted.out
    missing = await admin_cli("deployments", "get", body["id"])
    assert missing.code == 1
    assert missing.err.startswith("error: ")
    assert "not found" in missing.err.lower()


async def test_invalid_deployment_names_the_field(admin_cli: Cli) -> None:
    result = await admin_cli("deployments", "create", "Bad Name", "--model", "m")

    assert result.code == 1
    assert "name" in result.err
    assert result.out == ""


async def test_unknown_deployment_name(admin_cli: Cli) -> None:
    result = await admin_cli("deployments", "delete", "no-such-deployment")

    assert result.code == 1
    assert "no deployment with id or name 'no-such-deployment'" in result.err


async def test_usage_errors_exit_2(admin_cli: Cli) -> None:
    missing_model = await admin_cli("deployments", "create", "x")
    bad_pair = await admin_cli("deployments", "create", "x", "--model", "m", "--config", "oops")
    bad_json = await admin_cli("deployments", "create", "x", "-m", "m", "--config-json", "[1]")
    unknown = await admin_cli("deployments", "explode")

    assert [r.code for r in (missing_model, bad_pair, bad_json, unknown)] == [2, 2, 2, 2]
    assert "KEY=VALUE" in bad_pair.err
    assert "JSON object" in bad_json.err


async def test_logs_of_unknown_deployment_fail(admin_cli: Cli) -> None:
    result = await admin_cli("deployments", "logs", "00000000-0000-4000-8000-000000000000")

    assert result.code == 1
    assert result.err.startswith("error: ")
    assert "not found" in result.err.lower()


async def test_workers_and_logs_with_a_live_agent(
    admin_cli: Cli, controller: Controller, tmp_path: Path
) -> None:
    runtime = MemoryRuntime()
    async with run_agent(controller, runtime, tmp_path / "agent", name="gpu-cli") as agent:
        workers = (await admin_cli.ok("workers", "list", "--json")).json()["items"]
        assert [(w["name"], w["status"]) for w in workers] == [("gpu-cli", "online")]
        table = (await admin_cli.ok("workers", "list")).out
        assert "gpu-cli" in table
        assert "online" in table

        created = await admin_cli.ok(
            "deployments", "create", "tiny", "-m", "org/tiny", "--worker", "gpu-cli", "--json"
        )
        deployment_id = created.json()["id"]
        await wait_until(lambda: ("deployed", deployment_id) in runtime.events)

        detail = (await admin_cli.ok("workers", "get", "gpu-cli", "--json")).json()
        assert detail["id"] == agent.worker_id
        assert [d["name"] for d in detail["deployments"]] == ["tiny"]
        shown = (await admin_cli.ok("workers", "get", agent.worker_id)).out
        assert "Deployments:" in shown
        assert "tiny" in shown

        logs = await admin_cli.ok("deployments", "logs", "tiny", "--lines", "10")
        assert logs.out == "engine vllm serving org/tiny\n"

        await follow_logs(admin_cli, runtime, deployment_id)


async def follow_logs(cli: Cli, runtime: MemoryRuntime, deployment_id: str) -> None:
    proc = await cli.start("deployments", "logs", "tiny", "--follow", "--interval", "0.1")
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 10)
    assert first == b"engine vllm serving org/tiny\n"

    runtime.exit_container(deployment_id, 1, "CUDA out of memory", "engine exited")
    second = await asyncio.wait_for(proc.stdout.readline(), 10)
    third = await asyncio.wait_for(proc.stdout.readline(), 10)
    assert (second, third) == (b"CUDA out of memory\n", b"engine exited\n")

    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert proc.stderr is not None
    assert await proc.stderr.read() == b""


def test_new_lines_after_overlap() -> None:
    assert new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert new_lines(["a", "b"], ["a", "b"]) == []
    assert new_lines([], ["x"]) == ["x"]
    assert new_lines(["a"], ["z"]) == ["z"]


async def test_api_keys(admin_cli: Cli) -> None:
    created = (await admin_cli.ok("keys", "create", "my-app", "--json")).json()
    assert created["key"].startswith("lmsk_")
    shown = await admin_cli.ok("keys", "create", "other-app")
    assert "lmsk_" in shown.out
    assert "not shown again" in shown.out

    listed = (await admin_cli.ok("keys", "list", "--json")).json()["items"]
    assert sorted(k["name"] for k in listed) == ["my-app", "other-app"]
    assert all("key" not in k for k in listed)
    table = (await admin_cli.ok("keys", "list")).out
    assert f"lmsk_...{created['hint']}" in table

    await admin_cli.ok("keys", "delete", created["id"])
    left = (await admin_cli.ok("keys", "list", "--json")).json()["items"]
    assert [k["name"] for k in left] == ["other-app"]


async def test_users_lifecycle(admin_cli: Cli, other_cli: Cli) -> None:
    created = await admin_cli.ok(
        "users", "create", "alice", "--email", "alice@example.com", "--password-stdin", "--json",
        stdin="alice-password-1\n",
    )  # fmt: skip
    assert created.json()["is_admin"] is False

    await other_cli.login("alice", "alice-password-1")
    forbidden = await other_cli("users", "list")
    assert forbidden.code == 3
    assert forbidden.err.startswith("error: ")
    assert (await other_cli.ok("deployments", "list", "--json")).json()["items"] == []

    updated = await admin_cli.ok("users", "update", "alice", "--admin", "--email", "", "--json")
    assert updated.json()["is_admin"] is True
    assert updated.json()["email"] is None
    users = (await other_cli.ok("users", "list", "--json")).json()["items"]
    assert sorted(u["username"] for u in users) == ["admin", "alice"]

    nothing = await admin_cli("users", "update", "alice")
    assert nothing.code == 2

    await admin_cli.ok("users", "delete", "alice")
    table = (await admin_cli.ok("users", "list")).out
    assert "alice" not in table
    assert "admin" in table


async def test_admin_cannot_delete_themselves(admin_cli: Cli) -> None:
    result = await admin_cli("users", "delete", "admin")

    assert result.code == 1
    assert "own account" in result.err
