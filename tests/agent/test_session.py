"""AgentSession against a real gRPC controller double, with MemoryRuntime behind it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import socket
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

import shared
from agent.session import AgentSession, AuthenticationFailed, Backoff, ProtocolVersionRejected
from agent.types import RUNNING, DeploySpec
from shared.engines import EngineConfig
from shared.proto.lmstack.v1 import agent_pb2
from shared.settings import AgentSettings
from tests.agent.conftest import StartSession
from tests.agent.controller_stub import (
    TOKEN,
    WORKER_ID,
    ControllerServer,
    FakeGpuReader,
    StubController,
    deploy_command,
    stop_command,
    wait_until,
)
from tests.runtime.memory_runtime import MemoryRuntime


class _Ceiling(random.Random):
    """Jitter that always picks the upper bound, so delays are predictable."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def _running(stub: StubController, deployment_id: str) -> agent_pb2.DeploymentStatus:
    await wait_until(lambda: RUNNING in stub.status_names(deployment_id))
    return stub.statuses(deployment_id)[-1]


# -- Hello / Welcome ----------------------------------------------------------------------


async def test_hello_describes_the_host_and_welcome_persists_worker_id(
    stub: StubController, start_session: StartSession, state_dir: Path
) -> None:
    session = start_session()
    await wait_until(lambda: bool(stub.hellos))
    hello = stub.hellos[0]

    assert stub.authorizations == [f"Bearer {TOKEN}"]
    assert hello.name == "gpu-host-1"
    assert hello.agent_version == shared.__version__
    assert hello.protocol_version == shared.PROTOCOL_VERSION
    assert hello.worker_id == ""
    # The route to a controller on loopback leaves from loopback.
    assert hello.advertise_address == "127.0.0.1"
    assert [(g.index, g.uuid, g.name) for g in hello.gpus] == [
        (0, "GPU-0000", "NVIDIA H100 80GB HBM3"),
        (1, "GPU-0001", "NVIDIA H100 80GB HBM3"),
    ]
    assert hello.gpus[0].memory_total_bytes == 80 * 1024**3
    assert (hello.gpus[0].driver_version, hello.gpus[0].cuda_version) == ("550.54", "12.4")
    assert hello.system_info.hostname == socket.gethostname()
    assert hello.system_info.cpu_count == os.cpu_count()
    assert hello.system_info.memory_total_bytes > 256 * 1024**2
    assert hello.system_info.os
    assert hello.system_info.docker_version == "memory"
    assert hello.runtime_error == ""
    assert not hello.gpus_simulated

    await wait_until((state_dir / "worker_id").exists)
    assert (state_dir / "worker_id").read_text() == f"{WORKER_ID}\n"
    assert session.worker_id == WORKER_ID
    assert [p.name for p in state_dir.iterdir()] == ["worker_id"]  # no temp file left


async def test_restarted_agent_sends_its_persisted_worker_id(
    stub: StubController,
    settings: AgentSettings,
    runtime: MemoryRuntime,
    gpus: FakeGpuReader,
    state_dir: Path,
) -> None:
    for attempt in range(2):
        task = asyncio.create_task(AgentSession(settings, runtime, gpus).run())
        await wait_until(lambda: len(stub.hellos) > attempt and stub.connected)  # noqa: B023
        await wait_until((state_dir / "worker_id").exists)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [hello.worker_id for hello in stub.hellos] == ["", WORKER_ID]


