"""Image pulls: present-or-pull, with Docker's per-layer events folded into one progress line.

Guarantees: a pull reports ``downloading`` once before it starts and then at most once
per ``PROGRESS_REPORT_INTERVAL`` seconds; a failed pull raises ``DeployFailed`` naming
the image (or ``RuntimeUnavailable`` when the engine went away). The pull's blocking
event stream is read through the shared thread bridge (``agent.runtime._bridge``), so
cancelling the deploy stops reading it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import docker.errors
from docker.utils import parse_repository_tag

from agent.runtime._bridge import iterate_in_thread
from agent.runtime._client import EngineClient
from agent.runtime._errors import DeployFailed, explain, translated
from agent.types import DOWNLOADING, DeploySpec, Reporter

log = logging.getLogger("lmstack.agent.runtime")

PROGRESS_REPORT_INTERVAL = 1.0


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@dataclass
class PullProgress:
    """Aggregates Docker's per-layer pull events into one line."""

    image: str
    # layer id -> (bytes downloaded, layer size); size 0 while unknown.
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)

    def update(self, event: dict[str, Any]) -> None:
        layer = event.get("id")
        status = str(event.get("status", ""))
        if not layer or status.startswith(("Pulling from", "Digest", "Status")):
            return
        current, total = self.layers.get(layer, (0, 0))
        detail = event.get("progressDetail") or {}
        if status == "Downloading" and detail.get("total"):
            current, total = int(detail.get("current", 0)), int(detail["total"])
        elif status in ("Download complete", "Verifying Checksum", "Extracting"):
            current = total
        elif status in ("Pull complete", "Already exists"):
            current = total
            self.done.add(layer)
        self.layers[layer] = (current, total)

    def message(self) -> str:
        total = sum(size for _, size in self.layers.values())
        current = sum(got for got, _ in self.layers.values())
        counts = f"{len(self.done)}/{len(self.layers)} layers"
        if not total:
            return f"pulling image {self.image} ({counts})"
        pct = 100 * current // total
        return (
            f"pulling image {self.image}: {pct}% "
            f"({human_bytes(current)} of {human_bytes(total)}, {counts})"
        )


async def ensure_image(
    client: EngineClient, spec: DeploySpec, image: str, report: Reporter
) -> None:
    """Pull ``image`` unless the engine has it, reporting progress for ``spec``."""

    def present() -> bool:
        try:
            client.sdk().images.get(image)
        except docker.errors.ImageNotFound:
            return False
        return True

    if await client.call(present):
        return
    progress = PullProgress(image)
    await report(spec.status_update(DOWNLOADING, progress.message()))
    await _pull(client, spec, image, progress, report)


async def _pull(
    client: EngineClient, spec: DeploySpec, image: str, progress: PullProgress, report: Reporter
) -> None:
    repository, tag = parse_repository_tag(image)

    def events() -> Iterable[dict[str, Any]]:
        stream: Iterable[dict[str, Any]] = client.sdk().api.pull(
            repository, tag=tag or "latest", stream=True, decode=True
        )
        return stream

    loop = asyncio.get_running_loop()
    last_report = 0.0
    stream = iterate_in_thread(events)
    with translated():
        try:
            async with contextlib.aclosing(stream):
                async for event in stream:
                    if "error" in event:
                        raise DeployFailed(f"pulling image {image} failed: {event['error']}")
                    progress.update(event)
                    now = loop.time()
                    if now - last_report >= PROGRESS_REPORT_INTERVAL:
                        last_report = now
                        message = progress.message()
                        await report(spec.status_update(DOWNLOADING, message))
        except docker.errors.APIError as exc:
            raise DeployFailed(f"pulling image {image} failed: {explain(exc)}") from exc
    log.info("pulled image %s", image)
