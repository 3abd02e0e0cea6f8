"""Replicas on the real Docker engine: several ``lmstack-agent`` processes on this
host, each with its own name, state directory, engine port range and simulated
GPU, behind one real controller. A deployment of 3 replicas lands on 3 workers;
a killed engine comes back with ``restarts`` 1 after the back-off; a worker lost
past ``reschedule_after`` has its instance placed elsewhere and, on its return,
its surplus engine stopped; a rolling update under steady traffic through the
gateway fails no request; scale to 0 frees the GPU for another deployment, and
back; the upgrade migration adopts the container of the agent before instances
without restarting it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import docker
import docker.errors
import openai
from alembic import command

from agent.backends.container import plan_container
from agent.session._wire import deploy_spec
from agent.types import (
    LABEL_CLUSTER_ID,
    LABEL_INSTANCE_ID,
    LABEL_RESTARTS,
    LABEL_SPEC_HASH,
    legacy_spec_hash,
)
from controller.fleet.messages import deploy_message
from controller.store import Database, Instance
from controller.store.migrate import alembic_config
from tests.conftest import Controller
from tests.dockerutil import free_port_range
from tests.e2e.conftest import AgentProcess
from tests.waiting import eventually

# The agents restart a failed engine after 1 s (10 s in production) and check
# health every 0.5 s.
FAST_RESTARTS = {"LMSTACK_RESTART_BACKOFF_INITIAL": "1", "LMSTACK_HEALTH_CHECK_INTERVAL": "0.5"}


def engine_config(image: str, **more: Any) -> dict[str, Any]:
    """A stand-in engine that takes one whole simulated 24 GiB GPU."""
    return {
        "image": image,
        "env": {"STANDIN_START_DELAY": "0.3"},
        "startup_timeout": 30,
        "max_model_len": 2048,
        "gpu_memory_utilization": 0.9,
        "drain_timeout": 5,
        **more,
    }


async def start_fleet(agents: Any, prefix: str, count: int) -> list[tuple[AgentProcess, str]]:
    """``count`` agent processes on this host, each with one simulated GPU and its
    own engine port range: each and its worker id, once all are online."""
    fleet = []
    for index in range(count):
        low, high = free_port_range(4)
        agent: AgentProcess = agents(
            f"{prefix}-w{index}",
            args=("--simulate-gpus", "1x24", "--engine-port-range", f"{low}-{high}"),
            env=FAST_RESTARTS,
        )
        await agent.start()
        fleet.append(agent)
    return [(agent, await agent.wait_online()) for agent in fleet]


async def get(ctl: Controller, deployment_id: str) -> dict[str, Any]:
    status, row = await ctl.admin("GET", f"/api/deployments/{deployment_id}")
    assert status == 200, row
    assert isinstance(row, dict)
    return row


def settled(row: dict[str, Any], replicas: int) -> bool:
    """``replicas`` instances, all running and none draining."""
    instances = row["instances"]
    return (
        row["ready_replicas"] == replicas
        and len(instances) == replicas
        and all(i["status"] == "running" and not i["draining"] for i in instances)
    )


async def wait_row(
    ctl: Controller, deployment_id: str, wanted: Any, what: str, timeout: float = 60
) -> dict[str, Any]:
    return await eventually(
        lambda: get(ctl, deployment_id),
        wanted,
        timeout=timeout,
        interval=0.1,
        message=lambda row: f"not {what}: {row}",
    )


def containers_of(client: docker.DockerClient, name: str) -> dict[str, Any]:
    """The deployment's containers by container id."""
    found = client.containers.list(
        all=True, filters={"label": f"lmstack.deployment_name={name}"}, ignore_removed=True
    )
    return {str(c.id): c for c in found}


def started_at(client: docker.DockerClient, container_id: str) -> str:
    value: str = client.containers.get(container_id).attrs["State"]["StartedAt"]
    return value


