"""The restart policy as the controller sees it: AgentSession over real gRPC, the
controller double, MemoryRuntime behind it, back-off and probes in miniature
(``tests.agent.conftest``: probes every 20 ms, restarts after 50 ms, doubling)."""

from __future__ import annotations

import json

from agent.types import RUNNING
from shared.proto.lmstack.v1 import agent_pb2
from shared.settings import AgentSettings
from tests.agent.conftest import StartSession
from tests.agent.controller_stub import (
    ControllerServer,
    StubController,
    deploy_command,
    stop_command,
    wait_until,
)
from tests.runtime.memory_runtime import MemoryRuntime

INSTANCE = "5f3a2b1c-0000-4000-8000-000000000001"
# A restart no test waits for.
LONG_BACKOFF = {"restart_backoff_initial": 60.0, "restart_backoff_max": 60.0}


def _deploy(**config: object) -> agent_pb2.ControllerMessage:
    return deploy_command(
        "d1", instance_id=INSTANCE, config_json=json.dumps({"max_model_len": 4096, **config})
    )


def _statuses(stub: StubController) -> list[agent_pb2.DeploymentStatus]:
    return stub.instance_statuses(INSTANCE)


def _names(stub: StubController) -> list[str]:
    return stub.instance_status_names(INSTANCE)


async def _running(stub: StubController, count: int = 1) -> agent_pb2.DeploymentStatus:
    await wait_until(lambda: _names(stub).count(RUNNING) >= count)
    return [s for s in _statuses(stub) if s.status == RUNNING][count - 1]


async def _error(stub: StubController, count: int = 1) -> agent_pb2.DeploymentStatus:
    await wait_until(lambda: _names(stub).count("error") >= count)
    return [s for s in _statuses(stub) if s.status == "error"][count - 1]


async def _heartbeats_later(stub: StubController, n: int = 5) -> None:
    """Wait for ``n`` more heartbeats: each is after more probe intervals than the
    restart policy needs to act (heartbeats every 50 ms, probes every 20 ms)."""
    seen = len(stub.heartbeats())
    await wait_until(lambda: len(stub.heartbeats()) >= seen + n)


async def _connected(stub: StubController, start_session: StartSession) -> None:
    start_session()
    await wait_until(lambda: stub.connected)


