"""Background loops: a death is loud, a stop is quiet, teardown always completes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from controller.background import Background
from controller.fleet import Fleet
from tests.conftest import Controller


async def test_a_loop_that_dies_is_logged_and_reported_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deaths: list[str] = []
    reported = asyncio.Event()

    def on_death(reason: str) -> None:
        deaths.append(reason)
        reported.set()

    async def broken() -> None:
        raise RuntimeError("disk on fire")

    background = Background(on_death)
    async with background.run("flusher", broken()):
        await asyncio.wait_for(reported.wait(), 10)
    assert deaths == ["background loop 'flusher' died: RuntimeError('disk on fire')"]
    assert background.died == deaths[0]
    assert any(r.levelno == logging.CRITICAL and r.exc_info for r in caplog.records)


async def test_a_loop_that_returns_early_is_reported_too() -> None:
    deaths: list[str] = []
    reported = asyncio.Event()

    def on_death(reason: str) -> None:
        deaths.append(reason)
        reported.set()

    async def quits() -> None:
        return None

    background = Background(on_death)
    async with background.run("quitter", quits()):
        await asyncio.wait_for(reported.wait(), 10)
    assert deaths == ["background loop 'quitter' stopped before it was told to"]


async def test_a_stopped_loop_is_not_a_death() -> None:
    deaths: list[str] = []
    started, stopping = asyncio.Event(), asyncio.Event()

    async def waits() -> None:
        started.set()
        await stopping.wait()

    background = Background(deaths.append)
    cancelled = asyncio.Event()

    async def cancellable() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async with (
        background.run("graceful", waits(), stop=stopping.set),
        background.run("cancelled", cancellable()),
    ):
        await started.wait()
    assert cancelled.is_set() and stopping.is_set()
    assert deaths == [] and background.died is None


async def test_the_controller_reports_its_dying_fleet_loop(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real app: the fleet loop raising reaches ``on_loop_death``, and the
    controller still tears down completely afterwards."""
    await controller.stop()
    deaths: list[str] = []
    reported = asyncio.Event()

    async def broken_run(self: Fleet) -> None:
        raise RuntimeError("liveness broke")

    def on_death(reason: str) -> None:
        deaths.append(reason)
        reported.set()

    monkeypatch.setattr(Fleet, "run", broken_run)
    controller.on_loop_death = on_death
    await controller.start()
    await asyncio.wait_for(reported.wait(), 10)
    assert deaths == ["background loop 'fleet liveness' died: RuntimeError('liveness broke')"]
    await controller.stop()
