"""SingleFlight: concurrent loads of one key share one execution."""

from __future__ import annotations

import asyncio

import pytest

from controller.singleflight import SingleFlight


class Loader:
    """Counts its calls; each call waits until ``release`` is set."""

    def __init__(self, value: str = "value", error: Exception | None = None) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.value = value
        self.error = error

    async def __call__(self) -> str:
        self.calls += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.value


async def test_concurrent_callers_share_one_load() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    load = Loader()
    callers = [asyncio.create_task(flight.run("k", load)) for _ in range(20)]
    await asyncio.sleep(0)
    load.release.set()
    assert await asyncio.gather(*callers) == ["value"] * 20
    assert load.calls == 1


async def test_other_keys_and_later_calls_load_again() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    load = Loader()
    load.release.set()
    assert list(await asyncio.gather(flight.run("a", load), flight.run("b", load))) == [
        "value",
        "value",
    ]
    assert load.calls == 2
    await flight.run("a", load)
    assert load.calls == 3  # no caching: only calls that overlap are shared


async def test_every_waiter_gets_the_error() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    load = Loader(error=LookupError("gone"))
    callers = [asyncio.create_task(flight.run("k", load)) for _ in range(5)]
    await asyncio.sleep(0)
    load.release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, LookupError) and str(r) == "gone" for r in results)
    assert load.calls == 1


async def test_a_cancelled_waiter_does_not_cancel_the_load() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    load = Loader()
    first = asyncio.create_task(flight.run("k", load))
    waiter = asyncio.create_task(flight.run("k", load))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    load.release.set()
    assert await first == "value"
    assert load.calls == 1


async def test_waiters_start_over_when_the_loading_caller_is_cancelled() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    load = Loader()
    first = asyncio.create_task(flight.run("k", load))
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(flight.run("k", load)) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    for _ in range(5):  # the waiters notice and one of them starts the load again
        await asyncio.sleep(0)
    load.release.set()
    assert await asyncio.gather(*waiters) == ["value"] * 3
    assert load.calls == 2  # the cancelled load, then one shared retry
