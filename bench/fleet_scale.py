"""Benchmark: one controller holding 100, 500 and 1,000 agents.

The agents are the real ``AgentSession`` over real gRPC streams with an
in-memory runtime and 8 simulated GPUs each, heartbeating every 5 s, all in
this process; the controller runs as its own process so its CPU and memory
can be read from /proc. At each scale: wait until every agent is online,
then over a steady window send commands (REST create → Deploy at the agent)
and read the controller's CPU use and resident memory.

Targets: 1,000 agents held, p99 command latency < 100 ms, controller under
50% of one core.

    .venv/bin/python -m bench.fleet_scale [--scales 100,500,1000] [--window 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.fleetbench import (
    ControllerProcess,
    command_latency,
    online_workers,
    percentile,
    simulated_agents,
)

HEARTBEAT = 5.0


async def run(scales: list[int], window: float) -> int:
    rows = []
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        ctl = ControllerProcess(Path(tmp) / "data", heartbeat=HEARTBEAT)
        arrivals: dict[str, float] = {}
        async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as stack:
            await ctl.start(http)
            stack.push_async_callback(ctl.stop)
            target = f"127.0.0.1:{ctl.grpc_port}"
            held = 0
            for scale in scales:
                await stack.enter_async_context(
                    simulated_agents(target, Path(tmp), scale - held, arrivals, held)
                )
                held = scale
                started = time.monotonic()
                while len(workers := await online_workers(ctl, http)) < scale:
                    if time.monotonic() - started > 120:
                        raise RuntimeError(f"only {len(workers)} of {scale} agents online")
                    await asyncio.sleep(0.5)
                joined = time.monotonic() - started
                await asyncio.sleep(HEARTBEAT)  # let the join burst settle
                cpu0, t0 = ctl.cpu_seconds(), time.monotonic()
                count = int(window * 4)
                samples = await command_latency(
                    ctl, http, workers, arrivals, count, f"s{scale}", pause=0.25
                )
                remaining = window - (time.monotonic() - t0)
                if remaining > 0:
                    await asyncio.sleep(remaining)
                cpu = (ctl.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
                still = len(await online_workers(ctl, http))
                p99 = percentile(samples, 99)
                rows.append(
                    (scale, still, joined, cpu, ctl.rss_mib(), statistics.median(samples), p99)
                )
                if scale >= 1000:
                    ok = ok and still == scale and p99 < 100 and cpu < 50
    print(f"heartbeat {HEARTBEAT:g} s; commands at 4/s over a {window:g} s window per scale")
    print(
        f"{'agents':>6} {'online':>6} {'join s':>7} {'ctl CPU%':>8} {'RSS MiB':>8} "
        f"{'cmd p50':>8} {'cmd p99':>8}"
    )
    for scale, still, joined, cpu, rss, p50, p99 in rows:
        print(
            f"{scale:>6} {still:>6} {joined:>7.1f} {cpu:>8.1f} {rss:>8.1f} "
            f"{p50:>6.2f}ms {p99:>6.2f}ms"
        )
    print("targets at 1,000 agents (all held, p99 < 100 ms, CPU < 50%):", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="100,500,1000")
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    raise SystemExit(asyncio.run(run(scales, args.window)))


if __name__ == "__main__":
    main()
