"""GPU readers: the real NVML reader on this GPU-less host, and simulated GPUs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.gpu import NvmlGpuReader, SimulatedGpuReader
from shared.errors import ConfigError


@pytest.mark.usefixtures("no_gpu_device")
def test_nvml_reader_without_driver_reports_no_gpus_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = NvmlGpuReader()
    with caplog.at_level(logging.DEBUG, logger="lmstack.agent.gpu"):
        results = [reader.devices(), reader.stats(), reader.devices(), reader.stats()]
        reader.close()

    assert results == [[], [], [], []]
    assert not reader.simulated
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].name == "lmstack.agent.gpu"
    assert "no GPUs" in warnings[0].getMessage()


@pytest.mark.skipif(not Path("/dev/nvidiactl").exists(), reason="needs an NVIDIA driver")
def test_nvml_reader_on_a_gpu_host_lists_devices_and_stats() -> None:
    reader = NvmlGpuReader()
    try:
        devices, stats = reader.devices(), reader.stats()
    finally:
        reader.close()

    assert devices, "a host with a driver lists its GPUs"
    assert [d.index for d in devices] == [s.index for s in stats]
    for device, stat in zip(devices, stats, strict=True):
        assert device.uuid.startswith(("GPU-", "MIG-"))
        assert device.name
        assert device.driver_version
        assert device.memory_total_bytes == stat.memory_total_bytes > 2**30
        assert 0 <= stat.memory_used_bytes <= stat.memory_total_bytes
        assert 0 <= stat.utilization <= 100
        assert 0 <= stat.power < 2000


def test_simulated_gpus_parse_count_and_memory() -> None:
    reader = SimulatedGpuReader.parse("4x80", seed="host-a")

    devices = reader.devices()
    assert reader.simulated
    assert [d.index for d in devices] == [0, 1, 2, 3]
    assert {d.memory_total_bytes for d in devices} == {80 * 1024**3}
    assert len({d.uuid for d in devices}) == 4
    stats = reader.stats()
    assert [(s.index, s.memory_used_bytes, s.memory_total_bytes) for s in stats] == [
        (i, 0, 80 * 1024**3) for i in range(4)
    ]


def test_simulated_gpus_accept_spacing_case_and_fractional_gib() -> None:
    reader = SimulatedGpuReader.parse(" 2X24.5 ")
    assert [d.memory_total_bytes for d in reader.devices()] == [int(24.5 * 1024**3)] * 2


def test_simulated_gpu_uuids_differ_between_agents_and_are_stable() -> None:
    def uuids(seed: str) -> list[str]:
        return [d.uuid for d in SimulatedGpuReader.parse("2x8", seed=seed).devices()]

    assert uuids("host-a") == uuids("host-a")
    assert not set(uuids("host-a")) & set(uuids("host-b"))


@pytest.mark.parametrize("spec", ["", "4", "x80", "4x", "4x80x2", "four x 80", "-1x8", "4:80"])
def test_simulated_gpus_reject_malformed_spec(spec: str) -> None:
    with pytest.raises(ConfigError, match="COUNTxGIB"):
        SimulatedGpuReader.parse(spec)


@pytest.mark.parametrize("spec", ["0x80", "4x0", "4x0.0"])
def test_simulated_gpus_reject_empty_fleet(spec: str) -> None:
    with pytest.raises(ConfigError, match="count >= 1 and GiB > 0"):
        SimulatedGpuReader.parse(spec)
