"""Helpers for tests that use the real Docker engine and the stand-in engine image.

* ``ensure_engine_image()`` makes sure an engine runs (``scripts/ensure-docker.sh``) and the
  stand-in image is built (``tests/engine/build_image.sh``, a no-op when up to date); it
  runs them once per test process and returns the image tag. It raises ``RuntimeError``
  with the scripts' output when either fails.
* ``free_port()`` gives a TCP port nothing listens on right now; ``free_port_range(n)``
  ``n`` consecutive ones (an agent's ``--engine-port-range``).
* ``remove_test_containers(prefix)`` removes every LMStack container whose deployment id
  starts with ``prefix``, and every container labelled ``lmstack.test=<prefix>``: tests
  give their deployments a per-session prefix so parallel test sessions do not collide.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
from pathlib import Path

import docker
import docker.errors

REPO_ROOT = Path(__file__).resolve().parents[1]
ENSURE_DOCKER = REPO_ROOT / "scripts" / "ensure-docker.sh"
BUILD_IMAGE = REPO_ROOT / "tests" / "engine" / "build_image.sh"
STANDIN_IMAGE = os.environ.get("LMSTACK_STANDIN_IMAGE", "lmstack-standin-engine:test")
# Label a test puts on containers it creates itself (not through the runtime).
TEST_LABEL = "lmstack.test"


def _run_script(script: Path, timeout: float) -> None:
    result = subprocess.run(
        ["bash", str(script)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "LMSTACK_STANDIN_IMAGE": STANDIN_IMAGE},
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{script.relative_to(REPO_ROOT)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )


@functools.cache
def ensure_engine_image() -> str:
    """A running Docker engine and the stand-in image; the image tag."""
    # Installing docker.io on a fresh machine takes a few minutes; later calls are instant.
    _run_script(ENSURE_DOCKER, timeout=900)
    _run_script(BUILD_IMAGE, timeout=300)
    return STANDIN_IMAGE


def free_port() -> int:
    """A TCP port free on all interfaces (engines publish on 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_range(count: int) -> tuple[int, int]:
    """``count`` consecutive TCP ports free on all interfaces right now: the
    first and the last."""
    for _ in range(50):
        low = free_port()
        if low + count > 65535:
            continue
        try:
            for port in range(low, low + count):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("0.0.0.0", port))
        except OSError:
            continue
        return low, low + count - 1
    raise RuntimeError(f"no {count} consecutive free ports found")


def has_nvidia_runtime(client: docker.DockerClient) -> bool:
    runtimes = client.info().get("Runtimes") or {}
    return "nvidia" in runtimes


def remove_test_containers(client: docker.DockerClient, prefix: str) -> int:
    """Force-remove the containers a test session made; how many were removed."""
    removed = 0
    managed = client.containers.list(
        all=True, filters={"label": "lmstack.managed=true"}, ignore_removed=True
    )
    own = client.containers.list(
        all=True, filters={"label": f"{TEST_LABEL}={prefix}"}, ignore_removed=True
    )
    for container in [*managed, *own]:
        is_ours = container.labels.get("lmstack.deployment_id", "").startswith(prefix)
        if is_ours or container.labels.get(TEST_LABEL) == prefix:
            try:
                container.remove(force=True)
                removed += 1
            except docker.errors.NotFound:
                pass
    return removed
