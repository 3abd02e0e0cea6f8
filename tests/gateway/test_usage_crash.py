"""A real controller process killed with SIGKILL during gateway traffic, then
restarted on the same data directory: ``GET /api/usage`` reports exactly the
requests, prompt and completion tokens its clients saw succeed.

The usage is never flushed before the kill (a flush interval of an hour), so
every count comes back from the usage journal. A request counts as succeeded
when its whole answer arrived: a non-streamed JSON body, or a stream read to
its end (``[DONE]`` and the chunked terminator). The one window left is the
few microseconds between a non-streamed answer's last byte leaving and its
record being written (or a stream's record and its terminator); the engine's
per-token delay keeps the controller mostly idle, so a kill rarely lands there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from agent.session import AgentSession
from shared.settings import AgentSettings
from tests.agent.controller_stub import FakeGpuReader
from tests.conftest import ADMIN_PASSWORD, AGENT_TOKEN
from tests.dockerutil import free_port
from tests.gateway.conftest import MODEL, start_engine
from tests.runtime.memory_runtime import MemoryRuntime
from tests.waiting import eventually

CLIENTS = 8
SUCCEEDED_BEFORE_KILL = 150


@dataclass
class ControllerProcess:
    data_dir: Path
    port: int
    grpc_port: int
    engine_port: int
    log: IO[bytes]
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, http: aiohttp.ClientSession) -> None:
        env = {
            **os.environ, "LMSTACK_BCRYPT_ROUNDS": "4", "LMSTACK_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "LMSTACK_AGENT_TOKEN": AGENT_TOKEN, "LMSTACK_GRPC_HOST": "127.0.0.1",
            "LMSTACK_ENGINE_PORT_MIN": str(self.engine_port),
            "LMSTACK_ENGINE_PORT_MAX": str(self.engine_port),
            "LMSTACK_HEARTBEAT_INTERVAL": "1.0", "LMSTACK_USAGE_FLUSH_SECONDS": "3600",
        }  # fmt: skip
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controller.main", "--port", str(self.port),
            "--grpc-port", str(self.grpc_port), "--data-dir", str(self.data_dir),
            env=env, stdout=self.log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        await eventually(
            lambda: _healthy(http, self.url), timeout=30, interval=0.05,
            message=lambda _: f"controller did not start:\n{self.output()}",
        )  # fmt: skip

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")


async def _healthy(http: aiohttp.ClientSession, url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError):
        async with http.get(url + "/health") as resp:
            return resp.status == 200
    return False


@dataclass
class Seen:
    """What the clients saw succeed."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    refusals: list[str] = field(default_factory=list)

    def add(self, usage: dict[str, Any]) -> None:
        self.requests += 1
        self.prompt_tokens += usage["prompt_tokens"]
        self.completion_tokens += usage["completion_tokens"]


class Api:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url, self.token = http, url, ""

    async def login(self) -> None:
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        _, body = await self.call("POST", "/api/auth/login", json=login)
        self.token = body["access_token"]

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as resp:
            return resp.status, await resp.json()


@contextlib.asynccontextmanager
async def agent_connected(grpc_port: int, state_dir: Path) -> AsyncIterator[AgentSession]:
    """A real agent (in-memory runtime: it only reports) that reconnects to the
    controller after its restart."""
    settings = AgentSettings(
        controller=f"127.0.0.1:{grpc_port}", token=AGENT_TOKEN, name="gpu-worker-01",
        state_dir=state_dir, advertise_address="127.0.0.1", heartbeat_interval=0.1,
        reconnect_max_seconds=0.2,
    )  # fmt: skip
    session = AgentSession(settings, MemoryRuntime(), FakeGpuReader())
    task = asyncio.create_task(session.run())
    try:
        yield session
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def running_deployment(api: Api, agent: AgentSession) -> None:
    await eventually(lambda: agent.worker_id, message="the agent never joined")
    await eventually(
        lambda: api.call("GET", f"/api/workers/{agent.worker_id}"),
        lambda answer: answer[1].get("status") == "online",
    )
    body = {"name": MODEL, "model": "stand-in/tiny", "worker_id": agent.worker_id}
    status, created = await api.call("POST", "/api/deployments", json=body)
    assert status == 201, created
    await eventually(
        lambda: api.call("GET", f"/api/deployments/{created['id']}"),
        lambda answer: answer[1]["status"] == "running",
        message=lambda answer: f"deployment never ran: {answer}",
    )