async def test_agent_without_container_engine_still_joins(
    stub: StubController, settings: AgentSettings, gpus: FakeGpuReader
) -> None:
    runtime = MemoryRuntime(available=False, error="cannot connect to /var/run/docker.sock")
    task = asyncio.create_task(AgentSession(settings, runtime, gpus).run())
    try:
        await wait_until(lambda: len(stub.heartbeats()) >= 1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert stub.hellos[0].runtime_error == "cannot connect to /var/run/docker.sock"


# -- heartbeats ----------------------------------------------------------------------------


async def test_heartbeats_carry_gpu_stats_at_the_interval(
    stub: StubController, start_session: StartSession
) -> None:
    start_session()
    await wait_until(lambda: bool(stub.heartbeats()))
    started = time.monotonic()
    await wait_until(lambda: len(stub.heartbeats()) >= 5)
    elapsed = time.monotonic() - started

    # Four more intervals of 0.05 s: not faster (a hot loop), not much slower.
    assert 0.15 <= elapsed < 1.0
    first = stub.heartbeats()[0]
    assert [(g.index, g.utilization, g.temperature, g.power) for g in first.gpus] == [
        (0, 42, 61, 312.5),
        (1, 0, 35, 70.0),
    ]
    assert first.gpus[0].memory_used_bytes == 10 * 1024**3
    assert first.gpus[0].memory_total_bytes == 80 * 1024**3


async def test_controller_interval_overrides_the_agent_setting(
    stub: StubController, settings: AgentSettings, start_session: StartSession
) -> None:
    stub.heartbeat_interval_seconds = 1  # whole seconds: only for agents that lack the ms field
    stub.heartbeat_interval_ms = 20
    start_session(settings.model_copy(update={"heartbeat_interval": 30.0}))
    await wait_until(lambda: len(stub.heartbeats()) >= 4, timeout=0.9)


async def test_heartbeats_carry_container_states(
    stub: StubController, start_session: StartSession
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1"))
    status = await _running(stub, "d1")
    seen = len(stub.heartbeats())
    await wait_until(lambda: len(stub.heartbeats()) > seen)
    containers = stub.heartbeats()[-1].containers
    assert [(c.deployment_id, c.container_id, c.state) for c in containers] == [
        ("d1", status.container_id, "running")
    ]


async def test_agents_sharing_a_host_each_see_only_their_own_containers(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    """One Docker engine, two agents: this one reports (and so may have removed
    as orphans) only its worker's containers and the unlabelled older ones."""

    def spec(deployment_id: str, port: int, worker_id: str) -> DeploySpec:
        return DeploySpec(
            deployment_id=deployment_id, name=deployment_id, backend="vllm", image="img",
            model="m", config=EngineConfig(), host_port=port, worker_id=worker_id,
        )  # fmt: skip

    stub.cluster_id = "this-cluster"
    mine = runtime.plant(spec("mine", 40001, WORKER_ID))
    runtime.plant(spec("theirs", 40002, "the-other-agents-worker"))
    older = runtime.plant(spec("older", 40003, ""))
    other_cluster = runtime.plant(
        dataclasses.replace(
            spec("foreign", 40004, "a-worker-of-another-cluster"), cluster_id="another-cluster"
        )
    )
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1"))
    made = await _running(stub, "d1")
    seen = len(stub.heartbeats())
    await wait_until(lambda: len(stub.heartbeats()) > seen)
    # Another cluster's container is listed (the controller shows it as foreign).
    assert sorted(c.deployment_id for c in stub.heartbeats()[-1].containers) == [
        "d1", "foreign", "mine", "older"
    ]  # fmt: skip
    stub.push(
        agent_pb2.ControllerMessage(list_containers=agent_pb2.ListContainers(request_id="r-1"))
    )
    await wait_until(lambda: stub.containers_reply("r-1") is not None)
    reply = stub.containers_reply("r-1")
    assert reply is not None
    assert sorted(c.container_id for c in reply.containers) == sorted(
        [made.container_id, mine.container_id, older.container_id, other_cluster.container_id]
    )
    [labelled] = [c for c in await runtime.list_containers() if c.deployment_id == "d1"]
    assert labelled.worker_id == WORKER_ID


async def test_hello_carries_the_worker_labels(
    stub: StubController, settings: AgentSettings, start_session: StartSession
) -> None:
    start_session(settings.model_copy(update={"labels": {"gpu": "a100", "zone": "eu-1"}}))
    await wait_until(lambda: bool(stub.hellos))
    assert dict(stub.hellos[0].labels) == {"gpu": "a100", "zone": "eu-1"}


# -- commands ------------------------------------------------------------------------------


async def test_instances_of_one_deployment_are_kept_apart(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1", instance_id="aaaaaaaa-1", host_port=40011))
    stub.push(deploy_command("d1", instance_id="bbbbbbbb-2", host_port=40012, restarts=2))
    await wait_until(
        lambda: all(RUNNING in stub.instance_status_names(i) for i in ("aaaaaaaa-1", "bbbbbbbb-2"))
    )
    one, two = stub.instance_statuses("aaaaaaaa-1")[-1], stub.instance_statuses("bbbbbbbb-2")[-1]
    assert (one.deployment_id, one.port, one.restarts) == ("d1", 40011, 0)
    assert (two.deployment_id, two.port, two.restarts) == ("d1", 40012, 2)
    assert one.container_id != two.container_id
    listed = {c.instance_id: c for c in await runtime.list_containers()}
    assert listed["aaaaaaaa-1"].name == "lmstack-model-d1-aaaaaaaa"
    assert listed["bbbbbbbb-2"].name == "lmstack-model-d1-bbbbbbbb"

    # Logs and Stop address one instance; the other keeps running.
    runtime.append_log("bbbbbbbb-2", "only in two")
    stub.push(
        agent_pb2.ControllerMessage(
            fetch_logs=agent_pb2.FetchLogs(
                request_id="r-2", deployment_id="d1", instance_id="bbbbbbbb-2", lines=5
            )
        )
    )
    stub.push(stop_command("d1", instance_id="aaaaaaaa-1"))
    await wait_until(lambda: "stopped" in stub.instance_status_names("aaaaaaaa-1"))
    await wait_until(lambda: stub.logs_result("r-2") is not None)
    result = stub.logs_result("r-2")
    assert result is not None and "only in two" in result.logs
    assert [c.instance_id for c in await runtime.list_containers()] == ["bbbbbbbb-2"]
    assert stub.instance_statuses("aaaaaaaa-1")[-1].deployment_id == "d1"


async def test_a_stop_of_an_unknown_instance_names_its_deployment(
    stub: StubController, start_session: StartSession
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(stop_command("d9", instance_id="i9"))
    await wait_until(lambda: bool(stub.instance_statuses("i9")))
    [stopped] = stub.instance_statuses("i9")
    assert (stopped.status, stopped.deployment_id) == ("stopped", "d9")


async def test_a_legacy_container_is_adopted_by_a_deploy_of_its_deployments_id(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    """An upgrade: the old agent's container (no instance label, named
    ``lmstack-<name>``); the migration made the deployment the instance of its id."""
    spec = DeploySpec(
        deployment_id="d1", name="model-d1", backend="vllm", image="vllm/vllm-openai:latest",
        model="Qwen/Qwen2.5-0.5B-Instruct",
        config=EngineConfig.from_mapping({"max_model_len": 4096, "max_parallel": 4}),
        host_port=40001, gpu_indices=(0,), env={"VLLM_LOGGING_LEVEL": "INFO"},
    )  # fmt: skip
    legacy = runtime.plant(spec, legacy=True)
    assert (legacy.name, legacy.instance_id) == ("lmstack-model-d1", "d1")
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(
        deploy_command(
            "d1", instance_id="d1", config_json='{"max_model_len": 4096, "max_parallel": 4}'
        )
    )
    running = await _running(stub, "d1")
    assert stub.status_names("d1") == ["running"]  # adopted, not restarted
    assert (running.container_id, running.instance_id) == (legacy.container_id, "d1")
    assert ("deployed", "d1") not in runtime.events


async def test_deploy_reports_each_transition(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1", host_port=40123))
    status = await _running(stub, "d1")

    assert stub.status_names("d1") == ["pending", "starting", "running"]
    assert len(status.container_id) == 64
    assert status.port == 40123
    assert not status.has_exit_code
    spec = runtime.specs["d1"]
    assert spec.config.to_mapping() == {"max_model_len": 4096}
    assert spec.gpu_indices == (0,)
    assert spec.env == {"VLLM_LOGGING_LEVEL": "INFO"}


async def test_deploy_of_a_running_spec_changes_nothing(
    stub: StubController, start_session: StartSession
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1"))
    first = await _running(stub, "d1")
    stub.push(deploy_command("d1"))
    await wait_until(lambda: len(stub.statuses("d1")) == 4)

    again = stub.statuses("d1")[-1]
    assert (again.status, again.container_id) == ("running", first.container_id)


async def test_deploy_with_invalid_config_reports_error(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1", config_json="[1, 2]"))
    await wait_until(lambda: bool(stub.statuses("d1")))

    status = stub.statuses("d1")[0]
    assert status.status == "error"
    assert "JSON object" in status.message
    assert "d1" not in runtime.specs


async def test_stop_reports_stopping_then_stopped(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1"))
    running = await _running(stub, "d1")
    stub.push(stop_command("d1", remove=True))
    await wait_until(lambda: "stopped" in stub.status_names("d1"))

    assert stub.status_names("d1")[-2:] == ["stopping", "stopped"]
    assert stub.statuses("d1")[-1].container_id == running.container_id
    assert await runtime.list_containers() == []


async def test_fetch_logs_answers_with_the_request_id(
    stub: StubController, start_session: StartSession
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1"))
    await _running(stub, "d1")
    stub.push(
        agent_pb2.ControllerMessage(
            fetch_logs=agent_pb2.FetchLogs(request_id="r-1", deployment_id="d1", lines=10)
        )
    )
    stub.push(
        agent_pb2.ControllerMessage(
            fetch_logs=agent_pb2.FetchLogs(request_id="r-2", deployment_id="nope", lines=10)
        )
    )
    await wait_until(lambda: None not in (stub.logs_result("r-1"), stub.logs_result("r-2")))

    found, missing = stub.logs_result("r-1"), stub.logs_result("r-2")
    assert found is not None and missing is not None
    assert "serving Qwen/Qwen2.5-0.5B-Instruct" in found.logs
    assert found.error == ""
    assert "nope" in missing.error
    assert missing.logs == ""


async def test_list_containers_answers_with_the_request_id(
    stub: StubController, start_session: StartSession
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1", host_port=40777))
    running = await _running(stub, "d1")
    stub.push(
        agent_pb2.ControllerMessage(list_containers=agent_pb2.ListContainers(request_id="r-9"))
    )
    await wait_until(lambda: stub.containers_reply("r-9") is not None)

    reply = stub.containers_reply("r-9")
    assert reply is not None and reply.error == ""
    assert [(c.deployment_id, c.container_id, c.state, c.host_port) for c in reply.containers] == [
        ("d1", running.container_id, "running", 40777)
    ]
    # A Deploy without an instance id (protocol 1): the deployment is its instance.
    assert reply.containers[0].name == "lmstack-model-d1-d1"
    assert reply.containers[0].instance_id == "d1"
    assert len(reply.containers[0].spec_hash) == 16


async def test_commands_of_one_deployment_run_in_order_others_concurrently(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    release = runtime.gate("d1")
    stub.push(deploy_command("d1"))
    stub.push(deploy_command("d1", host_port=40005))
    stub.push(deploy_command("d2", host_port=40002))
    stub.push(
        agent_pb2.ControllerMessage(list_containers=agent_pb2.ListContainers(request_id="r-1"))
    )

    # d2 and the request are served while d1's first deploy is held after "pending".
    await _running(stub, "d2")
    await wait_until(lambda: stub.containers_reply("r-1") is not None)
    assert stub.status_names("d1") == ["pending"]
    assert runtime.events.count(("deploy", "d1")) == 1

    release.set()
    await wait_until(lambda: runtime.events.count(("deployed", "d1")) == 2)
    assert runtime.specs["d1"].host_port == 40005  # the second ran after the first


async def test_a_deploy_waits_for_the_stops_that_arrived_before_it(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    """The controller placed d2 on the port d1 gave up: d2's container is made
    only once d1's is gone; a Deploy that came before the Stop does not wait."""
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1", host_port=40001))
    await _running(stub, "d1")
    held = runtime.gate_stop("d1")
    stub.push(deploy_command("d0", host_port=40000))
    await _running(stub, "d0")
    stub.push(stop_command("d1"))
    await wait_until(lambda: "stopping" in stub.status_names("d1"))
    stub.push(deploy_command("d2", host_port=40001))
    stub.push(deploy_command("d3", host_port=40003))
    # Answered after the two Deploys were taken in (commands are read in order).
    stub.push(
        agent_pb2.ControllerMessage(list_containers=agent_pb2.ListContainers(request_id="r-2"))
    )
    await wait_until(lambda: stub.containers_reply("r-2") is not None)
    assert ("deploy", "d2") not in runtime.events
    assert ("deploy", "d3") not in runtime.events  # every Stop before it, not just its port's
    held.set()
    await _running(stub, "d2")
    await _running(stub, "d3")
    assert runtime.events.index(("stopped", "d1")) < runtime.events.index(("deploy", "d2"))


async def test_stop_cancels_a_deploy_still_in_progress(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    runtime.gate("d1")  # never released: an engine that never gets healthy
    stub.push(deploy_command("d1"))
    await wait_until(lambda: stub.status_names("d1") == ["pending"])
    stub.push(stop_command("d1"))
    await wait_until(lambda: "stopped" in stub.status_names("d1"))
    assert ("stop", "d1") in runtime.events
    assert ("deployed", "d1") not in runtime.events
    # The session is healthy afterwards: a new deploy of the same deployment runs.
    stub.push(deploy_command("d1"))
    await _running(stub, "d1")


# -- container exits -------------------------------------------------------------------------


async def test_container_that_exits_is_reported_as_error_once(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1", config_json='{"restart_policy": "never"}'))
    running = await _running(stub, "d1")

    # At once: an engine that dies before any heartbeat saw it run still counts.
    runtime.exit_container("d1", 137, "torch.OutOfMemoryError: CUDA out of memory")
    await wait_until(lambda: "error" in stub.status_names("d1"))
    error = stub.statuses("d1")[-1]
    assert error.has_exit_code
    assert error.exit_code == 137
    assert error.container_id == running.container_id
    assert error.final
    assert "code 137" in error.message
    assert "CUDA out of memory" in error.message

    seen = len(stub.heartbeats())
    await wait_until(lambda: len(stub.heartbeats()) >= seen + 3)
    assert stub.status_names("d1").count("error") == 1


async def test_an_exit_of_a_container_no_supervisor_watches_is_reported_as_final(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    # Made by an earlier agent process; the controller sent no Deploy for it yet.
    planted = runtime.plant(
        DeploySpec(
            deployment_id="d7", instance_id="i7", name="old", backend="vllm", image="img",
            model="m", config=EngineConfig(), host_port=40070,
        )
    )  # fmt: skip
    start_session()
    await wait_until(lambda: any(hb.containers for hb in stub.heartbeats()))
    runtime.exit_container("i7", 9, "killed")
    await wait_until(lambda: bool(stub.instance_statuses("i7")))
    [error] = stub.instance_statuses("i7")
    assert (error.status, error.final, error.exit_code) == ("error", True, 9)
    assert (error.deployment_id, error.container_id) == ("d7", planted.container_id)


async def test_stopped_container_is_not_reported_as_crashed(
    stub: StubController, start_session: StartSession
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1"))
    await _running(stub, "d1")
    await wait_until(lambda: any(hb.containers for hb in stub.heartbeats()))
    stub.push(stop_command("d1", remove=False))
    await wait_until(lambda: "stopped" in stub.status_names("d1"))

    seen = len(stub.heartbeats())
    await wait_until(lambda: len(stub.heartbeats()) >= seen + 3)
    assert stub.heartbeats()[-1].containers[0].state == "exited"
    assert "error" not in stub.status_names("d1")


# -- reconnects and refusals ---------------------------------------------------------------


async def test_reconnects_after_controller_restart_and_resends_containers(
    stub: StubController,
    stub_server: ControllerServer,
    start_session: StartSession,
    runtime: MemoryRuntime,
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1"))
    running = await _running(stub, "d1")

    await stub_server.stop()
    await wait_until(lambda: not stub.connected)
    await stub_server.start()
    await wait_until(lambda: len(stub.hellos) == 2 and stub.connected)

    hello = stub.hellos[1]
    assert hello.worker_id == WORKER_ID
    assert [(c.deployment_id, c.container_id, c.state) for c in hello.containers] == [
        ("d1", running.container_id, "running")
    ]
    # Containers are untouched by the outage, and the new stream works.
    assert ("stop", "d1") not in runtime.events
    seen = len(stub.heartbeats())
    await wait_until(lambda: len(stub.heartbeats()) > seen)


async def test_unreachable_controller_is_retried_with_capped_backoff(
    settings: AgentSettings, runtime: MemoryRuntime, gpus: FakeGpuReader
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    delays: list[float] = []
    enough = asyncio.Event()

    async def record(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 6:
            enough.set()
            await asyncio.Event().wait()  # park here until cancelled

    dead = settings.model_copy(
        update={"controller": f"127.0.0.1:{port}", "reconnect_max_seconds": 3.0}
    )
    session = AgentSession(dead, runtime, gpus, sleep=record, rng=_Ceiling())
    task = asyncio.create_task(session.run())
    try:
        await asyncio.wait_for(enough.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_backoff_uses_full_jitter_and_resets() -> None:
    backoff = Backoff(10.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1, 2, 4, 8, 10, 10, 10]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == 8  # jittered, not a fixed schedule

    ceiling = Backoff(10.0, rng=_Ceiling())
    assert [ceiling.next_delay() for _ in range(3)] == [0.5, 1.0, 2.0]
    ceiling.reset()
    assert ceiling.next_delay() == 0.5


async def test_wrong_token_fails_at_once_without_retrying(
    stub: StubController, settings: AgentSettings, runtime: MemoryRuntime, gpus: FakeGpuReader
) -> None:
    slept: list[float] = []

    async def record(delay: float) -> None:
        slept.append(delay)

    wrong = settings.model_copy(update={"token": SecretStr("not-the-token")})
    session = AgentSession(wrong, runtime, gpus, sleep=record)
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="rejected the join token"):
        await asyncio.wait_for(session.run(), 5)

    assert time.monotonic() - started < 2
    assert stub.attempts == 1
    assert slept == []
    assert stub.hellos == []


async def test_refused_protocol_version_fails_at_once(
    stub: StubController, settings: AgentSettings, runtime: MemoryRuntime, gpus: FakeGpuReader
) -> None:
    stub.refuse_protocol = "agent protocol 1 unsupported; controller speaks 2"
    session = AgentSession(settings, runtime, gpus)
    with pytest.raises(ProtocolVersionRejected, match="controller speaks 2"):
        await asyncio.wait_for(session.run(), 5)
    assert stub.attempts == 1


async def test_a_cancel_that_comes_out_as_a_lost_connection_still_ends_the_session(
    settings: AgentSettings, runtime: MemoryRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel landing while a connection ends can surface as the connection's
    error (its task group's): the session stops all the same, it does not
    reconnect (seen: one of 1,000 sessions kept running after its cancel)."""
    from agent.session import _session  # noqa: PLC0415
    from agent.session._errors import ConnectionLost  # noqa: PLC0415

    attempts = 0

    async def connect_once(self: object, supervisors: object) -> None:
        nonlocal attempts
        attempts += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ConnectionLost("stream ended") from None

    monkeypatch.setattr(_session.AgentSession, "_connect_once", connect_once)
    task = asyncio.create_task(AgentSession(settings, runtime, FakeGpuReader()).run())
    await wait_until(lambda: attempts == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert attempts == 1


async def test_shutdown_closes_the_stream_and_leaves_containers_running(
    stub: StubController, settings: AgentSettings, runtime: MemoryRuntime, gpus: FakeGpuReader
) -> None:
    task = asyncio.create_task(AgentSession(settings, runtime, gpus).run())
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1"))
    await _running(stub, "d1")

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: stub.disconnects == 1)
    assert [c.state for c in await runtime.list_containers()] == ["running"]
    assert ("stop", "d1") not in runtime.events


def _chunks(stub: StubController, request_id: str) -> list[agent_pb2.LogChunk]:
    return [
        m.log_chunk
        for m in stub.messages
        if m.WhichOneof("payload") == "log_chunk" and m.log_chunk.request_id == request_id
    ]


async def test_follow_logs_streams_chunks_until_stop_follow(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(deploy_command("d1"))
    await _running(stub, "d1")
    stub.push(
        agent_pb2.ControllerMessage(
            follow_logs=agent_pb2.FollowLogs(request_id="f-1", deployment_id="d1", tail=10)
        )
    )
    await wait_until(lambda: len(_chunks(stub, "f-1")) == 1)
    assert "serving Qwen/Qwen2.5-0.5B-Instruct" in _chunks(stub, "f-1")[0].data
    await wait_until(lambda: runtime.followers("d1") == 1)
    runtime.append_log("d1", "token throughput: 42 tok/s")
    await wait_until(lambda: len(_chunks(stub, "f-1")) == 2)
    assert _chunks(stub, "f-1")[1].data == "token throughput: 42 tok/s\n"

    stub.push(agent_pb2.ControllerMessage(stop_follow=agent_pb2.StopFollow(request_id="f-1")))
    await wait_until(lambda: _chunks(stub, "f-1")[-1].eof)
    assert _chunks(stub, "f-1")[-1].error == ""
    assert runtime.followers("d1") == 0


async def test_follow_logs_of_a_missing_container_ends_with_an_error(
    stub: StubController, start_session: StartSession
) -> None:
    start_session()
    await wait_until(lambda: stub.connected)
    stub.push(
        agent_pb2.ControllerMessage(
            follow_logs=agent_pb2.FollowLogs(request_id="f-2", deployment_id="nope", tail=10)
        )
    )
    await wait_until(lambda: bool(_chunks(stub, "f-2")))
    (chunk,) = _chunks(stub, "f-2")
    assert chunk.eof and "nope" in chunk.error
