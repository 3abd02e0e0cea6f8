"""A deployment created over REST becomes a running engine container, and
everything the REST API reports about it is live. Real controller, real agent
process, real Docker engine, stand-in engine image."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import docker
import docker.errors
import openai

from controller import appkeys
from tests.conftest import Controller
from tests.e2e.conftest import AgentProcess
from tests.waiting import eventually


async def create(
    ctl: Controller, worker_id: str, name: str, image: str, **env: str
) -> dict[str, Any]:
    body = {
        "name": name,
        "model": "stand-in/tiny-chat",
        "worker_id": worker_id,
        "config": {
            "image": image,
            "env": {"STANDIN_START_DELAY": "0.3", **env},
            "startup_timeout": 30,
            "max_model_len": 2048,
        },
    }
    status, created = await ctl.admin("POST", "/api/deployments", json=body)
    assert status == 201, created
    assert isinstance(created, dict)
    return created


async def wait_status(
    ctl: Controller, deployment_id: str, wanted: str, timeout: float = 60
) -> dict[str, Any]:

    async def seen() -> dict[str, Any]:
        status, row = await ctl.admin("GET", f"/api/deployments/{deployment_id}")
        assert status == 200, row
        assert isinstance(row, dict)
        return row

    return await eventually(
        seen,
        lambda row: row["status"] == wanted,
        timeout=timeout,
        interval=0.1,
        message=lambda row: (
            f"deployment is {row.get('status')} ({row.get('status_message')}), wanted {wanted}"
        ),
    )


async def started(agents: Any) -> tuple[AgentProcess, str]:
    """A new agent process, started and online: it and its worker id."""
    agent: AgentProcess = agents()
    await agent.start()
    return agent, await agent.wait_online()


def container_of(client: docker.DockerClient, name: str) -> Any:
    """The deployment's container (named ``lmstack-<name>-<short instance id>``)."""
    found = client.containers.list(all=True, filters={"label": f"lmstack.deployment_name={name}"})
    if not found:
        raise docker.errors.NotFound(f"no container of deployment {name}")
    return found[0]


async def wait_gone(client: docker.DockerClient, name: str, timeout: float = 20) -> None:
    """Until the deployment's container no longer exists."""

    def gone() -> bool:
        try:
            container_of(client, name)
        except docker.errors.NotFound:
            return True
        return False

    await eventually(
        gone, timeout=timeout, interval=0.1, message=f"container lmstack-{name} still exists"
    )


async def test_create_run_logs_containers_delete(
    e2e_controller: Controller, agents: Any, docker_client: docker.DockerClient,
    engine_image: str, prefix: str,
) -> None:  # fmt: skip
    ctl = e2e_controller
    _, worker_id = await started(agents)
    status, worker = await ctl.admin("GET", f"/api/workers/{worker_id}")
    assert worker["status"] == "online" and worker["runtime_error"] == ""
    assert worker["system_info"]["docker_version"]

    name = f"{prefix}-chat"
    created = await create(ctl, worker_id, name, engine_image)
    running = await wait_status(ctl, created["id"], "running")
    container = container_of(docker_client, name)
    assert running["container_id"] == container.id
    assert container.labels["lmstack.deployment_id"] == created["id"]
    port = running["port"]

    # The engine answers on the published port, as the gateway will reach it.
    async with aiohttp.ClientSession() as http:
        payload = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=payload) as resp:
            assert resp.status == 200
            assert (await resp.json())["model"] == name

    status, logs = await ctl.admin(
        "GET", f"/api/deployments/{created['id']}/logs", params={"lines": "50"}
    )
    assert status == 200
    assert "--served-model-name" in logs["logs"] and "/v1/chat/completions" in logs["logs"]

    status, listing = await ctl.admin("GET", f"/api/workers/{worker_id}/containers")
    assert status == 200
    mine = [c for c in listing["containers"] if c["deployment_id"] == created["id"]]
    assert mine == [
        {
            "id": container.id,
            "name": container.name,
            "status": "running",
            "image": engine_image,
            "deployment_id": created["id"],
            "instance_id": container.labels["lmstack.instance_id"],
            "port": port,
            # Labelled with this controller's cluster: its own, not foreign.
            "cluster_id": ctl.app[appkeys.CLUSTER_ID],
            "foreign": False,
        }
    ]

    status, _ = await ctl.admin("DELETE", f"/api/deployments/{created['id']}")
    assert status == 204
    await wait_gone(docker_client, name)


