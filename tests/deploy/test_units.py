"""The systemd units pass ``systemd-analyze verify`` and keep their promises."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, run

UNITS = REPO / "deploy" / "systemd"


def verify(unit_text: str, tmp_path: Path, name: str) -> str:
    """``systemd-analyze verify`` output for the unit with ExecStart on a stub.

    verify insists that ExecStart exists; /opt/lmstack is not installed here, so
    the copy points at an executable stub and every other line is checked as is.
    """
    stub = tmp_path / "stub"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    lines = [
        f"ExecStart={stub}" if line.startswith("ExecStart=") else line
        for line in unit_text.splitlines()
    ]
    unit = tmp_path / name
    unit.write_text("\n".join(lines) + "\n")
    result = run("systemd-analyze", "verify", "--man=no", unit)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def service_section(name: str) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read(UNITS / name)
    return dict(parser["Service"])


@pytest.mark.parametrize("name", ["lmstack-agent.service", "lmstack-controller.service"])
def test_unit_verifies_cleanly(name: str, tmp_path: Path) -> None:
    assert verify((UNITS / name).read_text(), tmp_path, name) == ""


def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    text = (UNITS / "lmstack-agent.service").read_text()
    broken = text.replace("RestartSec=5s", "RestartSec=soon").replace("ProtectHome=", "ProtectHom=")

    output = verify(broken, tmp_path, "broken.service")

    assert broken != text
    assert "Failed to parse sec value" in output
    assert "Unknown key" in output


def test_agent_unit() -> None:
    service = service_section("lmstack-agent.service")

    assert service["ExecStart"] == "/opt/lmstack/bin/lmstack-agent"
    assert service["EnvironmentFile"] == "/etc/lmstack/agent.env"
    assert service["Restart"] == "on-failure"
    assert service["RestartSec"] == "5s"
    assert service["RestartPreventExitStatus"] == "2 3 4"
    assert service["User"] == "lmstack"
    assert service["SupplementaryGroups"] == "docker"
    assert "lmstack/agent" in service["StateDirectory"].split()
    assert service["ProtectSystem"] == "strict"
    # NVML opens /dev/nvidia*: no private /dev, no device allow-list.
    assert "PrivateDevices" not in service
    assert "DevicePolicy" not in service


def test_controller_unit() -> None:
    service = service_section("lmstack-controller.service")

    assert service["ExecStart"] == "/opt/lmstack/bin/lmstack-controller"
    assert service["EnvironmentFile"] == "/etc/lmstack/controller.env"
    assert service["Environment"] == "LMSTACK_DATA_DIR=/var/lib/lmstack/controller"
    assert service["Restart"] == "on-failure"
    assert service["User"] == "lmstack"
    assert "SupplementaryGroups" not in service
    assert service["PrivateDevices"] == "yes"
    assert "lmstack/controller" in service["StateDirectory"].split()
