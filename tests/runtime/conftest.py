"""Fixtures for runtime tests against the real Docker engine and the stand-in image.

The session fixture starts the engine and builds the image once (see tests.dockerutil);
every deployment a test makes carries the session's prefix in its id and name, and
teardown removes all of them, whatever state a failed test left behind.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from agent.runtime import DockerRuntime
from agent.types import DeploySpec, StatusUpdate
from shared.engines import EngineConfig
from tests.dockerutil import ensure_engine_image, free_port, remove_test_containers

# Small on purpose: the stand-in is ready in well under a second.
START_DELAY = "0.3"
STARTUP_TIMEOUT = 20


@pytest.fixture(scope="session")
def engine_image() -> str:
    return ensure_engine_image()


@pytest.fixture(scope="session")
def session_prefix() -> str:
    return f"rt{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def docker_client(engine_image: str, session_prefix: str) -> Iterator[docker.DockerClient]:
    client = docker.from_env(version="auto")
    try:
        yield client
    finally:
        remove_test_containers(client, session_prefix)
        client.close()


@pytest.fixture
async def make_runtime(
    docker_client: docker.DockerClient, tmp_path: Path
) -> AsyncIterator[Callable[..., DockerRuntime]]:
    made: list[DockerRuntime] = []

    def make(**overrides: Any) -> DockerRuntime:
        options: dict[str, Any] = {
            "hf_cache_dir": tmp_path / "hf-cache",
            "ready_timeout": STARTUP_TIMEOUT,
            "hf_token": "hf_test_token",
            "stop_timeout": 5,
        }
        options.update(overrides)
        made.append(DockerRuntime(**options))
        return made[-1]

    yield make
    for runtime in made:
        await runtime.close()


@pytest.fixture
def runtime(make_runtime: Callable[..., DockerRuntime]) -> DockerRuntime:
    return make_runtime()


_counter = itertools.count()


@pytest.fixture
def make_spec(engine_image: str, session_prefix: str) -> Callable[..., DeploySpec]:
    def make(
        *, env: dict[str, str] | None = None, config: dict[str, Any] | None = None, **fields: Any
    ) -> DeploySpec:
        n = next(_counter)
        merged: dict[str, Any] = {
            "startup_timeout": STARTUP_TIMEOUT,
            "env": {"STANDIN_START_DELAY": START_DELAY, **(env or {})},
        }
        merged.update(config or {})
        values: dict[str, Any] = {
            "deployment_id": f"{session_prefix}-{uuid.uuid4().hex[:12]}",
            "name": f"{session_prefix}-d{n}",
            "backend": "vllm",
            "image": engine_image,
            "model": "standin/test-model",
            "config": EngineConfig.from_mapping(merged),
            "host_port": free_port(),
        }
        values.update(fields)
        return DeploySpec(**values)

    return make


@dataclass
class Recorder:
    """A ``Reporter`` that keeps every update."""

    updates: list[StatusUpdate] = field(default_factory=list)

    async def __call__(self, update: StatusUpdate) -> None:
        self.updates.append(update)

    @property
    def statuses(self) -> list[str]:
        return [u.status for u in self.updates]

    @property
    def last(self) -> StatusUpdate:
        return self.updates[-1]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