async def test_engine_that_exits_is_an_error_with_exit_code(
    e2e_controller: Controller, agents: Any, engine_image: str, prefix: str
) -> None:
    ctl = e2e_controller
    _, worker_id = await started(agents)
    created = await create(
        ctl, worker_id, f"{prefix}-crash", engine_image,
        STANDIN_CRASH_AFTER="1.5", STANDIN_EXIT_CODE="7",
    )  # fmt: skip
    await wait_status(ctl, created["id"], "running")
    failed = await wait_status(ctl, created["id"], "error")
    assert "7" in failed["status_message"]


async def test_agent_restart_adopts_and_delete_while_away_cleans_up(
    e2e_controller: Controller, agents: Any, docker_client: docker.DockerClient,
    engine_image: str, prefix: str,
) -> None:  # fmt: skip
    ctl = e2e_controller
    agent, worker_id = await started(agents)
    keep = await create(ctl, worker_id, f"{prefix}-keep", engine_image)
    drop = await create(ctl, worker_id, f"{prefix}-drop", engine_image)
    await wait_status(ctl, keep["id"], "running")
    await wait_status(ctl, drop["id"], "running")
    before = container_of(docker_client, f"{prefix}-keep")
    started_at = before.attrs["State"]["StartedAt"]

    # SIGTERM: the agent exits cleanly and leaves the engines running.
    assert await agent.stop(signal.SIGTERM) == 0
    assert container_of(docker_client, f"{prefix}-keep").status == "running"
    # Deleted while the agent is away.
    status, _ = await ctl.admin("DELETE", f"/api/deployments/{drop['id']}")
    assert status == 204

    again = agents()
    again.state_dir = agent.state_dir
    await again.start()
    assert await again.wait_online() == worker_id
    await wait_gone(docker_client, f"{prefix}-drop")
    after = container_of(docker_client, f"{prefix}-keep")
    assert after.id == before.id
    assert after.attrs["State"]["StartedAt"] == started_at
    assert (await wait_status(ctl, keep["id"], "running"))["container_id"] == before.id


async def test_controller_restart_agent_reconnects(
    e2e_controller: Controller, agents: Any, docker_client: docker.DockerClient,
    engine_image: str, prefix: str,
) -> None:  # fmt: skip
    ctl = e2e_controller
    agent, worker_id = await started(agents)
    created = await create(ctl, worker_id, f"{prefix}-stay", engine_image)
    await wait_status(ctl, created["id"], "running")
    container = container_of(docker_client, f"{prefix}-stay")

    await ctl.restart()
    assert await agent.wait_online() == worker_id
    _status, worker = await ctl.admin("GET", f"/api/workers/{worker_id}")
    assert worker["status"] == "online"
    running = await wait_status(ctl, created["id"], "running")
    assert running["container_id"] == container.id
    assert (
        container_of(docker_client, f"{prefix}-stay").attrs["State"]["StartedAt"]
        == (container.attrs["State"]["StartedAt"])
    )


async def test_wrong_join_token_exits_clearly_without_retrying(
    e2e_controller: Controller, agents: Any
) -> None:
    agent: AgentProcess = agents(name="intruder", token="not-the-token")
    await agent.start()
    code = await _wait_exit(agent)
    assert code != 0
    text = "\n".join(agent.output)
    assert "join token" in text
    assert text.count("reconnecting") == 0, text
    _status, workers = await e2e_controller.admin("GET", "/api/workers")
    assert workers["items"] == []


async def _wait_exit(agent: AgentProcess) -> int:
    assert agent.proc is not None
    code = await asyncio.wait_for(agent.proc.wait(), 15)
    await agent.kill()
    return code


