"""``lmstack-agent`` as a real process against the controller double."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tests.agent.controller_stub import (
    TOKEN,
    WORKER_ID,
    ControllerServer,
    StubController,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]

Launch = Callable[..., Coroutine[Any, Any, asyncio.subprocess.Process]]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Start ``python -m agent.main``; stderr goes to ``tmp_path/agent.log``."""
    processes: list[asyncio.subprocess.Process] = []

    async def start(*args: str, **env: str) -> asyncio.subprocess.Process:
        environment = {
            **os.environ,
            # No Docker engine at this address: the agent must join anyway.
            "LMSTACK_DOCKER_HOST": "unix:///nonexistent/docker.sock",
            "LMSTACK_HF_CACHE_DIR": str(tmp_path / "hf"),
            **env,
        }
        with (tmp_path / "agent.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent.main", *args,
                cwd=REPO, env=environment, stdout=log, stderr=log,
            )  # fmt: skip
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _exit_code(process: asyncio.subprocess.Process, timeout: float = 10.0) -> int:
    return await asyncio.wait_for(process.wait(), timeout)


async def test_agent_joins_and_exits_cleanly_on_sigterm(
    stub: StubController, stub_server: ControllerServer, launch: Launch, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    process = await launch(
        "--controller", stub_server.address, "--name", "sim-host",
        "--state-dir", str(state_dir), "--heartbeat-interval", "0.05",
        "--simulate-gpus", "2x16", "--log-level", "debug",
        LMSTACK_TOKEN=TOKEN,
    )  # fmt: skip
    await wait_until(lambda: len(stub.heartbeats()) >= 2, timeout=15)

    hello = stub.hellos[0]
    assert hello.name == "sim-host"
    assert hello.gpus_simulated
    assert [g.memory_total_bytes for g in hello.gpus] == [16 * 1024**3] * 2
    assert hello.runtime_error  # no Docker engine, still joined
    assert (state_dir / "worker_id").read_text().strip() == WORKER_ID

    process.send_signal(signal.SIGTERM)
    assert await _exit_code(process, timeout=5) == 0
    log = (tmp_path / "agent.log").read_text()
    assert "'token': '***'" in log
    assert TOKEN not in log
    assert "engine containers keep running" in log


async def test_agent_with_wrong_token_exits_without_retrying(
    stub: StubController, stub_server: ControllerServer, launch: Launch, tmp_path: Path
) -> None:
    process = await launch(
        "--controller", stub_server.address, "--token", "wrong-token",
        "--state-dir", str(tmp_path / "state"), "--simulate-gpus", "1x8",
    )  # fmt: skip

    assert await _exit_code(process) == 3
    assert stub.attempts == 1
    assert "rejected the join token" in (tmp_path / "agent.log").read_text()


async def test_agent_without_token_refuses_to_start(launch: Launch, tmp_path: Path) -> None:
    process = await launch("--controller", "127.0.0.1:9", "--simulate-gpus", "1x8")

    assert await _exit_code(process) == 2
    assert "no join token" in (tmp_path / "agent.log").read_text()


async def test_agent_with_bad_simulated_gpus_refuses_to_start(
    launch: Launch, tmp_path: Path
) -> None:
    process = await launch("--token", TOKEN, "--simulate-gpus", "lots")

    assert await _exit_code(process) == 2
    assert "COUNTxGIB" in (tmp_path / "agent.log").read_text()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("41999-41000", "MIN 41999 is greater than MAX 41000"),
        ("0-100", "between 1 and 65535"),
        ("41000-70000", "between 1 and 65535"),
        ("41000", "is not MIN-MAX"),
    ],
)
async def test_agent_with_a_bad_engine_port_range_refuses_to_start(
    launch: Launch, tmp_path: Path, value: str, says: str
) -> None:
    process = await launch("--token", TOKEN, "--engine-port-range", value)

    assert await _exit_code(process) == 2
    log = (tmp_path / "agent.log").read_text()
    assert "engine_port_range" in log and says in log


async def test_agent_sends_its_labels_in_hello(
    stub: StubController, stub_server: ControllerServer, launch: Launch, tmp_path: Path
) -> None:
    process = await launch(
        "--controller", stub_server.address, "--state-dir", str(tmp_path / "state"),
        "--simulate-gpus", "1x8", "--label", "gpu=a100", "--label", "rack=r7/row-2",
        LMSTACK_TOKEN=TOKEN, LMSTACK_LABELS="ignored=because-flags-win",
    )  # fmt: skip
    await wait_until(lambda: bool(stub.hellos), timeout=15)
    assert dict(stub.hellos[0].labels) == {"gpu": "a100", "rack": "r7/row-2"}
    process.send_signal(signal.SIGTERM)
    assert await _exit_code(process, timeout=5) == 0


async def test_agent_reads_labels_from_the_environment(
    stub: StubController, stub_server: ControllerServer, launch: Launch, tmp_path: Path
) -> None:
    process = await launch(
        "--controller", stub_server.address, "--state-dir", str(tmp_path / "state"),
        "--simulate-gpus", "1x8",
        LMSTACK_TOKEN=TOKEN, LMSTACK_LABELS="gpu=h100, zone=eu-west",
    )  # fmt: skip
    await wait_until(lambda: bool(stub.hellos), timeout=15)
    assert dict(stub.hellos[0].labels) == {"gpu": "h100", "zone": "eu-west"}
    process.send_signal(signal.SIGTERM)
    assert await _exit_code(process, timeout=5) == 0


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("gpu", "label 'gpu' is not key=value"),
        ("bad key=1", "label key 'bad key' does not match"),
        ("-gpu=a100", "label key '-gpu' does not match"),
        ("gpu=a 100", "label 'gpu': value 'a 100' does not match"),
        ("gpu=" + "x" * 64, "does not match ^[A-Za-z0-9._/-]{0,63}$"),
    ],
)
async def test_agent_with_a_bad_label_refuses_to_start(
    launch: Launch, tmp_path: Path, value: str, says: str
) -> None:
    process = await launch("--token", TOKEN, "--label", "ok=1", f"--label={value}")

    assert await _exit_code(process) == 2
    log = (tmp_path / "agent.log").read_text()
    assert "labels" in log and says in log


async def test_agent_with_a_label_given_twice_refuses_to_start(
    launch: Launch, tmp_path: Path
) -> None:
    process = await launch("--token", TOKEN, LMSTACK_LABELS="gpu=a100,gpu=h100")

    assert await _exit_code(process) == 2
    assert "label 'gpu' is given twice" in (tmp_path / "agent.log").read_text()
