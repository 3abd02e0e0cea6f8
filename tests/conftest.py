"""Fixtures shared by every test: a clean environment and a real controller.

``controller`` starts the real aiohttp application on an ephemeral port over a
real SQLite file in a temporary data directory; ``restart()`` stops it and
starts a fresh one over the same directory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controller import appkeys
from controller.app import create_app
from shared.settings import ControllerSettings

ADMIN_PASSWORD = "admin-password-1"
AGENT_TOKEN = "test-join-token"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("LMSTACK_"):
            monkeypatch.delenv(name)
    yield


@dataclass
class Controller:
    data_dir: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    runner: web.AppRunner | None = None
    url: str = ""
    http: aiohttp.ClientSession | None = None
    admin_token: str = ""

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
            **self.overrides,
        }
        return ControllerSettings(**values)

    async def start(self) -> None:
        app = create_app(self.settings())
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


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[Controller]:
    ctl = Controller(data_dir=tmp_path / "data")
    await ctl.start()
    yield ctl
    await ctl.close()
