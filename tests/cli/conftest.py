"""Run the real ``lmstack`` CLI as a subprocess against the live ``controller``.

The controller's HTTP server runs on the test's event loop, so the CLI is
awaited with ``asyncio.create_subprocess_exec`` (a blocking ``subprocess.run``
would starve the server). HOME and XDG_CONFIG_HOME point into ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_PASSWORD, Controller

CLI_TIMEOUT = 30.0


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Cli:
    home: Path
    url: str

    @property
    def config_file(self) -> Path:
        return self.home / "config" / "lmstack" / "config.json"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LMSTACK_")}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / "config"))
        env["LMSTACK_URL"] = self.url
        env.update(extra or {})
        return env

    async def start(
        self, *args: str, env: dict[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(env),
        )

    async def __call__(
        self, *args: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> Result:
        proc = await self.start(*args, env=env)
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), CLI_TIMEOUT)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())

    async def ok(self, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> Result:
        result = await self(*args, stdin=stdin, env=env)
        assert result.code == 0, result
        assert result.err == "", result
        return result

    async def login(self, username: str, password: str) -> None:
        await self.ok("login", "--username", username, "--password-stdin", stdin=password + "\n")


@pytest.fixture
async def cli(controller: Controller, tmp_path: Path) -> AsyncIterator[Cli]:
    """The CLI pointed at the controller (LMSTACK_URL), not signed in."""
    home = tmp_path / "home"
    home.mkdir()
    yield Cli(home, controller.url)


@pytest.fixture
async def admin_cli(cli: Cli) -> Cli:
    """The CLI signed in as ``admin``."""
    await cli.login("admin", ADMIN_PASSWORD)
    return cli


@pytest.fixture
async def other_cli(controller: Controller, tmp_path: Path) -> Cli:
    """A second CLI user with its own, empty config directory."""
    home = tmp_path / "other-home"
    home.mkdir()
    return Cli(home, controller.url)
