"""The dashboard's tests run over SQLite only: nothing in ``controller.web`` depends
on the database backend, which the controller and store tests cover.

``chromium`` and ``browser``: the headless browser of ``tests.web.browsing``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser

from tests.web.browsing import ensure_chromium, launch


@pytest.fixture
def database_url() -> str:
    return ""


@pytest.fixture(scope="session")
def chromium() -> str:
    return ensure_chromium()


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with launch(chromium) as launched:
        yield launched
