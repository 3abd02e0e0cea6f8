"""GPU inventory and live stats for the agent.

Two readers implement the ``GpuReader`` protocol:

* ``NvmlGpuReader`` asks the NVIDIA driver through NVML (``nvidia-ml-py``).
* ``SimulatedGpuReader`` reports ``COUNTxGIB`` idle GPUs (``--simulate-gpus``), for
  hosts without GPUs and for fleet-scale benchmarks.

Guarantees:

* A host without the NVML library, without a driver or without GPUs has zero
  GPUs. That is logged once at WARNING; neither ``devices()`` nor ``stats()``
  ever raises because of it.
* NVML errors are translated to ``GpuError`` where they enter our code
  (``_nvml_call``). The public methods catch those and degrade to an empty list,
  logging each distinct failure once at WARNING (then at DEBUG), because a
  flaky GPU must not take the agent's heartbeat down with it.
* A metric a GPU does not support (power on some boards, utilization under MIG)
  reads as 0 instead of hiding the whole device.

Every method is a blocking C call: the session runs them through
``asyncio.to_thread``. A reader is used from one thread at a time.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TypeVar

from shared.errors import ConfigError, GpuError

logger = logging.getLogger("lmstack.agent.gpu")

_T = TypeVar("_T")
_GIB = 1024**3
_SIMULATED_SPEC = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+(?:\.\d+)?)\s*$")
# Namespace for simulated GPU uuids: stable per (seed, index), distinct across agents.
_SIMULATED_NAMESPACE = uuid.UUID("6f1d5a52-8a0e-4c55-9d0c-3a7c4c1b9e21")


@dataclass(frozen=True)
class GpuDevice:
    """One GPU as listed in Hello."""

    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    driver_version: str
    cuda_version: str


@dataclass(frozen=True)
class GpuStats:
    """One GPU's live numbers, sent with every heartbeat."""

    index: int
    memory_used_bytes: int
    memory_total_bytes: int
    utilization: int  # percent, 0..100
    temperature: int  # degrees Celsius
    power: float  # watts


class GpuReader(Protocol):
    """Reads this host's GPUs. Blocking: call from a worker thread."""

    @property
    def simulated(self) -> bool: ...

    def devices(self) -> list[GpuDevice]: ...

    def stats(self) -> list[GpuStats]: ...

    def close(self) -> None: ...