async def test_replicas_spread_heal_and_move_off_a_lost_worker(
    e2e_controller: Controller, agents: Any, docker_client: docker.DockerClient,
    engine_image: str, prefix: str,
) -> None:  # fmt: skip
    ctl = e2e_controller
    fleet = await start_fleet(agents, prefix, 4)
    name = f"{prefix}-rep"
    body = {
        "name": name,
        "model": "stand-in/tiny-chat",
        "replicas": 3,
        "config": engine_config(engine_image, reschedule_after=2),
    }
    status, created = await ctl.admin("POST", "/api/deployments", json=body)
    assert status == 201, created
    row = await wait_row(ctl, created["id"], lambda r: settled(r, 3), "3 running")

    # Spread: one instance per worker, each its own container, named after it.
    by_worker = {i["worker_id"]: i for i in row["instances"]}
    assert len(by_worker) == 3
    containers = containers_of(docker_client, name)
    assert len(containers) == 3
    for instance in row["instances"]:
        container = containers[instance["container_id"]]
        assert container.status == "running"
        assert container.name == f"lmstack-{name}-{instance['id'][:8]}"
        assert container.labels[LABEL_INSTANCE_ID] == instance["id"]
    assert row["status"] == "running" and row["worker_id"] in by_worker

    # A killed engine is restarted by its agent after the back-off.
    victim, *others = row["instances"]
    untouched = {i["container_id"]: started_at(docker_client, i["container_id"]) for i in others}
    docker_client.containers.get(victim["container_id"]).kill()

    def healed(r: dict[str, Any]) -> bool:
        again = [i for i in r["instances"] if i["id"] == victim["id"]]
        return settled(r, 3) and bool(again) and again[0]["restarts"] == 1

    row = await wait_row(ctl, created["id"], healed, "healed")
    [again] = [i for i in row["instances"] if i["id"] == victim["id"]]
    assert again["last_exit_code"] == 137 and again["worker_id"] == victim["worker_id"]
    assert again["container_id"] != victim["container_id"]
    assert {cid: started_at(docker_client, cid) for cid in untouched} == untouched

    # A worker lost past reschedule_after: its instance is placed on the spare one.
    agent_of = {worker_id: agent for agent, worker_id in fleet}
    lost = others[0]
    [spare] = [w for w in agent_of if w not in by_worker]
    await agent_of[lost["worker_id"]].kill()  # the host is gone; its engine runs on

    def moved(r: dict[str, Any]) -> bool:
        return settled(r, 3) and {i["worker_id"] for i in r["instances"]} == (
            set(by_worker) - {lost["worker_id"]} | {spare}
        )

    row = await wait_row(ctl, created["id"], moved, "rescheduled")
    assert docker_client.containers.get(lost["container_id"]).status == "running"

    # On its return the surplus engine is stopped: 3 serve, the 3 of the instances.
    returning = agent_of[lost["worker_id"]]
    await returning.start()
    assert await returning.wait_online() == lost["worker_id"]

    def only_instances() -> bool:
        return set(containers_of(docker_client, name)) == {
            i["container_id"] for i in row["instances"]
        }

    await eventually(
        only_instances,
        timeout=30,
        message=lambda _: (
            f"the surplus engine was not removed: {containers_of(docker_client, name)} "
            f"for {row['instances']}\n" + "\n".join(returning.output[-60:])
        ),
    )
    row = await get(ctl, created["id"])
    assert settled(row, 3) and lost["id"] not in {i["id"] for i in row["instances"]}


@contextlib.asynccontextmanager
async def steady_traffic(
    url: str, key: str, model: str, clients: int = 3
) -> AsyncIterator[tuple[list[str], list[str]]]:
    """``clients`` loops of chat completions (every other one streamed) through
    the gateway, none retried by the SDK, until the block ends: what succeeded
    and what failed."""
    ok: list[str] = []
    failed: list[str] = []
    done = asyncio.Event()

    async def loop(client: openai.AsyncOpenAI, index: int) -> None:
        turn = 0
        while not done.is_set():
            turn += 1
            try:
                if turn % 2:
                    reply = await client.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3
                    )
                    text = reply.choices[0].message.content or ""
                else:
                    stream = await client.chat.completions.create(
                        model=model,
                        messages=[{"role": "user", "content": "hi"}],
                        max_tokens=3,
                        stream=True,
                    )
                    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
                    text = "".join(parts)
                (ok if text == "lorem ipsum dolor" else failed).append(f"{index}/{turn}: {text}")
            except openai.OpenAIError as exc:
                failed.append(f"{index}/{turn}: {exc!r}")

    async with (
        openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client,
        asyncio.TaskGroup() as group,
    ):
        for index in range(clients):
            group.create_task(loop(client, index))
        try:
            yield ok, failed
        finally:
            done.set()


