"""Benchmark: ``GET /api/deployments?limit=100`` with 10,000 deployments stored.

Seeds a fresh SQLite data directory, starts the real controller as its own
process (so client and server do not share an event loop), and times
sequential requests at several offsets. Target: p99 < 20 ms.

    .venv/bin/python -m bench.deployments_list [--rows 10000] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.fleetbench import free_port, percentile
from controller.store import Database, Deployment
from controller.store.timeutil import utcnow

PASSWORD = "bench-password"


async def seed(data_dir: Path, rows: int) -> None:
    db = Database(f"sqlite+aiosqlite:///{data_dir / 'lmstack.db'}")
    await db.create_schema()
    async with db.session() as session:
        now = utcnow()
        session.add_all(
            Deployment(
                name=f"model-{i:05d}",
                backend="vllm",
                model="meta-llama/Llama-2-7b-chat-hf",
                status="running" if i % 3 else "pending",
                config={"gpu_memory_utilization": 0.9, "max_model_len": 4096},
                created_at=now,
                updated_at=now,
            )
            for i in range(rows)
        )
        await session.commit()
    await db.close()


async def wait_healthy(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):
        try:
            async with http.get(url + "/health") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("controller did not start")


async def run(rows: int, requests: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        await seed(data_dir, rows)
        port = free_port()
        env = {**os.environ, "LMSTACK_ADMIN_PASSWORD": PASSWORD, "LMSTACK_LOG_LEVEL": "WARNING"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controller.main", "--port", str(port),
            "--data-dir", str(data_dir), "--grpc-port", "0", env=env,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        worst = 0.0
        try:
            async with aiohttp.ClientSession() as http:
                await wait_healthy(http, url)
                login = {"username": "admin", "password": PASSWORD}
                async with http.post(url + "/api/auth/login", json=login) as resp:
                    token = (await resp.json())["access_token"]
                headers = {"Authorization": f"Bearer {token}"}
                print(f"{rows} deployments stored; {requests} sequential requests per offset")
                print(f"{'offset':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
                for offset in (0, 1000, 5000, rows - 100):
                    path = f"{url}/api/deployments?limit=100&skip={offset}"
                    for _ in range(20):  # warm-up
                        async with http.get(path, headers=headers) as resp:
                            await resp.read()
                    samples = []
                    for _ in range(requests):
                        start = time.perf_counter()
                        async with http.get(path, headers=headers) as resp:
                            body = await resp.json()
                        samples.append((time.perf_counter() - start) * 1000)
                        assert resp.status == 200 and len(body["items"]) == 100
                    p99 = percentile(samples, 99)
                    worst = max(worst, p99)
                    print(
                        f"{offset:>8} {statistics.median(samples):>8.2f} {p99:>8.2f} "
                        f"{statistics.fmean(samples):>8.2f}"
                    )
        finally:
            proc.terminate()
            await proc.wait()
    verdict = "PASS" if worst < 20 else "FAIL"
    print(f"worst p99 {worst:.2f} ms (target < 20 ms): {verdict}")
    return 0 if worst < 20 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.rows, args.requests)))


if __name__ == "__main__":
    main()