class NvmlGpuReader:
    """GPUs as NVML reports them; zero GPUs where NVML cannot be used.

    NVML is initialised on first use, not in the constructor, so building the
    reader never fails. When initialisation fails the reader stays empty for
    its lifetime: the driver does not appear under a running agent.
    """

    simulated = False

    def __init__(self, nvml: ModuleType | None = None) -> None:
        # ``nvml`` lets a test hand in a module double; by default ``pynvml``.
        self._nvml: Any = nvml
        self._initialised = False
        self._unusable = False
        self._warned: set[str] = set()

    def devices(self) -> list[GpuDevice]:
        return self._degrade("devices", self._read_devices)

    def stats(self) -> list[GpuStats]:
        return self._degrade("stats", self._read_stats)

    def close(self) -> None:
        if not self._initialised:
            return
        self._initialised = False
        try:
            self._nvml_call(self._nvml.nvmlShutdown)
        except GpuError as exc:
            logger.debug("NVML shutdown failed: %s", exc)

    # -- internals ---------------------------------------------------------------

    def _degrade(self, what: str, read: Callable[[], list[_T]]) -> list[_T]:
        if not self._ready():
            return []
        try:
            return read()
        except GpuError as exc:
            self._warn_once(f"reading GPU {what} failed: {exc}; reporting none")
            return []

    def _ready(self) -> bool:
        if self._initialised:
            return True
        if self._unusable:
            return False
        try:
            self._initialise()
        except GpuError as exc:
            self._unusable = True
            self._warn_once(f"no GPUs: {exc}")
            return False
        return True

    def _initialise(self) -> None:
        if self._nvml is None:
            try:
                import pynvml  # noqa: PLC0415 - optional at run time, imported on first use
            except ImportError as exc:
                raise GpuError("nvidia-ml-py (pynvml) is not installed") from exc
            self._nvml = pynvml
        self._nvml_call(self._nvml.nvmlInit)
        self._initialised = True

    def _nvml_call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Call NVML, translating its errors at the boundary."""
        try:
            return fn(*args)
        except self._nvml.NVMLError as exc:
            raise GpuError(f"NVML: {exc}") from exc

    def _optional(self, fn: Callable[..., _T], *args: Any, default: _T) -> _T:
        # Unsupported metrics (power, temperature, utilization under MIG) must
        # not hide the device; they read as ``default``.
        try:
            return self._nvml_call(fn, *args)
        except GpuError as exc:
            logger.debug("optional NVML metric %s unavailable: %s", fn.__name__, exc)
            return default

    def _read_devices(self) -> list[GpuDevice]:
        nvml = self._nvml
        driver = _text(self._nvml_call(nvml.nvmlSystemGetDriverVersion))
        cuda = _cuda_version(self._optional(nvml.nvmlSystemGetCudaDriverVersion, default=0))
        devices = []
        for index in range(self._nvml_call(nvml.nvmlDeviceGetCount)):
            handle = self._nvml_call(nvml.nvmlDeviceGetHandleByIndex, index)
            memory = self._nvml_call(nvml.nvmlDeviceGetMemoryInfo, handle)
            devices.append(
                GpuDevice(
                    index=index,
                    uuid=_text(self._nvml_call(nvml.nvmlDeviceGetUUID, handle)),
                    name=_text(self._nvml_call(nvml.nvmlDeviceGetName, handle)),
                    memory_total_bytes=int(memory.total),
                    driver_version=driver,
                    cuda_version=cuda,
                )
            )
        return devices

    def _read_stats(self) -> list[GpuStats]:
        nvml = self._nvml
        stats = []
        for index in range(self._nvml_call(nvml.nvmlDeviceGetCount)):
            handle = self._nvml_call(nvml.nvmlDeviceGetHandleByIndex, index)
            memory = self._nvml_call(nvml.nvmlDeviceGetMemoryInfo, handle)
            rates = self._optional(nvml.nvmlDeviceGetUtilizationRates, handle, default=None)
            temperature = self._optional(
                nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU, default=0
            )
            milliwatts = self._optional(nvml.nvmlDeviceGetPowerUsage, handle, default=0)
            stats.append(
                GpuStats(
                    index=index,
                    memory_used_bytes=int(memory.used),
                    memory_total_bytes=int(memory.total),
                    utilization=int(rates.gpu) if rates is not None else 0,
                    temperature=int(temperature),
                    power=milliwatts / 1000.0,
                )
            )
        return stats

    def _warn_once(self, message: str) -> None:
        # A failing GPU would otherwise log the same line every heartbeat.
        level = logging.DEBUG if message in self._warned else logging.WARNING
        self._warned.add(message)
        logger.log(level, "%s", message)


class SimulatedGpuReader:
    """``count`` idle GPUs of ``memory_gib`` GiB each; no device is touched."""

    simulated = True

    def __init__(self, count: int, memory_gib: float, *, seed: str = "") -> None:
        if count < 1 or not math.isfinite(memory_gib) or memory_gib <= 0:
            raise ConfigError(
                f"simulated GPUs need count >= 1 and GiB > 0, got {count}x{memory_gib}"
            )
        self._memory_total = int(memory_gib * _GIB)
        # The seed (the agent's name) keeps uuids distinct across simulated agents.
        self._devices = [
            GpuDevice(
                index=index,
                uuid=f"GPU-{uuid.uuid5(_SIMULATED_NAMESPACE, f'{seed}/{index}')}",
                name="Simulated GPU",
                memory_total_bytes=self._memory_total,
                driver_version="simulated",
                cuda_version="",
            )
            for index in range(count)
        ]
        self._stats = [
            GpuStats(index, 0, self._memory_total, utilization=0, temperature=0, power=0.0)
            for index in range(count)
        ]

    @classmethod
    def parse(cls, spec: str, *, seed: str = "") -> SimulatedGpuReader:
        """Build from ``COUNTxGIB``, e.g. ``4x80``; ``ConfigError`` on anything else."""
        match = _SIMULATED_SPEC.match(spec)
        if match is None:
            raise ConfigError(f"invalid simulated GPU spec {spec!r}: expected COUNTxGIB, e.g. 4x80")
        return cls(int(match.group(1)), float(match.group(2)), seed=seed)

    def devices(self) -> list[GpuDevice]:
        return list(self._devices)

    def stats(self) -> list[GpuStats]:
        return list(self._stats)

    def close(self) -> None:
        return None


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else value


def _cuda_version(encoded: int) -> str:
    """NVML encodes CUDA 12.4 as 12040."""
    if encoded <= 0:
        return ""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"
