"""Benchmark: REST create → Deploy received by the agent (p50/p99).

One controller process, one agent (the real session over real gRPC, with an
in-memory runtime), sequential creates.

    .venv/bin/python -m bench.command_latency [--commands 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

import aiohttp

from bench.fleetbench import (
    ControllerProcess,
    command_latency,
    online_workers,
    percentile,
    simulated_agents,
)


async def run(commands: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ctl = ControllerProcess(Path(tmp) / "data", heartbeat=5.0)
        arrivals: dict[str, float] = {}
        async with aiohttp.ClientSession() as http:
            await ctl.start(http)
            try:
                target = f"127.0.0.1:{ctl.grpc_port}"
                async with simulated_agents(target, Path(tmp), 1, arrivals):
                    while not (workers := await online_workers(ctl, http)):
                        await asyncio.sleep(0.05)
                    await command_latency(ctl, http, workers, arrivals, 20, "warm")
                    samples = await command_latency(ctl, http, workers, arrivals, commands, "c")
            finally:
                await ctl.stop()
    print(f"REST create -> Deploy at the agent, {commands} sequential commands")
    print(
        f"p50 {statistics.median(samples):.2f} ms  p99 {percentile(samples, 99):.2f} ms  "
        f"max {max(samples):.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=300)
    asyncio.run(run(parser.parse_args().commands))


if __name__ == "__main__":
    main()
