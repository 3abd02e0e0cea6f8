"""Benchmark: the gateway's cost over calling the engine directly.

The same workload, in one run, straight to the stand-in engine and through
the gateway (controller in its own process, a real agent session reporting
the deployment running, the stand-in engine as a process). The two paths are
measured in alternating rounds, so a shared machine's drift (this one has 2
cores for three busy processes) does not favour either:

* non-streaming requests per second at concurrency 1, 16 and 64;
* p50/p99 latency and the gateway's added latency;
* streaming time to first token, direct and through the gateway.

Targets on this machine: p50 added latency ≤ 0.5 ms at concurrency 1;
throughput ≥ 0.7x direct at concurrency 64; TTFT added ≤ 1 ms.

    .venv/bin/python -m bench.gateway [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from agent.gpu import SimulatedGpuReader
from agent.session import AgentSession
from bench.fleetbench import (
    TOKEN,
    ControllerProcess,
    free_port,
    online_workers,
    percentile,
)
from shared.settings import AgentSettings
from tests.runtime.memory_runtime import MemoryRuntime

ROUNDS = 8
STANDIN = Path(__file__).resolve().parents[1] / "tests" / "engine" / "standin_engine.py"
MODEL = "bench-model"
BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
).encode()
STREAM_BODY = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 8,
        "stream": True,
    }
).encode()


async def start_engine(port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(STANDIN), "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", MODEL, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                    if resp.status == 200:
                        return proc
            await asyncio.sleep(0.05)
    raise RuntimeError("stand-in engine did not start")


async def load(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], concurrency: int, total: int
) -> tuple[float, list[float]]:
    """Requests per second and each request's latency in ms."""
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            async with http.post(url, data=BODY, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            latencies.append((time.perf_counter() - start) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - began), latencies


async def ttft(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int
) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        async with http.post(url, data=STREAM_BODY, headers=headers) as resp:
            async for line in resp.content:
                if b'"content": "lorem"' in line or b'"content":"lorem"' in line:
                    samples.append((time.perf_counter() - start) * 1000)
            assert resp.status == 200
    return samples


@dataclass(frozen=True)
class GatewayStack:
    """A controller process with one running deployment on the stand-in engine."""

    http: aiohttp.ClientSession
    ctl: ControllerProcess
    engine_port: int


@contextlib.asynccontextmanager
async def gateway_stack() -> AsyncIterator[GatewayStack]:
    """The controller as a process, a real agent session (in-memory runtime) and
    the stand-in engine on the one port the controller may hand out, with the
    deployment ``MODEL`` placed on it and reported running."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        engine = await start_engine(port)
        ctl = ControllerProcess(Path(tmp) / "data", heartbeat=5.0)
        os.environ["LMSTACK_ENGINE_PORT_MIN"] = str(port)
        os.environ["LMSTACK_ENGINE_PORT_MAX"] = str(port)
        connector = aiohttp.TCPConnector(limit=0)
        try:
            async with aiohttp.ClientSession(connector=connector) as http:
                try:
                    await ctl.start(http)
                    async with _agent(ctl, tmp):
                        yield await _deployed(ctl, http, port)
                finally:
                    await ctl.stop()
        finally:
            # Also when the controller never came up: the engine never outlives us.
            engine.terminate()
            await engine.wait()


@contextlib.asynccontextmanager
async def _agent(ctl: ControllerProcess, tmp: str) -> AsyncIterator[None]:
    settings = AgentSettings(
        controller=f"127.0.0.1:{ctl.grpc_port}", token=TOKEN, name="bench",
        state_dir=Path(tmp) / "agent", advertise_address="127.0.0.1",
    )  # fmt: skip
    session = AgentSession(settings, MemoryRuntime(), SimulatedGpuReader(1, 80))
    agent = asyncio.create_task(session.run())
    try:
        yield
    finally:
        agent.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await agent


async def _deployed(ctl: ControllerProcess, http: aiohttp.ClientSession, port: int) -> GatewayStack:
    """``MODEL`` placed on the agent's worker and reported running."""
    while not (workers := await online_workers(ctl, http)):
        await asyncio.sleep(0.05)
    body = {"name": MODEL, "model": "m", "worker_id": workers[0]}
    async with http.post(ctl.url + "/api/deployments", json=body, headers=ctl.headers()) as resp:
        assert resp.status == 201, await resp.text()
        deployment_id = (await resp.json())["id"]
    await running(ctl, http, deployment_id)
    return GatewayStack(http, ctl, port)


async def running(ctl: ControllerProcess, http: aiohttp.ClientSession, deployment_id: str) -> None:
    """Wait until the agent reported the deployment running."""
    url = f"{ctl.url}/api/deployments/{deployment_id}"
    for _ in range(200):
        async with http.get(url, headers=ctl.headers()) as resp:
            if (await resp.json())["status"] == "running":
                return
        await asyncio.sleep(0.05)
    raise RuntimeError("the deployment never ran")


async def new_key(stack: GatewayStack, name: str, limits: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"name": name} if limits is None else {"name": name, "limits": limits}
    async with stack.http.post(
        stack.ctl.url + "/api/api-keys", json=body, headers=stack.ctl.headers()
    ) as resp:
        assert resp.status == 201, await resp.text()
        key = (await resp.json())["key"]
    assert isinstance(key, str)
    return key


async def run(requests: int) -> int:
    async with gateway_stack() as stack:
        key = await new_key(stack, "bench")
        return await measure(stack.http, stack.engine_port, stack.ctl.url, key, requests)


@dataclass
class Side:
    """One path's results, summed over the rounds of a comparison."""

    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)


