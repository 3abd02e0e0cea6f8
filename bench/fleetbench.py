"""Shared pieces of the fleet benchmarks: a controller process, simulated
agents (the real ``AgentSession`` over real gRPC, in-memory runtime), and
process CPU/memory readings from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from agent.gpu import SimulatedGpuReader
from agent.session import AgentSession
from agent.types import DeploySpec, Reporter
from shared.settings import AgentSettings
from tests.runtime.memory_runtime import MemoryRuntime

PASSWORD = "bench-password"
TOKEN = "bench-join-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class TimedRuntime(MemoryRuntime):
    """Records when each Deploy reached the agent (keyed by deployment name)."""

    def __init__(self, arrivals: dict[str, float]) -> None:
        super().__init__()
        self._arrivals = arrivals

    async def deploy(self, spec: DeploySpec, report: Reporter) -> None:
        self._arrivals.setdefault(spec.name, time.perf_counter())
        await super().deploy(spec, report)


@dataclass
class ControllerProcess:
    data_dir: Path
    heartbeat: float
    port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, http: aiohttp.ClientSession) -> None:
        env = {
            **os.environ,
            "LMSTACK_ADMIN_PASSWORD": PASSWORD,
            "LMSTACK_AGENT_TOKEN": TOKEN,
            "LMSTACK_LOG_LEVEL": "WARNING",
            "LMSTACK_HEARTBEAT_INTERVAL": str(self.heartbeat),
            "LMSTACK_ENGINE_PORT_MAX": "65000",
        }
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controller.main", "--port", str(self.port),
            "--grpc-port", str(self.grpc_port), "--data-dir", str(self.data_dir), env=env,
        )  # fmt: skip
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with http.get(self.url + "/health") as resp:
                    if resp.status == 200:
                        break
            await asyncio.sleep(0.05)
        else:
            await self.stop()
            raise RuntimeError(f"the controller did not answer {self.url}/health within 10 s")
        login = {"username": "admin", "password": PASSWORD}
        async with http.post(self.url + "/api/auth/login", json=login) as resp:
            self.token = (await resp.json())["access_token"]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()

    async def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown path runs."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def simulated_agents(
    target: str,
    state_root: Path,
    count: int,
    arrivals: dict[str, float],
    start_index: int = 0,
    *,
    runtime: Callable[[], MemoryRuntime] | None = None,
    reconnect_max_seconds: float | None = None,
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """``count`` agents; each gets ``runtime()`` (default: a ``TimedRuntime``
    recording into ``arrivals``) and, when given, that reconnect back-off cap."""
    tasks = []
    for i in range(start_index, start_index + count):
        settings = AgentSettings(
            controller=target,
            token=TOKEN,
            name=f"sim-{i:04d}",
            state_dir=state_root / f"sim-{i:04d}",
            advertise_address="127.0.0.1",
        )
        if reconnect_max_seconds is not None:
            settings.reconnect_max_seconds = reconnect_max_seconds
        agent_runtime = runtime() if runtime is not None else TimedRuntime(arrivals)
        session = AgentSession(settings, agent_runtime, SimulatedGpuReader(8, 80))
        tasks.append(asyncio.create_task(session.run()))
        if i % 50 == 49:
            await asyncio.sleep(0.2)  # do not stampede the controller
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        # A session can lose a cancel that lands while its connection is ending
        # and run on (seen about once in 7 teardowns of 1,000 agents; likely
        # Python 3.11's TaskGroup raising the connection's error instead of the
        # cancel, which the session retries): cancel what still runs again.
        running: set[asyncio.Task[None]] = set(tasks)
        for attempt in range(10):
            if running:
                _, running = await asyncio.wait(running, timeout=10 if attempt == 0 else 2)
            if not running:
                break
            message = (
                f"{len(running)} agent session(s) still running after cancel; cancelling again"
            )
            print(message, file=sys.stderr)
            for task in running:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def online_workers(ctl: ControllerProcess, http: aiohttp.ClientSession) -> list[str]:
    async with http.get(ctl.url + "/api/workers", headers=ctl.headers()) as resp:
        body = await resp.json()
    return [w["id"] for w in body["items"] if w["status"] == "online"]


async def command_latency(
    ctl: ControllerProcess,
    http: aiohttp.ClientSession,
    workers: list[str],
    arrivals: dict[str, float],
    count: int,
    label: str,
    pause: float = 0.0,
) -> list[float]:
    """REST create → Deploy received by the agent, in milliseconds."""
    samples = []
    for i in range(count):
        name = f"{label}-{i:05d}"
        # CPU-only: the benchmark measures the command path, not GPU capacity.
        body = {
            "name": name,
            "model": "m",
            "worker_id": workers[i % len(workers)],
            "config": {"gpu_count": 0},
        }
        start = time.perf_counter()
        async with http.post(ctl.url + "/api/deployments", json=body, headers=ctl.headers()) as r:
            assert r.status == 201, await r.text()
        while name not in arrivals:
            await asyncio.sleep(0.0002)
        samples.append((arrivals[name] - start) * 1000)
        if pause:
            await asyncio.sleep(pause)
    return samples
