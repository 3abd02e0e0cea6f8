"""``lmstack-agent``: the daemon on every GPU host.

Start-up order: settings (environment ``LMSTACK_*``, flags override), logging,
the effective settings logged with secrets masked, the GPU reader, the
container runtime, then the controller session until a signal arrives.

Exit codes:

* 0 on SIGTERM/SIGINT. Shutdown closes the controller stream and the runtime
  client, and leaves engine containers running: an agent restart or upgrade
  must not take models offline.
* 2 when the settings are unusable (no join token, bad flag, label or TLS file).
* 3 when the controller rejects the join token; retrying cannot help.
* 4 when the controller refuses this agent's protocol version.

A host without a reachable Docker engine still joins the controller and
reports the reason as ``runtime_error``, so the operator sees it in the UI.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from agent.gpu import GpuReader, NvmlGpuReader, SimulatedGpuReader
from agent.session import AgentSession, AuthenticationFailed, ProtocolVersionRejected
from agent.types import (
    ERROR,
    ContainerState,
    DeploySpec,
    Probe,
    Reporter,
    Runtime,
    RuntimeInfo,
    StatusUpdate,
)
from shared import __version__
from shared.errors import ConfigError, RuntimeUnavailable
from shared.logging import setup_logging
from shared.settings import AgentSettings

logger = logging.getLogger("lmstack.agent")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_UNAUTHENTICATED = 3
EXIT_PROTOCOL = 4


class ClosableRuntime(Runtime, Protocol):
    async def close(self) -> None: ...


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        settings = AgentSettings(**{k: v for k, v in vars(args).items() if v is not None})
    except ValidationError as exc:
        print(f"lmstack-agent: invalid settings: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.log_level)
    if not settings.token.get_secret_value():
        logger.error(
            "no join token: pass --token or set LMSTACK_TOKEN "
            "(the controller writes it to <data_dir>/agent_token)"
        )
        return EXIT_CONFIG
    logger.info("lmstack-agent %s starting with %s", __version__, settings.masked())
    try:
        gpus = _gpu_reader(settings)
    except ConfigError as exc:
        logger.error("%s", exc)
        return EXIT_CONFIG
    try:
        return asyncio.run(_serve(settings, gpus))
    finally:
        gpus.close()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lmstack-agent",
        description="Run LMStack engine containers on this GPU host for a controller.",
        epilog="Every flag can also be set as an LMSTACK_* environment variable.",
    )
    parser.add_argument("--controller", metavar="HOST:PORT", help="controller gRPC address")
    parser.add_argument(
        "--token", help="join token (prefer LMSTACK_TOKEN: flags show up in process lists)"
    )
    parser.add_argument("--name", help="worker name (default: hostname)")
    parser.add_argument(
        "--advertise-address", help="address the gateway reaches engines on (default: primary IP)"
    )
    parser.add_argument("--state-dir", type=Path, help="where the worker id is kept")
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        metavar="SECONDS",
        help="used only when the controller's Welcome sets no interval",
    )
    parser.add_argument(
        "--simulate-gpus", metavar="COUNTxGIB", help="report simulated GPUs, e.g. 4x80"
    )
    parser.add_argument(
        "--engine-port-range",
        metavar="MIN-MAX",
        help="host ports the controller may give this host's engines, e.g. 41000-41999 "
        "(default: the controller's range; agents sharing a host need disjoint ones)",
    )
    parser.add_argument(
        "--label",
        dest="labels",
        action="append",
        metavar="KEY=VALUE",
        help="a worker label deployments can select (config.worker_selector), e.g. "
        "gpu=a100; repeatable (LMSTACK_LABELS: comma-separated)",
    )
    parser.add_argument(
        "--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser.parse_args(argv)


def _gpu_reader(settings: AgentSettings) -> GpuReader:
    if settings.simulate_gpus:
        return SimulatedGpuReader.parse(settings.simulate_gpus, seed=settings.name)
    return NvmlGpuReader()


async def _serve(settings: AgentSettings, gpus: GpuReader) -> int:
    runtime = _open_runtime(settings)
    try:
        session = AgentSession(settings, runtime, gpus)
        return await _run_until_signal(session)
    except ConfigError as exc:
        logger.error("%s", exc)
        return EXIT_CONFIG
    except AuthenticationFailed as exc:
        logger.error("%s; not retrying", exc)
        return EXIT_UNAUTHENTICATED
    except ProtocolVersionRejected as exc:
        logger.error("%s; upgrade the agent or the controller", exc)
        return EXIT_PROTOCOL
    finally:
        await runtime.close()


async def _run_until_signal(session: AgentSession) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(session.run(), name="lmstack-session")
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, _stop, signum, task)
    try:
        await task
    except asyncio.CancelledError:
        # Our own task was not cancelled: the signal handler cancelled the
        # session, which is the graceful way out.
        if task.cancelled() and not _current_task_cancelling():
            logger.info("stopped; engine containers keep running")
            return EXIT_OK
        raise
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return EXIT_OK


def _stop(signum: signal.Signals, task: asyncio.Task[None]) -> None:
    logger.info("%s received: disconnecting from the controller", signum.name)
    task.cancel()


def _current_task_cancelling() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


def _open_runtime(settings: AgentSettings) -> ClosableRuntime:
    """The Docker runtime, or a stand-in that reports why there is none."""
    try:
        # Imported here: the Docker SDK is heavy and a broken install must not
        # keep the agent from joining and saying so.
        from agent.runtime import DockerRuntime  # noqa: PLC0415

        runtime: ClosableRuntime = DockerRuntime(
            docker_host=settings.docker_host,
            hf_cache_dir=settings.hf_cache_dir,
            ready_timeout=settings.engine_ready_timeout,
            hf_token=os.environ.get("HF_TOKEN") or None,
            simulate_gpus=bool(settings.simulate_gpus),
        )
    except Exception as exc:
        logger.exception("no container runtime; joining without one")
        return UnavailableRuntime(f"container runtime unavailable: {exc!r}")
    return runtime


class UnavailableRuntime:
    """A runtime that has nothing to run on: every command reports ``error``."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    async def info(self) -> RuntimeInfo:
        return RuntimeInfo(available=False, error=self._reason)

    async def list_containers(self) -> list[ContainerState]:
        return []

    async def deploy(self, spec: DeploySpec, report: Reporter) -> None:
        await report(spec.status_update(ERROR, self._reason))

    async def stop(
        self, instance_id: str, remove: bool, report: Reporter, cluster_id: str = ""
    ) -> None:
        await report(StatusUpdate(instance_id, ERROR, self._reason))

    async def logs(self, instance_id: str, lines: int) -> str:
        raise RuntimeUnavailable(self._reason)

    async def follow_logs(self, instance_id: str, tail: int) -> AsyncIterator[str]:
        raise RuntimeUnavailable(self._reason)
        yield ""  # pragma: no cover - makes this an async generator

    async def probe(self, instance_id: str) -> Probe:
        raise RuntimeUnavailable(self._reason)

    async def close(self) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
