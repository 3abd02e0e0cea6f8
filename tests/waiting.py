"""The one way tests wait: poll until something holds, or fail at a deadline.

Tests wait on events, never on time. ``eventually`` returns as soon as its
condition holds, so a generous deadline costs a fast machine nothing and spares
a slow one a false failure; when the deadline passes it fails the test with what
it saw last. A wait that must prove something did *not* happen waits for the
event that comes after it instead of sleeping. ``eventually_blocking`` is the
same for synchronous fixtures (no event loop to yield to).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["DEFAULT_TIMEOUT", "eventually", "eventually_blocking"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
INTERVAL = 0.01

Message = str | Callable[[T], str]


def _holds(value: object) -> bool:
    return bool(value)


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], object] = ...,
    *,
    timeout: float = ...,
    interval: float = ...,
    message: Message[T] = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    until: Callable[[T], object] = ...,
    *,
    timeout: float = ...,
    interval: float = ...,
    message: Message[T] = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    until: Callable[[Any], object] = _holds,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = INTERVAL,
    message: Message[Any] = "",
) -> Any:
    """Call ``probe`` (plain or async) until ``until(value)`` holds (by default:
    the value is truthy) and return that value. After ``timeout`` seconds raise
    ``AssertionError`` with ``message`` (a string, or made from the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(_explain(message, value, timeout))
        await asyncio.sleep(interval)


def eventually_blocking(
    probe: Callable[[], T],
    until: Callable[[T], object] = _holds,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = INTERVAL,
    message: Message[T] = "",
) -> T:
    """``eventually`` for code outside an event loop: blocks between tries."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(_explain(message, value, timeout))
        time.sleep(interval)


def _explain(message: Message[T], last: T, timeout: float) -> str:
    if callable(message):  # it tells what it saw
        return f"{message(last)} (within {timeout}s)"
    return f"{message or 'condition not met'} (within {timeout}s; last seen: {last!r})"