async def test_a_rolling_update_under_steady_traffic_fails_no_request(
    e2e_controller: Controller, agents: Any, docker_client: docker.DockerClient,
    engine_image: str, prefix: str,
) -> None:  # fmt: skip
    ctl = e2e_controller
    await start_fleet(agents, prefix, 3)  # room for one surge instance
    name = f"{prefix}-roll"
    body = {
        "name": name,
        "model": "stand-in/tiny-chat",
        "replicas": 2,
        "config": engine_config(engine_image),
    }
    status, created = await ctl.admin("POST", "/api/deployments", json=body)
    assert status == 201, created
    before = await wait_row(ctl, created["id"], lambda r: settled(r, 2), "2 running")
    old = {i["id"] for i in before["instances"]}
    _, key = await ctl.admin("POST", "/api/api-keys", json={"name": "traffic"})

    async with steady_traffic(ctl.url, key["key"], name) as (ok, failed):
        await eventually(lambda: len(ok), lambda n: n >= 10, timeout=30)
        config = engine_config(engine_image, env={"STANDIN_START_DELAY": "0.5"})
        status, patched = await ctl.admin(
            "PATCH", f"/api/deployments/{created['id']}", json={"config": config}
        )
        assert status == 200, patched
        at_patch = len(ok)

        def rolled(r: dict[str, Any]) -> bool:
            return (
                settled(r, 2)
                and not old & {i["id"] for i in r["instances"]}
                and all(i["spec_version"] == r["spec_version"] for i in r["instances"])
            )

        after = await wait_row(ctl, created["id"], rolled, "rolled", timeout=90)
        during = len(ok) - at_patch
        await eventually(lambda: len(ok), lambda n: n >= at_patch + during + 10, timeout=30)

    assert failed == []
    assert during >= 10, f"only {during} requests during the rollout"
    assert after["spec_version"] == before["spec_version"] + 1
    assert after["rollout_error"] in ("", None)
    # The old instances' containers go once drained.
    await eventually(
        lambda: set(containers_of(docker_client, name)),
        lambda ids: ids == {i["container_id"] for i in after["instances"]},
        timeout=30,
    )


async def test_scale_to_zero_frees_the_gpu_for_another_deployment_and_back(
    e2e_controller: Controller, agents: Any, docker_client: docker.DockerClient,
    engine_image: str, prefix: str,
) -> None:  # fmt: skip
    ctl = e2e_controller
    [(_, worker_id)] = await start_fleet(agents, prefix, 1)

    async def create(name: str) -> tuple[int, dict[str, Any]]:
        body = {"name": name, "model": "stand-in/tiny-chat", "config": engine_config(engine_image)}
        status, created = await ctl.admin("POST", "/api/deployments", json=body)
        assert isinstance(created, dict)
        return status, created

    status, first = await create(f"{prefix}-one")
    assert status == 201, first
    await wait_row(ctl, first["id"], lambda r: settled(r, 1), "running")
    status, refused = await create(f"{prefix}-two")
    assert status == 409, refused  # the only GPU is taken

    status, scaled = await ctl.admin(
        "PATCH", f"/api/deployments/{first['id']}", json={"replicas": 0}
    )
    assert status == 200, scaled
    zero = await wait_row(ctl, first["id"], lambda r: r["instances"] == [], "at zero")
    assert zero["replicas"] == 0 and zero["ready_replicas"] == 0
    await eventually(lambda: containers_of(docker_client, f"{prefix}-one"), lambda c: not c)
    _, worker = await ctl.admin("GET", f"/api/workers/{worker_id}")
    assert worker["free_gpus"] == 1

    status, second = await create(f"{prefix}-two")
    assert status == 201, second
    await wait_row(ctl, second["id"], lambda r: settled(r, 1), "running")
    status, refused = await ctl.admin(
        "PATCH", f"/api/deployments/{first['id']}", json={"replicas": 1}
    )
    assert status == 409, refused

    status, _ = await ctl.admin("POST", f"/api/deployments/{second['id']}/stop")
    assert status == 200
    await eventually(lambda: containers_of(docker_client, f"{prefix}-two"), lambda c: not c)
    status, back = await ctl.admin("PATCH", f"/api/deployments/{first['id']}", json={"replicas": 1})
    assert status == 200, back
    row = await wait_row(ctl, first["id"], lambda r: settled(r, 1), "back")
    assert row["worker_id"] == worker_id and row["gpu_indices"] == [0]
    assert set(containers_of(docker_client, f"{prefix}-one")) == {row["container_id"]}


