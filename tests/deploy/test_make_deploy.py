"""``make deploy`` over a real sshd on loopback, into a throw-away root.

127.0.0.1 is the good host; 127.0.0.2 is loopback too, but sshd listens only on
127.0.0.1, so that host fails like an unreachable GPU host. systemd is not
running here: install.sh enables the unit offline and skips only the start.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from tests.deploy.conftest import REPO, Sshd, offline_pip_args, run

TOKEN = "deploy-join-token"


def make_deploy(hosts: str, sshd: Sshd, install_args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LMSTACK_", "MAKE"))}
    env["SSH_OPTS"] = sshd.ssh_opts
    result = run(
        "make", "--no-print-directory", "-C", REPO, "deploy", f"HOSTS={hosts}",
        "CONTROLLER=10.1.2.3:50051", f"TOKEN={TOKEN}", f"INSTALL_ARGS={install_args}",
        env=env,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def test_make_deploy_installs_and_reports_per_host(
    sshd: Sshd, wheelhouse: Path, tmp_path: Path
) -> None:
    root = tmp_path / "gpu-root"
    install_args = f"--root {root} --pip-args '{offline_pip_args(wheelhouse)}'"

    code, output = make_deploy("root@127.0.0.1", sshd, install_args)

    assert code == 0, output
    assert "deploy: built lmstack-" in output
    assert "root@127.0.0.1: OK" in output
    assert "[root@127.0.0.1] lmstack-install: enabled lmstack-agent.service" in output
    assert "skipped: starting lmstack-agent.service" in output
    assert TOKEN not in output
    agent = run(root / "opt/lmstack/bin/lmstack-agent", "--help")
    assert agent.returncode == 0, agent.stderr
    env_file = root / "etc/lmstack/agent.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    settings = [line for line in env_file.read_text().splitlines() if not line.startswith("#")]
    assert settings == [
        "LMSTACK_CONTROLLER=10.1.2.3:50051",
        "LMSTACK_NAME=127.0.0.1",
        f"LMSTACK_TOKEN={TOKEN}",
    ]
    assert (root / "etc/systemd/system/multi-user.target.wants/lmstack-agent.service").is_symlink()
    (copied,) = re.findall(r"copying the wheel and install.sh to (\S+)", output)
    assert not Path(copied).exists(), "the temporary directory was left on the host"

    code, output = make_deploy("root@127.0.0.1 root@127.0.0.2", sshd, install_args)

    assert code != 0, output
    assert "root@127.0.0.1: OK" in output
    assert "root@127.0.0.2: FAILED" in output
    assert "unchanged: env file" in output
    assert output.index("summary:") > output.index("root@127.0.0.2: installing")
