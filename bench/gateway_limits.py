"""Benchmark: what a key's limits cost the gateway, against an unlimited key.

One run, one controller process, a real agent session and the stand-in engine
(as ``bench.gateway``), two API keys: one unlimited, one held to every limit
(rpm, tpm, max_parallel and a daily token budget) set high enough never to
refuse. The two keys are measured in alternating rounds (the order flipping
each round), so a shared machine's drift weighs on both alike:

* non-streaming p50/p99 latency and requests per second at concurrency 1 and 16;
* the limited key's answers carry the ``x-ratelimit-*`` headers, none refused.

Target on this machine: the limited key's p50 within 0.05 ms of the unlimited
key's at concurrency 1.

    .venv/bin/python -m bench.gateway_limits [--requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp

from bench.fleetbench import percentile
from bench.gateway import BODY, compare, gateway_stack, load, new_key

TARGET_MS = 0.05
# Every limit, far above what the run can reach: admitted every time.
LIMITS = {"rpm": 10**9, "tpm": 10**12, "max_parallel": 10**6,
          "token_budget": 10**15, "budget_period": "day"}  # fmt: skip


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


async def check_headers(http: aiohttp.ClientSession, url: str, key: str) -> None:
    async with http.post(url, data=BODY, headers=auth(key)) as resp:
        await resp.read()
        assert resp.status == 200, resp.status
        assert resp.headers["x-ratelimit-limit-requests"] == str(LIMITS["rpm"]), resp.headers
        assert "x-ratelimit-remaining-tokens" in resp.headers


async def measure(
    http: aiohttp.ClientSession, url: str, free: str, limited: str, total: int
) -> int:
    await check_headers(http, url, limited)
    await load(http, url, auth(free), 4, 300)  # warm-up, both paths
    await load(http, url, auth(limited), 4, 300)
    print(f"{total} non-streaming chat completions per key and concurrency (8 tokens each)")
    print(f"{'conc':>4} {'free rps':>8} {'ltd rps':>8} {'free p50':>9} {'ltd p50':>8} "
          f"{'added p50':>9} {'free p99':>9} {'ltd p99':>8}")  # fmt: skip
    added_c1 = 0.0
    for concurrency in (1, 16):
        f, g = await compare(http, ((url, auth(free)), (url, auth(limited))), concurrency, total)
        added = g.p50 - f.p50
        if concurrency == 1:
            added_c1 = added
        print(
            f"{concurrency:>4} {f.rps:>8.0f} {g.rps:>8.0f} {f.p50:>7.3f}ms {g.p50:>6.3f}ms "
            f"{added:>7.4f}ms {percentile(f.latencies, 99):>7.3f}ms "
            f"{percentile(g.latencies, 99):>6.3f}ms"
        )
    await check_headers(http, url, limited)  # still admitted after the whole run
    ok = added_c1 <= TARGET_MS
    print(f"limited key p50 added <= {TARGET_MS} ms at c=1 ({added_c1:.4f} ms): "
          f"{'PASS' if ok else 'FAIL'}")  # fmt: skip
    return 0 if ok else 1


async def run(requests: int) -> int:
    async with gateway_stack() as stack:
        free = await new_key(stack, "unlimited")
        limited = await new_key(stack, "limited", LIMITS)
        url = f"{stack.ctl.url}/v1/chat/completions"
        return await measure(stack.http, url, free, limited, requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    raise SystemExit(asyncio.run(run(parser.parse_args().requests)))


if __name__ == "__main__":
    main()