def usage_of(data: bytes, stream: bool) -> dict[str, Any] | None:
    """The answer's ``usage``; None unless the answer is whole."""
    if not stream:
        usage = json.loads(data).get("usage")
        return usage if isinstance(usage, dict) else None
    events = [line[6:] for line in data.decode().splitlines() if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return None
    chunks = [json.loads(event) for event in events[:-1]]
    usage = next((chunk["usage"] for chunk in chunks if chunk.get("usage")), None)
    return usage if isinstance(usage, dict) else None


async def client(http: aiohttp.ClientSession, url: str, key: str, number: int, seen: Seen) -> None:
    """Chat completions, streamed and not, until the controller is gone."""
    headers = {"Authorization": f"Bearer {key}"}
    for turn in range(10**9):
        stream = (number + turn) % 2 == 1
        body: dict[str, Any] = {
            "model": MODEL, "max_tokens": 1 + turn % 5,
            "messages": [{"role": "user", "content": "one two three " * (1 + number)}],
        }  # fmt: skip
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        try:
            async with http.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
                status, data = resp.status, await resp.read()
        except aiohttp.ClientError:
            return  # the controller died under this request: not a success
        usage = usage_of(data, stream) if status == 200 else None
        if usage is None:
            seen.refusals.append(f"{status} {data[:200]!r}")
            return
        seen.add(usage)


async def reported(api: Api) -> dict[str, int]:
    status, body = await api.call("GET", "/api/usage")
    assert status == 200, body
    totals: dict[str, int] = body["totals"]
    return totals


async def test_usage_survives_sigkill_under_traffic(tmp_path: Path) -> None:
    engine_port = free_port()
    with (tmp_path / "controller.log").open("wb") as log:
        ctl = ControllerProcess(tmp_path / "data", free_port(), free_port(), engine_port, log)
        engine = await start_engine(engine_port, MODEL, STANDIN_TOKEN_DELAY="0.002")
        try:
            async with aiohttp.ClientSession() as http:
                await ctl.start(http)
                api = Api(http, ctl.url)
                await api.login()
                async with agent_connected(ctl.grpc_port, tmp_path / "agent") as agent:
                    await running_deployment(api, agent)
                    _, key = await api.call("POST", "/api/api-keys", json={"name": "app"})
                    seen = await traffic_until_killed(http, ctl, key["key"])
                    assert seen.refusals == [], seen.refusals
                    assert seen.requests >= SUCCEEDED_BEFORE_KILL
                    await ctl.start(http)
                    await api.login()
                    totals = await reported(api)
            clients_saw = (seen.requests, seen.prompt_tokens, seen.completion_tokens)
            assert (
                totals["requests"],
                totals["prompt_tokens"],
                totals["completion_tokens"],
            ) == clients_saw, f"reported {totals}, the clients saw {clients_saw} succeed"
            assert "replaying 1 usage journal segment" in ctl.output()
        finally:
            await ctl.stop()
            await engine.stop()


async def traffic_until_killed(
    http: aiohttp.ClientSession, ctl: ControllerProcess, key: str
) -> Seen:
    """Several clients' traffic; SIGKILL once enough of it succeeded, while it
    still runs. Returns what the clients saw succeed."""
    seen = Seen()
    # Its own connections: the kill breaks them, not the test's REST session.
    async with aiohttp.ClientSession() as traffic:
        clients = [
            asyncio.create_task(client(traffic, ctl.url, key, number, seen))
            for number in range(CLIENTS)
        ]
        try:
            await eventually(
                lambda: seen.requests >= SUCCEEDED_BEFORE_KILL or seen.refusals,
                timeout=60, message=lambda _: f"too little traffic: {seen}",
            )  # fmt: skip
            assert not any(task.done() for task in clients), "traffic stopped before the kill"
            await ctl.kill()
            await asyncio.wait_for(asyncio.gather(*clients), 30)
        finally:
            for task in clients:
                task.cancel()
    return seen