async def compare(
    http: aiohttp.ClientSession,
    paths: tuple[tuple[str, dict[str, str]], tuple[str, dict[str, str]]],
    concurrency: int,
    total: int,
) -> tuple[Side, Side]:
    """The same load on both paths, in alternating rounds (the order flipping
    each round), so drift on a shared machine weighs on both alike."""
    sides = (Side(), Side())
    per_round = max(total // ROUNDS, concurrency)
    for round_ in range(ROUNDS):
        order = (0, 1) if round_ % 2 == 0 else (1, 0)
        for i in order:
            url, headers = paths[i]
            rps, latencies = await load(http, url, headers, concurrency, per_round)
            sides[i].requests += per_round
            sides[i].seconds += per_round / rps
            sides[i].latencies.extend(latencies)
    return sides


async def measure(
    http: aiohttp.ClientSession, port: int, controller: str, key: str, requests: int
) -> int:
    direct = f"http://127.0.0.1:{port}/v1/chat/completions"
    gateway = f"{controller}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    plain = {"Content-Type": "application/json"}
    await load(http, direct, plain, 4, 200)  # warm-up
    await load(http, gateway, auth, 4, 200)
    print(f"{requests} non-streaming chat completions per path and concurrency (8 tokens each),")
    print(f"in {ROUNDS} alternating rounds")
    print(f"{'conc':>4} {'direct rps':>10} {'gw rps':>8} {'ratio':>6} "
          f"{'direct p50':>10} {'gw p50':>7} {'added p50':>9} {'added p99':>9}")  # fmt: skip
    verdicts = []
    for concurrency in (1, 16, 64):
        d, g = await compare(http, ((direct, plain), (gateway, auth)), concurrency, requests)
        added99 = percentile(g.latencies, 99) - percentile(d.latencies, 99)
        print(
            f"{concurrency:>4} {d.rps:>10.0f} {g.rps:>8.0f} {g.rps / d.rps:>6.2f} "
            f"{d.p50:>8.2f}ms {g.p50:>5.2f}ms {g.p50 - d.p50:>7.3f}ms {added99:>7.3f}ms"
        )
        if concurrency == 1:
            verdicts.append(("p50 added <= 0.5 ms at c=1", g.p50 - d.p50 <= 0.5))
        if concurrency == 64:
            verdicts.append(("throughput >= 0.7x direct at c=64", g.rps / d.rps >= 0.7))
    d_ttft: list[float] = []
    g_ttft: list[float] = []
    for _ in range(ROUNDS):
        d_ttft += await ttft(http, direct, plain, 25)
        g_ttft += await ttft(http, gateway, auth, 25)
    added = statistics.median(g_ttft) - statistics.median(d_ttft)
    print(
        f"streaming TTFT p50: direct {statistics.median(d_ttft):.2f} ms, "
        f"gateway {statistics.median(g_ttft):.2f} ms, added {added:.3f} ms"
    )
    verdicts.append(("TTFT added <= 1 ms", added <= 1.0))
    for name, ok in verdicts:
        print(f"{name}: {'PASS' if ok else 'FAIL'}")
    return 0 if all(ok for _, ok in verdicts) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    raise SystemExit(asyncio.run(run(parser.parse_args().requests)))


if __name__ == "__main__":
    main()
