"""Fixtures shared by every test: a clean environment and a real controller.

``controller`` starts the real aiohttp application on an ephemeral port over a
real database, once per backend (``database_url``): a SQLite file in a
temporary data directory, and a fresh PostgreSQL database on the server named
by ``LMSTACK_TEST_DATABASE_URL`` (``make test`` starts a throw-away one; without
it the PostgreSQL cases are skipped). ``restart()`` stops the controller and
starts a fresh one over the same directory and database. Its fleet times
liveness on a ``ManualClock`` (``tests.clock``): no worker expires unless the
test advances ``Controller.clock``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from controller import appkeys
from controller.app import create_app
from shared.settings import ControllerSettings
from tests.clock import ManualClock, WallClock

ADMIN_PASSWORD = "admin-password-1"
AGENT_TOKEN = "test-join-token"
# Read once at import: ``clean_env`` removes every LMSTACK_ variable per test.
POSTGRES_ADMIN_URL = os.environ.get("LMSTACK_TEST_DATABASE_URL", "")
DATABASES = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background of a non-interactive shell (`make test &`,
    # some CI runners) inherits SIGINT ignored; Python keeps an ignored SIGINT
    # ignored, and so would every child: a CLI under test would never see its
    # Ctrl-C. Children start as from a terminal instead.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("LMSTACK_"):
            monkeypatch.delenv(name)
    yield


@contextlib.asynccontextmanager
async def fresh_postgres_database(admin_url: str) -> AsyncIterator[str]:
    """A new, empty database on the admin URL's server, dropped afterwards
    (with any connection still open to it)."""
    name = f"lmstack_test_{uuid.uuid4().hex}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture(params=DATABASES)
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The controller's database URL for this test: "" (SQLite in the data
    directory) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield ""
        return
    if not POSTGRES_ADMIN_URL:
        pytest.skip("PostgreSQL: LMSTACK_TEST_DATABASE_URL is unset (`make test` provides one)")
    async with fresh_postgres_database(POSTGRES_ADMIN_URL) as url:
        yield url


@dataclass
class Controller:
    data_dir: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    # "": SQLite in data_dir.
    database_url: str = ""
    runner: web.AppRunner | None = None
    url: str = ""
    http: aiohttp.ClientSession | None = None
    admin_token: str = ""
    # The fleet's liveness clock: it never expires a worker unless the test
    # advances it (kept across restarts).
    clock: ManualClock = field(default_factory=ManualClock)
    # The gateway's rate windows and budget periods (kept across restarts).
    limits_clock: WallClock = field(default_factory=WallClock)
    # Called when a background loop dies (``create_app``'s ``on_loop_death``).
    on_loop_death: Callable[[str], None] | None = None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.app[appkeys.GRPC_PORT]}"

    @property
    def app(self) -> web.Application:
        assert self.runner is not None
        return self.runner.app

    def settings(self) -> ControllerSettings:
        values: dict[str, Any] = {
            "data_dir": self.data_dir,
            "bcrypt_rounds": 4,
            "admin_password": ADMIN_PASSWORD,
            "grpc_port": 0,
            "grpc_host": "127.0.0.1",
            "agent_token": AGENT_TOKEN,
            "database_url": self.database_url,
            **self.overrides,
        }
        return ControllerSettings(**values)

    async def start(self) -> None:
        app = create_app(
            self.settings(),
            on_loop_death=self.on_loop_death,
            clock=self.clock,
            limits_clock=self.limits_clock,
        )
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        if self.http is None:
            self.http = aiohttp.ClientSession()
        self.admin_token = await self.login("admin", ADMIN_PASSWORD)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def close(self) -> None:
        await self.stop()
        if self.http is not None:
            await self.http.close()

    async def login(self, username: str, password: str) -> str:
        status, body = await self.call(
            "POST", "/api/auth/login", json={"username": username, "password": password}
        )
        assert status == 200, body
        token = body["access_token"]
        assert isinstance(token, str)
        return token

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request; returns status and the decoded JSON body (None when empty)."""
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(
            method, self.url + path, json=json, data=data, params=params, headers=headers
        ) as resp:
            raw = await resp.read()
            if not raw:
                return resp.status, None
            assert resp.content_type == "application/json", raw[:200]
            return resp.status, await resp.json()

    async def admin(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call(method, path, token=self.admin_token, **kwargs)

    async def create_deployment(self, **body: Any) -> dict[str, Any]:
        """``POST /api/deployments`` as admin; a refusal fails with its status
        and body (e.g. ``409 {'detail': ...}``), not later with a missing id."""
        status, created = await self.admin("POST", "/api/deployments", json=body)
        assert status == 201, f"create refused: {status} {created}"
        assert isinstance(created, dict)
        return created


@pytest.fixture
async def controller(tmp_path: Path, database_url: str) -> AsyncIterator[Controller]:
    ctl = Controller(data_dir=tmp_path / "data", database_url=database_url)
    await ctl.start()
    yield ctl
    await ctl.close()
