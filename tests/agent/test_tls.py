"""The agent's channel over TLS, with and without a client certificate."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from agent.session import AgentSession
from shared.errors import ConfigError
from shared.settings import AgentSettings
from tests.agent.controller_stub import (
    TOKEN,
    ControllerServer,
    FakeGpuReader,
    StubController,
    wait_until,
)
from tests.runtime.memory_runtime import MemoryRuntime

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(name: str, subject: str, extension: str, pki: Path) -> None:
    """A P-256 key and a certificate for it, signed by the test CA."""
    (pki / f"{name}.ext").write_text(extension)
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=pki,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        cwd=pki,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=lmstack-test-ca",
        cwd=directory,
    )  # fmt: skip
    _issue("server", "/CN=controller", "subjectAltName=IP:127.0.0.1\n", directory)
    _issue("agent", "/CN=gpu-host-1", "extendedKeyUsage=clientAuth\n", directory)
    return directory


async def test_agent_joins_over_mutual_tls(
    pki: Path, stub: StubController, state_dir: Path, runtime: MemoryRuntime, gpus: FakeGpuReader
) -> None:
    credentials = grpc.ssl_server_credentials(
        [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    server = ControllerServer(stub)
    await server.start(credentials)
    settings = AgentSettings(
        controller=server.address,
        token=TOKEN,
        state_dir=state_dir,
        tls=True,
        tls_ca=pki / "ca.pem",
        tls_cert=pki / "agent.pem",
        tls_key=pki / "agent.key",
    )
    task = asyncio.create_task(AgentSession(settings, runtime, gpus).run())
    try:
        await wait_until(lambda: stub.connected)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.stop()
    assert stub.hellos[0].name == settings.name


def test_client_certificate_without_key_is_a_config_error(
    pki: Path, state_dir: Path, runtime: MemoryRuntime, gpus: FakeGpuReader
) -> None:
    settings = AgentSettings(token=TOKEN, state_dir=state_dir, tls=True, tls_cert=pki / "agent.pem")
    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        AgentSession(settings, runtime, gpus)


def test_unreadable_ca_is_a_config_error(
    tmp_path: Path, state_dir: Path, runtime: MemoryRuntime, gpus: FakeGpuReader
) -> None:
    settings = AgentSettings(token=TOKEN, state_dir=state_dir, tls=True, tls_ca=tmp_path / "nope")
    with pytest.raises(ConfigError, match="cannot read TLS file"):
        AgentSession(settings, runtime, gpus)
