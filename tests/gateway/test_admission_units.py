"""``DeploymentGates`` alone, on the event loop: FIFO hand-over, the limits a config
asks for, a raised or lowered limit, a waiter granted a slot as it is
cancelled, and admission keys that never reach an engine's command line."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from controller.gateway.admission import AdmissionLimits, DeploymentGates
from controller.gateway.errors import GatewayError
from shared.engines import ENGINES, EngineConfig
from tests.waiting import eventually


class Open(asyncio.BaseTransport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def is_closing(self) -> bool:
        return self.closed


@dataclass
class Client:
    transport: Open


@dataclass(frozen=True)
class Gated:
    deployment_id: str
    name: str
    admission: AdmissionLimits | None


async def queued(admission: DeploymentGates, count: int) -> None:
    await eventually(lambda: asyncio.sleep(0, admission.queued("dep-1")), lambda q: q == count)


def route(parallel: int, queued: int = 8, timeout: float = 30.0) -> Gated:
    return Gated("dep-1", "tiny", AdmissionLimits(parallel, queued, timeout))


def test_limits_and_their_defaults() -> None:
    assert AdmissionLimits.of(EngineConfig()) is None
    assert AdmissionLimits.of(EngineConfig(max_parallel=3)) == AdmissionLimits(3, 12, 30.0)
    config = EngineConfig(max_parallel=2, max_queued=0, queue_timeout=1.5)
    assert AdmissionLimits.of(config) == AdmissionLimits(2, 0, 1.5)


def test_admission_keys_reach_no_command_line() -> None:
    config = EngineConfig(max_parallel=2, max_queued=5, queue_timeout=3.0)
    for engine in ENGINES.values():
        assert engine.arguments(config) == [], engine.name


async def test_freed_slots_go_to_waiters_in_order() -> None:
    admission, gated, order = DeploymentGates(), route(1), []
    release = asyncio.Event()

    async def use(n: int) -> None:
        async with admission.admit(gated, Client(Open())):
            order.append(n)
            await release.wait()

    first = asyncio.create_task(use(0))
    await eventually(lambda: asyncio.sleep(0, order), lambda seen: seen == [0])
    waiters = []
    for n in (1, 2, 3):
        waiters.append(asyncio.create_task(use(n)))
        await queued(admission, n)
    release.set()
    await asyncio.gather(first, *waiters)
    assert order == [0, 1, 2, 3]
    assert (admission.in_flight("dep-1"), admission.queued("dep-1")) == (0, 0)


async def test_a_full_queue_refuses_at_once() -> None:
    admission, gated = DeploymentGates(), route(1, queued=0)
    async with admission.admit(gated, Client(Open())):
        with pytest.raises(GatewayError) as refused:
            async with admission.admit(gated, Client(Open())):
                pass
    assert refused.value.status_code == 429 and refused.value.code == "deployment_max_parallel"
    assert refused.value.headers == {"Retry-After": "1"}
    assert admission.in_flight("dep-1") == 0


async def test_a_raised_limit_wakes_waiters_and_a_lowered_one_drains() -> None:
    admission, held = DeploymentGates(), asyncio.Event()

    async def use(gated: Gated) -> None:
        async with admission.admit(gated, Client(Open())):
            await held.wait()

    tasks = [asyncio.create_task(use(route(1))) for _ in range(3)]
    await queued(admission, 2)
    tasks.append(asyncio.create_task(use(route(3))))  # the config changed: 3 slots
    await eventually(lambda: asyncio.sleep(0, admission.in_flight("dep-1")), lambda n: n == 3)
    assert admission.queued("dep-1") == 1
    tasks.append(asyncio.create_task(use(route(1))))  # lowered again: nobody new starts
    await queued(admission, 2)
    assert admission.in_flight("dep-1") == 3
    held.set()
    await asyncio.gather(*tasks)
    assert (admission.in_flight("dep-1"), admission.queued("dep-1")) == (0, 0)


async def test_a_waiter_cancelled_as_it_is_granted_passes_the_slot_on() -> None:
    admission, gated = DeploymentGates(), route(1)
    entered: list[str] = []

    async def use(name: str, hold: asyncio.Event) -> None:
        async with admission.admit(gated, Client(Open())):
            entered.append(name)
            await hold.wait()

    done = asyncio.Event()
    done.set()
    holder_release = asyncio.Event()
    holder = asyncio.create_task(use("holder", holder_release))
    unlucky = asyncio.create_task(use("unlucky", done))
    await queued(admission, 1)
    last = asyncio.create_task(use("last", done))
    await queued(admission, 2)
    holder_release.set()
    await holder  # the slot was handed to "unlucky", which has not run yet
    unlucky.cancel()
    await asyncio.gather(unlucky, return_exceptions=True)
    await last
    assert entered == ["holder", "last"]
    assert (admission.in_flight("dep-1"), admission.queued("dep-1")) == (0, 0)


async def test_a_waiter_whose_client_left_leaves_the_queue() -> None:
    admission, gated, release = DeploymentGates(probe_interval=0.01), route(1), asyncio.Event()
    client = Client(Open())

    async def hold() -> None:
        async with admission.admit(gated, Client(Open())):
            await release.wait()

    async def wait() -> None:
        async with admission.admit(gated, client):
            pass

    holder = asyncio.create_task(hold())
    await eventually(lambda: asyncio.sleep(0, admission.in_flight("dep-1")), lambda n: n == 1)
    waiter = asyncio.create_task(wait())
    await queued(admission, 1)
    client.transport.closed = True
    with pytest.raises(GatewayError) as gone:
        await waiter
    assert gone.value.status_code == 499 and admission.queued("dep-1") == 0
    release.set()
    await holder
    assert admission.in_flight("dep-1") == 0
