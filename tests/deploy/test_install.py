"""``deploy/install.sh`` into a throw-away root: install, re-run, uninstall."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, offline_pip_args, run

INSTALL = REPO / "deploy" / "install.sh"
TOKEN = "join-token-abc_123"


def install(root: Path, *args: str | Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run("bash", INSTALL, "--root", root, *args, stdin=stdin)


def env_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def test_install_rerun_and_uninstall(root: Path, wheel: Path, wheelhouse: Path) -> None:
    pip_args = offline_pip_args(wheelhouse)
    first = install(
        root, "--wheel", wheel, "--pip-args", pip_args, "--controller", "10.0.0.1:50051",
        "--token-stdin", "--name", "gpu-01", "--set", "LMSTACK_ADVERTISE_ADDRESS=10.0.0.21",
        stdin=TOKEN + "\n",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert f"created virtualenv {root}/opt/lmstack" in first.stdout
    assert "skipped: starting lmstack-agent.service" in first.stdout

    agent = root / "opt/lmstack/bin/lmstack-agent"
    help_text = run(agent, "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "usage: lmstack-agent" in help_text.stdout
    assert run(root / "opt/lmstack/bin/lmstack", "--help").returncode == 0

    env_file = root / "etc/lmstack/agent.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_lines(env_file) == [
        "LMSTACK_CONTROLLER=10.0.0.1:50051",
        "LMSTACK_NAME=gpu-01",
        "LMSTACK_ADVERTISE_ADDRESS=10.0.0.21",
        f"LMSTACK_TOKEN={TOKEN}",
    ]
    unit = root / "etc/systemd/system/lmstack-agent.service"
    assert unit.read_text() == (REPO / "deploy/systemd/lmstack-agent.service").read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants/lmstack-agent.service"
    assert str(wants.readlink()) == "/etc/systemd/system/lmstack-agent.service"
    assert (root / "var/lib/lmstack").is_dir()

    # The admin adds a setting; a re-run with a new controller keeps it and the token.
    with env_file.open("a") as handle:
        handle.write("LMSTACK_LOG_LEVEL=DEBUG\n")
    again = install(root, "--wheel", wheel, "--pip-args", pip_args, "--controller", "ctl:50051")
    assert again.returncode == 0, again.stderr
    assert "created virtualenv" not in again.stdout
    assert "unchanged: unit" in again.stdout
    assert env_lines(env_file) == [
        "LMSTACK_NAME=gpu-01",
        "LMSTACK_ADVERTISE_ADDRESS=10.0.0.21",
        f"LMSTACK_TOKEN={TOKEN}",
        "LMSTACK_LOG_LEVEL=DEBUG",
        "LMSTACK_CONTROLLER=ctl:50051",
    ]
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    same = install(root, "--wheel", wheel, "--pip-args", pip_args, "--controller", "ctl:50051")
    assert same.returncode == 0, same.stderr
    assert f"unchanged: env file (mode 0600) {env_file}" in same.stdout

    # The controller shares the virtualenv; removing the agent leaves it in place.
    controller = install(root, "--role", "controller", "--wheel", wheel, "--pip-args", pip_args)
    assert controller.returncode == 0, controller.stderr
    assert run(root / "opt/lmstack/bin/lmstack-controller", "--help").returncode == 0
    assert (root / "etc/lmstack/controller.env").exists()

    removed = install(root, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    assert not wants.is_symlink()
    assert agent.exists()
    assert env_file.exists()
    assert "kept" in removed.stdout

    install(root, "--uninstall", "--role", "controller", "--purge")
    assert not (root / "opt/lmstack").exists()
    assert not (root / "etc/lmstack/controller.env").exists()
    assert not (root / "etc/systemd/system/lmstack-controller.service").exists()


def test_agent_needs_controller_and_token(root: Path, wheel: Path) -> None:
    result = install(root, "--wheel", wheel, "--controller", "ctl:50051")

    assert result.returncode == 1
    assert "the agent needs LMSTACK_TOKEN" in result.stderr
    assert not (root / "opt/lmstack").exists()


def test_values_systemd_would_reinterpret_are_refused(root: Path, wheel: Path) -> None:
    result = install(root, "--wheel", wheel, "--token", 'a"b', "--controller", "ctl:50051")

    assert result.returncode == 1
    assert "LMSTACK_TOKEN" in result.stderr
    assert not (root / "etc/lmstack").exists()


def test_unknown_argument_is_a_usage_error(root: Path) -> None:
    result = install(root, "--frobnicate")

    assert result.returncode == 2
    assert "unknown argument --frobnicate" in result.stderr
    assert "--uninstall" in result.stderr


def test_uninstall_of_nothing_is_fine(root: Path) -> None:
    result = install(root, "--uninstall")

    assert result.returncode == 0, result.stderr
    assert "not installed" in result.stdout
