"""The controller's agent port over TLS, as configured by its settings, with
the real agent session on the other end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.agent.test_tls import pki  # noqa: F401 (fixture)
from tests.conftest import Controller
from tests.fleetutil import run_agent, worker_view
from tests.runtime.memory_runtime import MemoryRuntime


@pytest.mark.parametrize("client_ca", [False, True])
async def test_agents_join_over_tls(pki: Path, tmp_path: Path, client_ca: bool) -> None:  # noqa: F811
    overrides = {
        "grpc_tls_cert": pki / "server.pem",
        "grpc_tls_key": pki / "server.key",
        "grpc_tls_client_ca": pki / "ca.pem" if client_ca else None,
    }
    ctl = Controller(data_dir=tmp_path / "data", overrides=overrides)
    await ctl.start()
    try:
        tls: dict[str, Any] = {"tls": True, "tls_ca": pki / "ca.pem"}
        if client_ca:
            tls |= {"tls_cert": pki / "agent.pem", "tls_key": pki / "agent.key"}
        async with run_agent(ctl, MemoryRuntime(), tmp_path / "agent", **tls) as agent:
            assert (await worker_view(ctl, agent.worker_id))["status"] == "online"
    finally:
        await ctl.close()
