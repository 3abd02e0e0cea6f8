"""In-flight counts (``inflight``) and picking (``picking``) alone, on the event
loop: leases that move and end once, ``idle`` woken by the last end, timing
out, leaving nothing behind; round robin over a set that changes."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from controller.gateway.errors import GatewayError
from controller.gateway.inflight import InFlight
from controller.gateway.picking import Pickers, RoundRobin
from controller.gateway.routes import Route, Upstream, usable

A = Upstream("a", "w1", "127.0.0.1", 8001)
B = Upstream("b", "w2", "127.0.0.1", 8002)
C = Upstream("c", "w2", "127.0.0.1", 8003)


def route(*instances: Upstream, deployment_id: str = "d1") -> Route:
    return Route(deployment_id, "tiny", "tiny", "running", 0, instances)


def test_a_lease_counts_at_one_instance_and_ends_once() -> None:
    counts = InFlight()
    first, second = counts.lease(), counts.lease()
    first.take("a")
    second.take("a")
    assert counts.in_flight("a") == 2
    first.take("b")  # a retry moves it
    assert (counts.in_flight("a"), counts.in_flight("b")) == (1, 1)
    first.end()
    first.end()
    second.end()
    assert counts.counts() == {}
    assert counts.in_flight("a") == counts.in_flight("b") == 0


async def test_idle_wakes_when_the_last_request_ends() -> None:
    counts = InFlight()
    leases = [counts.lease() for _ in range(2)]
    for lease in leases:
        lease.take("a")
    waiting = asyncio.create_task(counts.idle("a", timeout=30))
    other = asyncio.create_task(counts.idle("a", timeout=30))
    await asyncio.sleep(0)
    leases[0].end()
    await asyncio.sleep(0)
    assert not waiting.done()  # one is still in flight
    leases[1].end()
    assert list(await asyncio.wait_for(asyncio.gather(waiting, other), 1)) == [True, True]
    assert counts._waiters == {}


async def test_idle_at_once_when_nothing_is_in_flight() -> None:
    counts = InFlight()
    assert await counts.idle("never-used", timeout=0) is True


async def test_idle_times_out_and_leaves_no_waiter() -> None:
    counts = InFlight()
    lease = counts.lease()
    lease.take("a")
    assert await counts.idle("a", timeout=0.01) is False
    assert counts._waiters == {}
    cancelled = asyncio.create_task(counts.idle("a", timeout=30))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert counts._waiters == {}
    lease.end()
    assert counts.in_flight("a") == 0


def test_round_robin_takes_each_in_turn_as_the_set_changes() -> None:
    picker = RoundRobin()
    assert [picker.pick([A, B, C], {}, {}) for _ in range(6)] == [A, B, C, A, B, C]
    assert [picker.pick([A, C], {}, {}) for _ in range(2)] == [A, C]


def test_pickers_keep_one_position_per_deployment() -> None:
    pickers = Pickers(InFlight())
    one, two = route(A, B), route(A, B, deployment_id="d2")
    assert pickers.pick(one, one.instances, {}, {}) == A
    assert pickers.pick(two, two.instances, {}, {}) == A
    assert pickers.pick(one, one.instances, {}, {}) == B
    assert pickers.pick(one, [C], {}, {}) == C  # a single candidate: that one


def test_usable_instances_are_those_on_online_workers() -> None:
    served = route(A, B, C)
    assert served.usable(lambda worker: worker == "w2") == [B, C]
    assert served.usable(lambda worker: False) == []


def test_a_route_without_usable_instances_is_503() -> None:
    def refusal(served: Route, online: bool = True) -> tuple[int, str]:
        with pytest.raises(GatewayError) as info:
            usable(served, lambda _worker: online)
        return info.value.status_code, info.value.code

    assert refusal(dataclasses.replace(route(A), status="starting")) == (503, "model_not_ready")
    assert refusal(route()) == (503, "model_not_ready")
    assert refusal(route(A, B), online=False) == (503, "worker_offline")
    assert usable(route(A, B), lambda worker: worker == "w1") == [A]
