"""Replicas through the CLI against the real controller and two live agents
(in-memory runtimes): ``create --replicas``, the REPLICAS column, the instances
of ``get``, ``scale``, ``update`` (the config merged onto the current one),
``stop``/``start``, and their refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli._commands.workers import labels
from tests.cli.conftest import Cli
from tests.conftest import Controller
from tests.fleetutil import RunningAgent, run_agent
from tests.runtime.memory_runtime import MemoryRuntime
from tests.waiting import eventually

MODEL = "org/tiny"


@dataclass
class Fleet:
    ctl: Controller
    agents: dict[str, RunningAgent]
    runtimes: dict[str, MemoryRuntime]


@pytest.fixture
async def fleet(controller: Controller, tmp_path: Path) -> AsyncIterator[Fleet]:
    """Agents ``gpu-a`` (labelled) and ``gpu-b`` (two GPUs each), disjoint engine
    port ranges."""
    runtimes = {"gpu-a": MemoryRuntime(), "gpu-b": MemoryRuntime()}
    ranges = {"gpu-a": "41000-41009", "gpu-b": "41010-41019"}
    async with (
        run_agent(
            controller, runtimes["gpu-a"], tmp_path / "a", name="gpu-a",
            engine_port_range=ranges["gpu-a"], labels={"zone": "eu", "gpu": "h100"},
        ) as a,
        run_agent(
            controller, runtimes["gpu-b"], tmp_path / "b", name="gpu-b",
            engine_port_range=ranges["gpu-b"],
        ) as b,
    ):  # fmt: skip
        yield Fleet(controller, {"gpu-a": a, "gpu-b": b}, runtimes)


async def deployment(ctl: Controller, name: str) -> dict[str, Any]:
    status, body = await ctl.admin("GET", "/api/deployments", params={"limit": "1000"})
    assert status == 200, body
    [found] = [d for d in body["items"] if d["name"] == name]
    assert isinstance(found, dict)
    return found


async def settled(ctl: Controller, name: str, ready: int) -> dict[str, Any]:
    """The deployment once exactly ``ready`` instances exist and all run."""

    def done(d: dict[str, Any]) -> bool:
        statuses = [i["status"] for i in d["instances"]]
        return d["ready_replicas"] == ready and statuses == ["running"] * ready

    return await eventually(lambda: deployment(ctl, name), done)


def rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.splitlines()]


async def test_create_with_replicas_lists_ready_of_desired_and_instances(
    admin_cli: Cli, fleet: Fleet
) -> None:
    created = await admin_cli.ok("deployments", "create", "tiny", "-m", MODEL, "--replicas", "2")
    assert "created deployment tiny" in created.out
    shown = await settled(fleet.ctl, "tiny", 2)
    assert shown["replicas"] == 2
    assert sorted(i["worker_name"] for i in shown["instances"]) == ["gpu-a", "gpu-b"]

    table = rows((await admin_cli.ok("deployments", "list")).out)
    assert table[0] == [
        "ID", "NAME", "MODEL", "BACKEND", "STATUS", "REPLICAS", "WORKER", "PORT", "CREATED",
    ]  # fmt: skip
    assert table[1][1:6] == ["tiny", MODEL, "vllm", "running", "2/2"]

    got = (await admin_cli.ok("deployments", "get", "tiny")).out
    fields, _, instances = got.partition("\nInstances:\n")
    assert "Replicas:" in fields and "2/2" in fields
    lines = rows(instances)
    assert lines[0] == [
        "ID", "WORKER", "STATUS", "RESTARTS", "LAST", "EXIT", "PORT", "GPUS", "SPEC", "STARTED",
        "MESSAGE",
    ]  # fmt: skip
    by_id = {i["id"][:8]: i for i in shown["instances"]}
    assert sorted(line[0] for line in lines[1:]) == sorted(by_id)
    for line in lines[1:]:
        instance = by_id[line[0]]
        assert line[1:5] == [instance["worker_name"], "running", "0", "-"]
        assert line[5] == str(instance["port"])


async def test_scale_up_down_and_refusals(admin_cli: Cli, fleet: Fleet) -> None:
    await admin_cli.ok("deployments", "create", "tiny", "-m", MODEL)
    await settled(fleet.ctl, "tiny", 1)

    scaled = await admin_cli.ok("deployments", "scale", "tiny", "2")
    assert scaled.out.startswith("scaled deployment tiny: ")
    assert scaled.out.rstrip().endswith("/2 replicas ready")
    await settled(fleet.ctl, "tiny", 2)

    down = (await admin_cli.ok("deployments", "scale", "tiny", "0", "--json")).json()
    assert down["replicas"] == 0
    await settled(fleet.ctl, "tiny", 0)
    listed = rows((await admin_cli.ok("deployments", "list")).out)
    assert listed[1][5] == "0/0"

    # Two workers with two GPUs each: 50 cannot fit; the API says why and keeps 0.
    too_many = await admin_cli("deployments", "scale", "tiny", "50")
    assert too_many.code == 1, too_many
    assert too_many.err.startswith("error: ") and "fit" in too_many.err.lower(), too_many.err
    assert (await deployment(fleet.ctl, "tiny"))["replicas"] == 0

    negative = await admin_cli("deployments", "scale", "tiny", "-1")
    words = await admin_cli("deployments", "scale", "tiny", "two")
    assert (negative.code, words.code) == (2, 2)
    assert "0 or more" in negative.err and "whole number" in words.err
    unknown = await admin_cli("deployments", "scale", "nope", "1")
    assert unknown.code == 1
    assert "no deployment with id or name 'nope'" in unknown.err


async def test_update_merges_onto_the_current_config(admin_cli: Cli, fleet: Fleet) -> None:
    created = await admin_cli.ok(
        "deployments", "create", "tiny", "-m", MODEL,
        "--config", "max_model_len=2048", "--config", "dtype=half", "--json",
    )  # fmt: skip
    deployment_id = created.json()["id"]
    before = await settled(fleet.ctl, "tiny", 1)

    updated = await admin_cli.ok(
        "deployments", "update", deployment_id,
        "--config", "max_model_len=4096", "--config", "enforce_eager=true", "--json",
    )  # fmt: skip
    body = updated.json()
    assert body["config"] == {"max_model_len": 4096, "dtype": "half", "enforce_eager": True}
    assert body["spec_version"] > before["spec_version"]
    # The rolling update ends with one instance of the new spec.
    rolled = await eventually(
        lambda: deployment(fleet.ctl, "tiny"),
        lambda d: (
            [i["spec_version"] for i in d["instances"]] == [body["spec_version"]]
            and d["ready_replicas"] == 1
        ),
    )
    assert rolled["config"] == body["config"]

    said = await admin_cli.ok(
        "deployments", "update", "tiny", "--unset", "dtype", "--image", "x/y:1"
    )
    assert said.out.startswith("updated deployment tiny: ")
    stored = await deployment(fleet.ctl, "tiny")
    assert stored["config"] == {"max_model_len": 4096, "enforce_eager": True, "image": "x/y:1"}

    await admin_cli.ok("deployments", "update", "tiny", "--model", "org/other")
    await admin_cli.ok("deployments", "update", "tiny", "--image", "x/y:2")
    stored = await deployment(fleet.ctl, "tiny")
    assert stored["model"] == "org/other" and stored["config"]["image"] == "x/y:2"
    assert stored["config"]["max_model_len"] == 4096


async def test_update_refusals(admin_cli: Cli, fleet: Fleet) -> None:
    await admin_cli.ok("deployments", "create", "tiny", "-m", MODEL, "--config", "dtype=half")
    nothing = await admin_cli("deployments", "update", "tiny")
    absent = await admin_cli("deployments", "update", "tiny", "--unset", "max_model_len")
    bad_pair = await admin_cli("deployments", "update", "tiny", "--config", "oops")
    assert [r.code for r in (nothing, absent, bad_pair)] == [2, 2, 2]
    assert "nothing to update" in nothing.err and "max_model_len" in absent.err

    invalid = await admin_cli("deployments", "update", "tiny", "--config", "max_model_len=-5")
    assert invalid.code == 1, invalid
    assert invalid.err.startswith("error: ") and "max_model_len" in invalid.err
    unknown_key = await admin_cli("deployments", "update", "tiny", "--config", "no_such_key=1")
    assert unknown_key.code == 1 and "no_such_key" in unknown_key.err
    assert (await deployment(fleet.ctl, "tiny"))["config"] == {"dtype": "half"}


async def test_stop_and_start_keep_the_deployment(admin_cli: Cli, fleet: Fleet) -> None:
    await admin_cli.ok("deployments", "create", "tiny", "-m", MODEL, "--replicas", "2")
    await settled(fleet.ctl, "tiny", 2)

    stopped = await admin_cli.ok("deployments", "stop", "tiny")
    assert stopped.out.startswith("stopped deployment tiny: ")
    after = await eventually(
        lambda: deployment(fleet.ctl, "tiny"),
        lambda d: d["stopped"] and d["ready_replicas"] == 0 and not d["instances"],
    )
    assert after["replicas"] == 2
    got = await admin_cli.ok("deployments", "get", "tiny")
    assert "Stopped:" in got.out and "yes" in got.out

    started = (await admin_cli.ok("deployments", "start", "tiny", "--json")).json()
    assert started["stopped"] is False and started["replicas"] == 2
    await settled(fleet.ctl, "tiny", 2)

    missing = await admin_cli("deployments", "stop", "00000000-0000-4000-8000-000000000000")
    assert missing.code == 1 and "not found" in missing.err.lower()


async def test_changes_need_an_admin(admin_cli: Cli, other_cli: Cli, fleet: Fleet) -> None:
    await admin_cli.ok("deployments", "create", "tiny", "-m", MODEL)
    await admin_cli.ok("users", "create", "viewer", "--password-stdin", stdin="viewer-password\n")
    await other_cli.login("viewer", "viewer-password")
    for args in (("scale", "tiny", "3"), ("stop", "tiny"), ("update", "tiny", "-m", "x/y")):
        refused = await other_cli("deployments", *args)
        assert refused.code == 3, (args, refused)
    assert (await deployment(fleet.ctl, "tiny"))["replicas"] == 1


async def test_workers_show_their_labels(admin_cli: Cli, fleet: Fleet) -> None:
    # The GPUs column has spaces: cut the LABELS column at its header's offsets.
    head, *lines = (await admin_cli.ok("workers", "list")).out.splitlines()
    start, end = head.index("LABELS"), head.index("AGENT")
    shown = {line.split()[1]: line[start:end].strip() for line in lines}
    assert shown == {"gpu-a": "gpu=h100,zone=eu", "gpu-b": "-"}
    got = (await admin_cli.ok("workers", "get", "gpu-a")).out
    assert "Labels:" in got and "gpu=h100,zone=eu" in got
    listed = (await admin_cli.ok("workers", "list", "--json")).json()["items"]
    assert {w["name"]: w["labels"] for w in listed}["gpu-a"] == {"gpu": "h100", "zone": "eu"}


def test_worker_labels_print_sorted() -> None:
    assert labels({"labels": {"zone": "eu", "gpu": "a100"}}) == "gpu=a100,zone=eu"
    assert labels({"labels": {}}) == ""
    assert labels({}) == ""
