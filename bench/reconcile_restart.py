"""Benchmark: a controller restart under 1,000 workers and 3,000 instances.

The agents are the real ``AgentSession`` over real gRPC with an in-memory
runtime and 8 simulated GPUs each, all in this process, their reconnect
back-off capped at 1 s so what is measured is the controller, not the agents'
back-off. Setup, through REST: 1,000 deployments of 3 replicas (1 GPU each),
placed by the scheduler, until every one has 3 ready replicas.

Then the controller is killed (SIGKILL: no shutdown path runs) and a new one is
started on the same data directory and ports. From its process start:

* agents online: every worker ``online`` again (GET /api/workers);
* reconciled: additionally every deployment ``running`` with its replicas
  ready, every instance ``running`` in the container it ran in before, and
  every instance's state confirmed by its agent since the restart. The
  controller reconciles level-triggered (``controller.fleet.servicer``): each
  Hello is answered with a Deploy per instance the worker holds, which the
  agent's runtime adopts ("already running") and reports; an instance counts
  once that report is stored (its ``status_message``);
* the controller's CPU seconds in that time (as % of one core) and its RSS.

Nothing may be restarted: after the restart no agent's runtime may start a
container (a Deploy that is not an adoption) or receive a Stop; either fails
the benchmark, as does missing the target. Also printed: agents whose stream
was lost again during the reconciliation (their instances were deployed twice,
each adopted again), e.g. closed for missed heartbeats while the controller was
busy.

Target: reconciled < 30 s.

    .venv/bin/python -m bench.reconcile_restart [--agents 1000] [--deployments 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from agent.types import DeploySpec, Reporter
from bench.fleetbench import ControllerProcess, online_workers, simulated_agents
from tests.runtime.memory_runtime import MemoryRuntime

HEARTBEAT = 5.0
RECONNECT_MAX = 1.0
SETTLE = 2 * HEARTBEAT  # after reconciliation, before the commands are counted
ADOPTED = "already running"  # MemoryRuntime's report for a container it adopts


class CountingRuntime(MemoryRuntime):
    """Timestamps every Deploy and Stop the agent's runtime receives; what each
    did (adopted, started, stopped) is in ``MemoryRuntime.events``."""

    def __init__(self) -> None:
        super().__init__()
        self.last_command = 0.0

    async def deploy(self, spec: DeploySpec, report: Reporter) -> None:
        self.last_command = time.perf_counter()
        await super().deploy(spec, report)

    async def stop(
        self, instance_id: str, remove: bool, report: Reporter, cluster_id: str = ""
    ) -> None:
        self.last_command = time.perf_counter()
        await super().stop(instance_id, remove, report, cluster_id)


@dataclass
class Commands:
    deploys: int  # Deploy commands received (adoptions included)
    starts: int  # containers started (a Deploy that was not an adoption)
    stops: int

    @staticmethod
    def count(runtimes: list[CountingRuntime]) -> Commands:
        kinds = [kind for runtime in runtimes for kind, _ in runtime.events]
        return Commands(kinds.count("deploy"), kinds.count("deployed"), kinds.count("stop"))

    def __sub__(self, other: Commands) -> Commands:
        return Commands(
            self.deploys - other.deploys, self.starts - other.starts, self.stops - other.stops
        )


def redeployed(runtimes: list[CountingRuntime], marks: list[int]) -> int:
    """Agents that got a Deploy twice for an instance since ``marks`` (their
    stream was lost and they said Hello again)."""
    agents = 0
    for runtime, mark in zip(runtimes, marks, strict=True):
        deploys = Counter(i for kind, i in runtime.instance_events[mark:] if kind == "deploy")
        agents += any(n > 1 for n in deploys.values())
    return agents


async def all_deployments(ctl: ControllerProcess, http: aiohttp.ClientSession) -> list[Any]:
    items: list[Any] = []
    while True:
        url = f"{ctl.url}/api/deployments?limit=1000&skip={len(items)}"
        async with http.get(url, headers=ctl.headers()) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        items.extend(body["items"])
        if not body["items"] or len(items) >= body["total"]:
            return items


async def create_deployments(
    ctl: ControllerProcess, http: aiohttp.ClientSession, count: int, replicas: int, parallel: int
) -> None:
    names = iter(range(count))

    async def creator() -> None:
        for i in names:
            body = {
                "name": f"rr-{i:05d}",
                "model": "m",
                "replicas": replicas,
                "config": {"gpu_count": 1},
            }
            async with http.post(
                ctl.url + "/api/deployments", json=body, headers=ctl.headers()
            ) as resp:
                assert resp.status == 201, await resp.text()

    await asyncio.gather(*(creator() for _ in range(parallel)))


def unsettled(items: list[Any], replicas: int, containers: dict[str, str]) -> str:
    """Why the deployments are not yet reconciled; empty when they are. With
    ``containers`` (instance id → container id before the restart) each instance
    must also run in its old container, confirmed since the restart."""
    for item in items:
        if item["status"] != "running" or item["ready_replicas"] != replicas:
            return f"{item['name']}: {item['status']}, {item['ready_replicas']}/{replicas} ready"
        for instance in item["instances"]:
            if instance["status"] != "running":
                return f"instance {instance['id']}: {instance['status']}"
            if containers and instance["container_id"] != containers.get(instance["id"]):
                return f"instance {instance['id']}: not in its old container"
            if containers and instance["status_message"] != ADOPTED:
                return f"instance {instance['id']}: not confirmed since the restart"
    if containers and sum(len(item["instances"]) for item in items) != len(containers):
        return "instances differ from before the restart"
    return ""


async def wait_workers(
    ctl: ControllerProcess, http: aiohttp.ClientSession, count: int, within: float, pause: float
) -> None:
    deadline = time.monotonic() + within
    while len(workers := await online_workers(ctl, http)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(workers)} of {count} agents online after {within:g} s")
        await asyncio.sleep(pause)


async def wait_settled(
    ctl: ControllerProcess,
    http: aiohttp.ClientSession,
    replicas: int,
    containers: dict[str, str],
    within: float,
    pause: float,
) -> list[Any]:
    deadline = time.monotonic() + within
    while True:
        items = await all_deployments(ctl, http)
        if not (why := unsettled(items, replicas, containers)):
            return items
        if time.monotonic() > deadline:
            raise RuntimeError(f"not reconciled after {within:g} s: {why}")
        await asyncio.sleep(pause)


async def run(agents: int, deployments: int, replicas: int, parallel: int, target: float) -> int:
    # Every agent warns of each refused reconnect while no controller is up.
    logging.getLogger("lmstack.agent").setLevel(logging.ERROR)
    runtimes: list[CountingRuntime] = []

    def runtime() -> CountingRuntime:
        runtimes.append(CountingRuntime())
        return runtimes[-1]

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        first = ControllerProcess(data_dir, heartbeat=HEARTBEAT)
        timeout = aiohttp.ClientTimeout(total=60)  # a controller that hangs fails the run
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            contextlib.AsyncExitStack() as stack,
        ):
            await first.start(http)
            stack.push_async_callback(first.stop)
            setup = time.monotonic()
            await stack.enter_async_context(
                simulated_agents(
                    f"127.0.0.1:{first.grpc_port}",
                    Path(tmp),
                    agents,
                    {},
                    runtime=runtime,
                    reconnect_max_seconds=RECONNECT_MAX,
                )
            )
            await wait_workers(first, http, agents, 120, 0.5)
            await create_deployments(first, http, deployments, replicas, parallel)
            items = await wait_settled(first, http, replicas, {}, 600, 1.0)
            containers = {i["id"]: i["container_id"] for item in items for i in item["instances"]}
            print(
                f"setup: {agents} agents, {deployments} deployments x {replicas} replicas "
                f"({len(containers)} instances running) in {time.monotonic() - setup:.1f} s"
            )

            await first.kill()
            before = Commands.count(runtimes)
            marks = [len(runtime.instance_events) for runtime in runtimes]
            second = ControllerProcess(
                data_dir, heartbeat=HEARTBEAT, port=first.port, grpc_port=first.grpc_port
            )
            started = time.perf_counter()
            await second.start(http)
            stack.push_async_callback(second.stop)
            up = time.perf_counter() - started
            await wait_workers(second, http, agents, 120, 0.25)
            online = time.perf_counter() - started
            await wait_settled(second, http, replicas, containers, 120, 0.25)
            reconciled = time.perf_counter() - started
            cpu, rss = second.cpu_seconds(), second.rss_mib()
            # A late restart would come from a full reconciliation pass (every
            # 5 s) or a missed heartbeat: wait for both before counting.
            await asyncio.sleep(SETTLE)
            last_command = max((r.last_command for r in runtimes), default=started) - started
            after = Commands.count(runtimes) - before
            twice = redeployed(runtimes, marks)
            workers = len(await online_workers(second, http))

    restarts = after.starts + after.stops
    ok = reconciled < target and restarts == 0 and workers == agents
    print(
        f"restart: heartbeat {HEARTBEAT:g} s, agents' reconnect back-off capped at "
        f"{RECONNECT_MAX:g} s; commands counted {SETTLE:g} s after reconciliation"
    )
    print(f"{'':<34} {'value':>10}")
    rows = [
        ("controller answering /health, s", f"{up:.2f}"),
        ("agents online, s", f"{online:.2f}"),
        ("last Deploy/Stop at an agent, s", f"{last_command:.2f}"),
        ("every instance reconciled, s", f"{reconciled:.2f}"),
        ("controller CPU, s", f"{cpu:.2f}"),
        ("controller CPU, % of one core", f"{cpu / reconciled * 100:.1f}"),
        ("controller RSS, MiB", f"{rss:.1f}"),
        ("workers online at the end", f"{workers}"),
        ("Deploys after restart (adoptions)", f"{after.deploys}"),
        ("agents whose stream was lost again", f"{twice}"),
        ("containers started after restart", f"{after.starts}"),
        ("Stops after restart", f"{after.stops}"),
    ]
    for label, value in rows:
        print(f"{label:<34} {value:>10}")
    if restarts:
        print(f"FAIL: {restarts} instance(s) started or stopped after the restart")
    print(
        f"{len(containers)} instances on {agents} workers reconciled in {reconciled:.1f} s, "
        f"{restarts} restarted (target < {target:g} s, none restarted):",
        "PASS" if ok else "FAIL",
    )
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=8, help="concurrent creates in setup")
    parser.add_argument("--target", type=float, default=30.0, help="seconds")
    args = parser.parse_args()
    code = asyncio.run(
        run(args.agents, args.deployments, args.replicas, args.parallel, args.target)
    )
    raise SystemExit(code)


if __name__ == "__main__":
    main()