async def test_the_upgrade_migration_adopts_a_running_engine_without_a_restart(
    e2e_controller: Controller, agents: Any, docker_client: docker.DockerClient,
    engine_image: str, prefix: str,
) -> None:  # fmt: skip
    """A deployment as the controller and agent before instances left it: the
    database at revision 0004 and a container named ``lmstack-<name>`` without an
    instance label. After the upgrade it is the deployment's instance, unrestarted."""
    ctl = e2e_controller
    [(agent, worker_id)] = await start_fleet(agents, prefix, 1)
    name = f"{prefix}-old"
    body = {"name": name, "model": "stand-in/tiny-chat", "config": engine_config(engine_image)}
    status, created = await ctl.admin("POST", "/api/deployments", json=body)
    assert status == 201, created
    row = await wait_row(ctl, created["id"], lambda r: settled(r, 1), "running")
    [current] = containers_of(docker_client, name).values()
    cluster_id = current.labels[LABEL_CLUSTER_ID]
    assert await agent.stop(signal.SIGTERM) == 0
    await ctl.stop()
    current.remove(force=True)

    # Back to revision 0004, and the container the agent of protocol 1 made.
    db = Database(ctl.settings().effective_database_url())
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0004"))
    instance = Instance(
        id=row["id"], deployment_id=row["id"], model=row["model"], config=row["config"],
        port=row["port"], gpu_indices=row["gpu_indices"], restarts=0,
    )  # fmt: skip
    spec = deploy_spec(deploy_message(instance, name, row["backend"]).deploy, cluster_id)
    plan = plan_container(
        spec, hf_cache_dir=agent.state_dir / "hf-cache", hf_token=None, simulate_gpus=True
    )
    labels = {k: v for k, v in plan.labels.items() if k not in (LABEL_INSTANCE_ID, LABEL_RESTARTS)}
    labels[LABEL_SPEC_HASH] = legacy_spec_hash(spec)
    old = docker_client.containers.run(
        plan.image, command=plan.command, entrypoint=plan.entrypoint, name=f"lmstack-{name}",
        labels=labels, environment=plan.env, detach=True,
        ports={f"{plan.engine_port}/tcp": ("0.0.0.0", plan.host_port)},
    )  # fmt: skip
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE deployments SET worker_id = ?, gpu_indices = ?, port = ?, container_id = ?,"
            " status = 'running' WHERE id = ?",
            (worker_id, json.dumps(row["gpu_indices"]), row["port"], old.id, row["id"]),
        )
    await db.close()
    old.reload()
    first_start = old.attrs["State"]["StartedAt"]

    await ctl.start()  # migrates 0004 -> head
    await agent.start()
    assert await agent.wait_online() == worker_id
    adopted = await wait_row(
        ctl, row["id"], lambda r: settled(r, 1) and r["container_id"] == old.id, "adopted"
    )
    assert [i["id"] for i in adopted["instances"]] == [row["id"]]
    assert adopted["instances"][0]["restarts"] == 0
    assert set(containers_of(docker_client, name)) == {old.id}
    old.reload()
    assert (old.name, old.status) == (f"lmstack-{name}", "running")
    assert old.attrs["State"]["StartedAt"] == first_start