async def test_openai_sdk_through_the_gateway_to_a_container(
    e2e_controller: Controller, agents: Any, engine_image: str, prefix: str
) -> None:
    ctl = e2e_controller
    _, worker_id = await started(agents)
    name = f"{prefix}-gw"
    created = await create(ctl, worker_id, name, engine_image)
    await wait_status(ctl, created["id"], "running")
    _, key = await ctl.admin("POST", "/api/api-keys", json={"name": "sdk"})

    async with openai.AsyncOpenAI(
        base_url=ctl.url + "/v1", api_key=key["key"], max_retries=0
    ) as client:
        assert name in [m.id for m in (await client.models.list()).data]
        reply = await client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hello there"}], max_tokens=4
        )
        assert reply.choices[0].message.content == "lorem ipsum dolor sit"
        stream = await client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "lorem ipsum dolor"

    status, usage = await ctl.admin("GET", "/api/usage", params={"deployment": name})
    assert status == 200
    assert usage["totals"] == {
        "requests": 2, "prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10
    }  # fmt: skip


async def create_ollama(
    ctl: Controller, worker_id: str, name: str, image: str, **env: str
) -> dict[str, Any]:
    body = {
        "name": name,
        "backend": "ollama",
        "model": "qwen2.5:0.5b",
        "worker_id": worker_id,
        "config": {"image": image, "env": env, "startup_timeout": 30},
    }
    status, created = await ctl.admin("POST", "/api/deployments", json=body)
    assert status == 201, created
    assert isinstance(created, dict)
    return created


async def test_ollama_pulls_its_model_then_serves_it_by_tag(
    e2e_controller: Controller, agents: Any, docker_client: docker.DockerClient,
    engine_image: str, prefix: str,
) -> None:  # fmt: skip
    ctl = e2e_controller
    _, worker_id = await started(agents)
    name = f"{prefix}-ollama"
    # The stand-in image started as `serve` behaves like Ollama: empty until a pull.
    created = await create_ollama(ctl, worker_id, name, engine_image, STANDIN_PULL_DELAY="1.5")
    messages: list[str] = []

    async def seen() -> dict[str, Any]:
        _, row = await ctl.admin("GET", f"/api/deployments/{created['id']}")
        messages.append(row["status_message"])
        assert isinstance(row, dict)
        return row

    row = await eventually(
        seen, lambda row: row["status"] not in ("starting", "pending"), timeout=15, interval=0.05
    )
    assert row["status"] == "running", row
    assert "pulling model qwen2.5:0.5b" in messages  # reported while it downloads
    container = container_of(docker_client, name)
    assert "OLLAMA_MODELS=/root/.cache/huggingface/ollama" in container.attrs["Config"]["Env"]
    assert b"pulled qwen2.5:0.5b" in container.logs()

    _, key = await ctl.admin("POST", "/api/api-keys", json={"name": "sdk"})
    async with openai.AsyncOpenAI(
        base_url=ctl.url + "/v1", api_key=key["key"], max_retries=0
    ) as client:
        # Clients use the deployment's name; Ollama is asked for its tag.
        reply = await client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert reply.model == "qwen2.5:0.5b"
    assert reply.choices[0].message.content == "lorem ipsum"

    status, _ = await ctl.admin("DELETE", f"/api/deployments/{created['id']}")
    assert status == 204
    await wait_gone(docker_client, name)


async def test_a_failed_ollama_pull_is_an_error_and_leaves_no_container(
    e2e_controller: Controller, agents: Any, docker_client: docker.DockerClient,
    engine_image: str, prefix: str,
) -> None:  # fmt: skip
    ctl = e2e_controller
    _, worker_id = await started(agents)
    name = f"{prefix}-nopull"
    created = await create_ollama(ctl, worker_id, name, engine_image, STANDIN_PULL_FAIL="1")
    failed = await wait_status(ctl, created["id"], "error")
    assert "pulling the model failed" in failed["status_message"]
    assert "file does not exist" in failed["status_message"]  # Ollama's own words
    await wait_gone(docker_client, name)