async def test_an_engine_that_exits_is_restarted_after_the_backoff(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    await _connected(stub, start_session)
    stub.push(_deploy())
    first = await _running(stub)
    assert (first.instance_id, first.deployment_id, first.restarts) == (INSTANCE, "d1", 0)
    assert first.started_at.endswith("Z")

    runtime.exit_container(INSTANCE, 3, "RuntimeError: CUDA error: an illegal memory access")
    error = await _error(stub)
    assert (error.instance_id, error.deployment_id) == (INSTANCE, "d1")
    assert error.has_exit_code and error.exit_code == 3
    assert error.restarts == 0 and not error.final
    assert error.container_id == first.container_id
    assert error.message.startswith("engine exited with code 3; restart 1 in 0.05 s; last log")
    assert "illegal memory access" in error.message

    again = await _running(stub, 2)
    assert again.restarts == 1
    assert again.container_id != first.container_id
    # A restart reports as a deploy does.
    assert _names(stub) == ["pending", "starting", "running", "error"] * 1 + [
        "pending",
        "starting",
        "running",
    ]
    assert [s.restarts for s in _statuses(stub)[-3:]] == [1, 1, 1]
    await _heartbeats_later(stub, 1)
    [container] = stub.heartbeats()[-1].containers
    assert (container.instance_id, container.restarts, container.state) == (INSTANCE, 1, "running")
    assert runtime.instance_specs[INSTANCE].restarts == 1


async def test_an_engine_that_exits_before_it_is_ready_is_restarted(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    await _connected(stub, start_session)
    runtime.crash_next_deploy(INSTANCE, 1, "ValueError: unknown model architecture", times=2)
    stub.push(_deploy())
    first, second = await _error(stub), await _error(stub, 2)
    running = await _running(stub)

    assert first.exit_code == 1 and "before it was ready; restart 1 in 0.05 s" in first.message
    assert "unknown model architecture" in first.message
    # The back-off doubles while it keeps failing.
    assert (second.restarts, "restart 2 in 0.1 s" in second.message) == (1, True)
    assert running.restarts == 2
    assert runtime.deploys(INSTANCE) == 1


async def test_restart_policy_never_makes_the_first_exit_final(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    await _connected(stub, start_session)
    stub.push(_deploy(restart_policy="never"))
    await _running(stub)
    runtime.exit_container(INSTANCE, 137, "torch.OutOfMemoryError: CUDA out of memory")

    error = await _error(stub)
    assert error.final and error.exit_code == 137
    assert "code 137; not restarted: restart policy is never; last log lines:" in error.message
    assert "CUDA out of memory" in error.message
    await _heartbeats_later(stub)
    assert _names(stub).count("error") == 1
    assert runtime.deploys(INSTANCE) == 1
    assert stub.heartbeats()[-1].containers[0].state == "exited"


async def test_max_restarts_ends_the_restarts(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    await _connected(stub, start_session)
    stub.push(_deploy(max_restarts=1))
    await _running(stub)
    runtime.exit_container(INSTANCE, 2)
    await _running(stub, 2)
    runtime.exit_container(INSTANCE, 2)

    final = await _error(stub, 2)
    assert final.final and final.restarts == 1
    assert "not restarted: max_restarts (1) reached" in final.message
    await _heartbeats_later(stub)
    assert runtime.deploys(INSTANCE) == 2


async def test_a_clean_exit_is_final_on_failure_and_restarted_always(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    await _connected(stub, start_session)
    stub.push(_deploy())
    stub.push(
        deploy_command("d2", instance_id="i-always", config_json='{"restart_policy": "always"}')
    )
    await _running(stub)
    await wait_until(lambda: RUNNING in stub.instance_status_names("i-always"))
    runtime.exit_container(INSTANCE, 0)
    runtime.exit_container("i-always", 0)

    final = await _error(stub)
    assert final.final and "it exited with code 0 and the restart policy is on-failure" in (
        final.message
    )
    await wait_until(lambda: stub.instance_status_names("i-always").count(RUNNING) == 2)
    assert stub.instance_statuses("i-always")[-1].restarts == 1


async def test_three_failed_health_checks_restart_a_running_engine(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    await _connected(stub, start_session)
    stub.push(_deploy())
    first = await _running(stub)
    runtime.set_healthy(INSTANCE, False)
    runtime.append_log(INSTANCE, "engine hung in NCCL all-reduce")

    error = await _error(stub)
    assert error.message.startswith(
        "engine failed its health check 3 times in a row; restart 1 in 0.05 s; last log lines:"
    )
    assert "NCCL" in error.message
    assert not error.has_exit_code and not error.final
    # The hung engine was stopped (not removed: its logs stay until the restart).
    assert ("stop", INSTANCE) in runtime.instance_events
    again = await _running(stub, 2)
    assert (again.restarts, again.container_id != first.container_id) == (1, True)


async def test_a_stop_cancels_a_pending_restart(
    stub: StubController,
    settings: AgentSettings,
    start_session: StartSession,
    runtime: MemoryRuntime,
) -> None:
    start_session(settings.model_copy(update=LONG_BACKOFF))
    await wait_until(lambda: stub.connected)
    stub.push(_deploy())
    await _running(stub)
    runtime.exit_container(INSTANCE, 3)
    error = await _error(stub)
    assert "restart 1 in 60 s" in error.message

    stub.push(stop_command("d1", instance_id=INSTANCE))
    await wait_until(lambda: "stopped" in _names(stub))
    assert _names(stub)[-2:] == ["stopping", "stopped"]
    assert await runtime.list_containers() == []
    # The supervisor is gone: a new Deploy starts afresh at once, no back-off left over.
    stub.push(_deploy())
    again = await _running(stub, 2)
    assert again.restarts == 0
    assert runtime.deploys(INSTANCE) == 2


async def test_a_stop_cancels_a_deploy_in_flight_and_no_restart_follows(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    await _connected(stub, start_session)
    runtime.gate(INSTANCE)  # never released: an engine that never gets healthy
    stub.push(_deploy())
    await wait_until(lambda: _names(stub) == ["pending"])
    stub.push(stop_command("d1", instance_id=INSTANCE))
    await wait_until(lambda: "stopped" in _names(stub))
    await _heartbeats_later(stub)
    assert _names(stub) == ["pending", "stopped"]
    assert runtime.instance_events.count(("deploy", INSTANCE)) == 1


async def test_a_deploy_while_backing_off_keeps_the_wait_and_its_config_decides(
    stub: StubController,
    settings: AgentSettings,
    start_session: StartSession,
    runtime: MemoryRuntime,
) -> None:
    start_session(settings.model_copy(update=LONG_BACKOFF))
    await wait_until(lambda: stub.connected)
    stub.push(_deploy())
    await _running(stub)
    runtime.exit_container(INSTANCE, 3)
    await _error(stub)

    # Re-sent as after a reconnect: answered with where it stands, no early restart.
    stub.push(_deploy())
    again = await _error(stub, 2)
    assert not again.final and "restart 1 in" in again.message
    # A newer config with policy never makes the error final at once.
    stub.push(_deploy(restart_policy="never"))
    final = await _error(stub, 3)
    assert final.final and "not restarted: restart policy is never" in final.message
    assert runtime.deploys(INSTANCE) == 1
    # ...and loosening it again restarts the instance now.
    stub.push(_deploy(restart_policy="always"))
    running = await _running(stub, 2)
    assert running.restarts == 1


async def test_restarts_count_on_from_the_deploys_count(
    stub: StubController, start_session: StartSession, runtime: MemoryRuntime
) -> None:
    await _connected(stub, start_session)
    stub.push(deploy_command("d1", instance_id=INSTANCE, restarts=4))
    first = await _running(stub)
    assert first.restarts == 4
    runtime.exit_container(INSTANCE, 3)
    error = await _error(stub)
    assert error.restarts == 4 and "restart 5 in" in error.message
    assert (await _running(stub, 2)).restarts == 5


async def test_engines_are_restarted_while_the_controller_is_away(
    stub: StubController,
    stub_server: ControllerServer,
    start_session: StartSession,
    runtime: MemoryRuntime,
) -> None:
    await _connected(stub, start_session)
    stub.push(_deploy())
    await _running(stub)

    await stub_server.stop()
    await wait_until(lambda: not stub.connected)
    runtime.exit_container(INSTANCE, 3, "segfault")
    await wait_until(lambda: runtime.deploys(INSTANCE) == 2)
    await stub_server.start()
    await wait_until(lambda: len(stub.hellos) == 2 and stub.connected)

    [container] = stub.hellos[1].containers
    assert (container.instance_id, container.state, container.restarts) == (INSTANCE, "running", 1)
    # The controller's Deploy after the Hello is answered with the restarted engine.
    stub.push(_deploy())
    await wait_until(lambda: _statuses(stub)[-1].restarts == 1)
    assert _statuses(stub)[-1].status == RUNNING


async def test_a_heartbeat_that_sees_the_exit_does_not_wait_for_the_health_check(
    stub: StubController,
    settings: AgentSettings,
    start_session: StartSession,
    runtime: MemoryRuntime,
) -> None:
    start_session(settings.model_copy(update={"health_check_interval": 60.0}))
    await wait_until(lambda: stub.connected)
    stub.push(_deploy())
    await _running(stub)
    runtime.exit_container(INSTANCE, 3)
    error = await _error(stub)
    assert "restart 1 in 0.05 s" in error.message
    assert (await _running(stub, 2)).restarts == 1
