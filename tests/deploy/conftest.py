"""Fixtures for the install tooling: tools, the wheel, a wheelhouse and a real sshd.

* ``scripts/ensure-test-tools.sh`` installs openssh and systemd's offline tools
  when missing (a fresh CI machine has neither sshd nor a running systemd).
* ``wheel`` is built once per session with ``pip wheel --no-deps``.
* ``wheelhouse`` holds the wheel's dependencies, downloaded once and kept under
  ``.tmp/`` keyed by ``pyproject.toml``, so installs run ``--no-index``.
* ``sshd`` is OpenSSH's daemon on 127.0.0.1 and a free port with a throw-away host
  key and client key; nothing in /etc/ssh or ~/.ssh is read or written.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dockerutil import free_port
from tests.waiting import eventually_blocking

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE_CACHE = REPO / ".tmp" / "deploy-tests" / "wheelhouse"


def run(
    *args: str | Path,
    stdin: str = "",
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(
        [str(a) for a in args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=timeout,
    )


def must(
    *args: str | Path, stdin: str = "", timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = run(*args, stdin=stdin, timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session", autouse=True)
def test_tools() -> None:
    must("bash", REPO / "scripts" / "ensure-test-tools.sh")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    must(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, REPO)
    (built,) = out.glob("lmstack-*.whl")
    return built


@pytest.fixture(scope="session")
def wheelhouse(wheel: Path) -> Path:
    stamp = WHEELHOUSE_CACHE / ".pyproject-sha256"
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        WHEELHOUSE_CACHE.mkdir(parents=True, exist_ok=True)
        must(sys.executable, "-m", "pip", "download", "-q", "-d", WHEELHOUSE_CACHE, wheel)
        (WHEELHOUSE_CACHE / wheel.name).unlink()
        stamp.write_text(digest)
    return WHEELHOUSE_CACHE


def offline_pip_args(wheelhouse: Path) -> str:
    return f"--no-index --find-links {wheelhouse}"


@dataclass(frozen=True)
class Sshd:
    port: int
    client_key: Path
    known_hosts: Path

    @property
    def ssh_opts(self) -> str:
        return (
            f"-F /dev/null -o Port={self.port} -i {self.client_key} -o IdentitiesOnly=yes"
            f" -o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes"
            " -o ConnectTimeout=10 -o LogLevel=ERROR"
        )


def sshd_config(root: Path, port: int) -> str:
    return f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {root / "host_key"}
PidFile {root / "sshd.pid"}
AuthorizedKeysFile {root / "authorized_keys"}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
"""


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    def listening() -> bool:
        assert proc.poll() is None, "sshd exited at start"
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    message = f"sshd did not listen on 127.0.0.1:{port}"
    eventually_blocking(listening, timeout=timeout, interval=0.05, message=message)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory, test_tools: None) -> Iterator[Sshd]:
    root = tmp_path_factory.mktemp("sshd")
    must("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", root / "host_key")
    must("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", root / "client_key")
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port = free_port()
    host_key = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (root / "sshd_config").write_text(sshd_config(root, port))
    must("/usr/sbin/sshd", "-t", "-f", root / "sshd_config")
    log = (root / "sshd.log").open("wb")
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(root / "sshd_config")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    try:
        wait_for_port(port, proc)
        yield Sshd(port, root / "client_key", root / "known_hosts")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
